"""Model codec properties: round-trip for random specs, hash sensitivity, and rejection reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save

from fedoracle.codec import FORMAT, ModelSpec, decode, encode, header_metadata
from fedoracle.errors import ModelRejected, Reason
from fedoracle.hashing import content_hash

_DTYPES = ["float32", "float16", "float64", "int32", "int64"]


@st.composite
def weights_and_spec(draw: st.DrawFn, dtypes: list[str] = _DTYPES) -> tuple[list[np.ndarray], ModelSpec]:
    """Random finite tensors (1 to 5, rank 1 to 3) and the spec they satisfy.

    Rank 0 is left out: ``codec.encode`` passes tensors through ``np.ascontiguousarray``, which
    turns a scalar into shape ``(1,)``, so it refuses scalar tensors (model weights never are).
    """
    count = draw(st.integers(1, 5))
    weights = []
    for _ in range(count):
        dtype = np.dtype(draw(st.sampled_from(dtypes)))
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
        elements = (
            st.floats(-1e3, 1e3, width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)
            if dtype.kind == "f"
            else st.integers(-(2**31), 2**31 - 1)
        )
        weights.append(draw(hnp.arrays(dtype, shape, elements=elements)))
    spec = ModelSpec.from_weights(
        draw(st.sampled_from(["small_cnn", "alexnet", "other"])),
        draw(st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 3))),
        draw(st.integers(2, 100)),
        weights,
    )
    return weights, spec


@given(weights_and_spec())
def test_round_trip_for_random_specs(case: tuple[list[np.ndarray], ModelSpec]) -> None:
    """Decoding the encoding gives back the same tensors bit for bit, and the same bytes re-encode."""
    weights, spec = case
    data = encode(weights, spec)
    decoded = decode(data, spec, expected_hash=content_hash(data))
    assert [d.dtype for d in decoded] == [w.dtype for w in weights]
    assert [d.tobytes() for d in decoded] == [w.tobytes() for w in weights]


def test_encoding_is_deterministic() -> None:
    """Encoding the same weights again gives the same bytes (needed for a stable content hash)."""
    weights = [np.arange(12, dtype=np.float32).reshape(3, 4)]
    spec = ModelSpec.from_weights("small_cnn", (28, 28, 1), 10, weights)
    assert len({encode(weights, spec) for _ in range(64)}) == 1


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(weights_and_spec(dtypes=["float32", "float64"]), st.data())
def test_hash_changes_with_any_single_weight(case: tuple[list[np.ndarray], ModelSpec], data: st.DataObject) -> None:
    """Changing one scalar anywhere to its next representable value changes the content hash."""
    weights, spec = case
    tensor = data.draw(st.integers(0, len(weights) - 1))
    index = data.draw(st.integers(0, weights[tensor].size - 1))
    changed = [w.copy() for w in weights]
    flat = changed[tensor].reshape(-1)
    flat[index] = np.nextafter(flat[index], np.inf, dtype=flat.dtype)
    assert content_hash(encode(changed, spec)) != content_hash(encode(weights, spec))


def _spec() -> tuple[list[np.ndarray], ModelSpec]:
    weights = [np.ones((3, 4), np.float32), np.zeros(4, np.float32)]
    return weights, ModelSpec.from_weights("small_cnn", (28, 28, 1), 10, weights)


def _forged(tensors: dict[str, np.ndarray], spec: ModelSpec) -> bytes:
    """A well-formed blob that claims ``spec`` whatever its tensors are."""
    return save(tensors, metadata=header_metadata(FORMAT, spec.spec_hash))


@pytest.mark.parametrize(
    ("make_blob", "reason"),
    [
        pytest.param(lambda w, s: encode([np.full((3, 4), np.nan, np.float32), w[1]], s), Reason.NON_FINITE, id="nan"),
        pytest.param(
            lambda w, s: encode([w[0], np.array([1, np.inf, 0, 0], np.float32)], s), Reason.NON_FINITE, id="inf"
        ),
        pytest.param(
            lambda w, s: _forged({"w0000": np.ones((4, 3), np.float32), "w0001": w[1]}, s),
            Reason.WRONG_SPEC,
            id="shape",
        ),
        pytest.param(
            lambda w, s: _forged({"w0000": w[0].astype(np.float64), "w0001": w[1]}, s), Reason.WRONG_SPEC, id="dtype"
        ),
        pytest.param(lambda w, s: _forged({"w0000": w[0]}, s), Reason.WRONG_SPEC, id="missing-tensor"),
        pytest.param(
            lambda w, s: encode(w, ModelSpec.from_weights("alexnet", (28, 28, 1), 10, w)),
            Reason.WRONG_SPEC,
            id="other-spec",
        ),
        pytest.param(lambda w, s: b"\x00" * 64, Reason.UNDECODABLE, id="zeros"),
        pytest.param(lambda w, s: b"garbage, not safetensors at all", Reason.UNDECODABLE, id="garbage"),
        pytest.param(lambda w, s: encode(w, s)[:-5], Reason.UNDECODABLE, id="truncated"),
        pytest.param(
            lambda w, s: save({"w0000": w[0], "w0001": w[1]}, metadata=header_metadata("pickle", s.spec_hash)),
            Reason.UNDECODABLE,
            id="format",
        ),
    ],
)
def test_decode_rejects_with_the_right_reason(make_blob, reason: Reason) -> None:
    """Each kind of bad blob is refused with its on-chain reason code."""
    weights, spec = _spec()
    with pytest.raises(ModelRejected) as caught:
        decode(make_blob(weights, spec), spec)
    assert caught.value.reason == reason


def test_decode_rejects_oversized_before_parsing() -> None:
    """A blob over the spec's size limit is refused as TOO_LARGE, whatever it holds."""
    weights, spec = _spec()
    small = ModelSpec(**{**spec.model_dump(), "max_bytes": 100})
    with pytest.raises(ModelRejected) as caught:
        decode(b"x" * 101, small)
    assert caught.value.reason == Reason.TOO_LARGE
    with pytest.raises(ModelRejected) as caught:
        encode(weights, small)
    assert caught.value.reason == Reason.TOO_LARGE


def test_decode_rejects_hash_mismatch() -> None:
    """Bytes that do not hash to the expected content hash are refused as HASH_MISMATCH."""
    weights, spec = _spec()
    data = encode(weights, spec)
    with pytest.raises(ModelRejected) as caught:
        decode(data, spec, expected_hash=content_hash(data + b"!"))
    assert caught.value.reason == Reason.HASH_MISMATCH


def test_header_is_canonical() -> None:
    """The header names tensors positionally and carries the spec hash."""
    weights, spec = _spec()
    data = encode(weights, spec)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"] == header_metadata(FORMAT, spec.spec_hash)
    assert json.loads(header["__metadata__"]["fedoracle"]) == {"format": FORMAT, "spec": spec.spec_hash}
    assert sorted(k for k in header if k != "__metadata__") == ["w0000", "w0001"]
