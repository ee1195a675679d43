"""Model codec: canonical bytes for a list of weight tensors, their content hash, and validation.

The encoding is safetensors (pickle-free; identical bytes for identical tensors whatever the
insertion order). Tensors are stored under zero-padded positional names (``w0000``, ``w0001``,
...) so that the order of ``model.get_weights()`` is part of the bytes. The header metadata
carries the hash of the model spec the weights claim to follow.

Decoding never trusts its input: it checks the size limit first, parses with safetensors (which
rejects malformed bytes without executing anything), then checks the spec hash, the tensor
count, every shape and dtype, and that every value is finite. Each failure raises
:class:`~fedoracle.errors.ModelRejected` with the on-chain reason code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from fedoracle.errors import ModelRejected, Reason
from fedoracle.hashing import content_hash

FORMAT = "fedoracle/safetensors/v1"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_DTYPES = {"float32", "float16", "float64", "int32", "int64"}


class TensorSpec(BaseModel):
    """Shape and dtype of one weight tensor."""

    model_config = ConfigDict(frozen=True)

    shape: tuple[int, ...]
    dtype: str = "float32"


class ModelSpec(BaseModel):
    """What a task's model is: architecture id, input and output, and the exact tensor layout.

    Its keccak256 (:attr:`spec_hash`) is committed on-chain at publish time, so the oracle, the
    devices and anyone re-checking a verdict decode the same thing.
    """

    model_config = ConfigDict(frozen=True)

    architecture: str = Field(description="model builder id, e.g. 'small_cnn' or 'alexnet'")
    input_shape: tuple[int, ...]
    num_classes: int
    tensors: tuple[TensorSpec, ...]
    max_bytes: int = DEFAULT_MAX_BYTES

    def canonical_json(self) -> bytes:
        """Deterministic JSON (sorted keys, no spaces) that the spec hash is taken over."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def spec_hash(self) -> str:
        """keccak256 of :meth:`canonical_json` (``modelSpecHash`` on-chain)."""
        return content_hash(self.canonical_json())

    @property
    def num_parameters(self) -> int:
        """Number of scalar weights."""
        return int(sum(np.prod(t.shape, dtype=np.int64) for t in self.tensors))

    @classmethod
    def from_weights(
        cls,
        architecture: str,
        input_shape: Sequence[int],
        num_classes: int,
        weights: Sequence[NDArray[Any]],
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> ModelSpec:
        """Builds the spec that ``weights`` satisfy."""
        tensors = tuple(TensorSpec(shape=tuple(int(d) for d in w.shape), dtype=str(w.dtype)) for w in weights)
        return cls(
            architecture=architecture,
            input_shape=tuple(int(d) for d in input_shape),
            num_classes=int(num_classes),
            tensors=tensors,
            max_bytes=max_bytes,
        )


def spec_from_blob(data: bytes, expected_hash: str) -> ModelSpec:
    """Parses a spec fetched by its hash, checking the bytes are its canonical JSON.

    Raises:
        ModelRejected: WRONG_SPEC when the bytes are not the canonical form of a spec with that hash.
    """
    try:
        spec = ModelSpec.model_validate_json(data)
    except ValueError as exc:
        raise ModelRejected(Reason.WRONG_SPEC, f"not a model spec: {exc}") from exc
    if spec.spec_hash != expected_hash.lower() or spec.canonical_json() != bytes(data):
        raise ModelRejected(Reason.WRONG_SPEC, f"spec blob is not the canonical spec {expected_hash}")
    return spec


def _name(i: int) -> str:
    return f"w{i:04d}"


def header_metadata(fmt: str, spec_hash: str) -> dict[str, str]:
    """The safetensors metadata of a model blob: ONE key holding canonical JSON.

    safetensors writes its metadata map in no fixed order, so two keys would make the bytes (and
    the content hash) of identical weights vary from call to call.
    """
    return {"fedoracle": json.dumps({"format": fmt, "spec": spec_hash}, sort_keys=True, separators=(",", ":"))}


def encode(weights: Sequence[NDArray[Any]], spec: ModelSpec) -> bytes:
    """Encodes ``weights`` (in model order) as canonical bytes that claim to follow ``spec``.

    Raises:
        ModelRejected: when the weights do not match the spec (the encoder refuses to produce
            bytes that the decoder would reject).
    """
    from safetensors.numpy import save

    arrays = [np.require(w, requirements="C") for w in weights]  # keeps rank-0 tensors rank 0
    _check_tensors(arrays, spec)
    data = save({_name(i): a for i, a in enumerate(arrays)}, metadata=header_metadata(FORMAT, spec.spec_hash))
    if len(data) > spec.max_bytes:
        raise ModelRejected(Reason.TOO_LARGE, f"{len(data)} bytes > limit {spec.max_bytes}")
    return data


def encode_with_hash(weights: Sequence[NDArray[Any]], spec: ModelSpec) -> tuple[bytes, str]:
    """:func:`encode` plus the content hash of the bytes."""
    data = encode(weights, spec)
    return data, content_hash(data)


def decode(data: bytes, spec: ModelSpec, *, expected_hash: str | None = None) -> list[NDArray[Any]]:
    """Decodes and validates model bytes against ``spec``.

    Args:
        data: the blob, untrusted.
        spec: the task's model spec.
        expected_hash: when given, the content hash the bytes must have.

    Returns:
        The weight tensors in model order.

    Raises:
        ModelRejected: with reason TOO_LARGE, HASH_MISMATCH, UNDECODABLE, WRONG_SPEC or
            NON_FINITE.
    """
    if len(data) > spec.max_bytes:
        raise ModelRejected(Reason.TOO_LARGE, f"{len(data)} bytes > limit {spec.max_bytes}")
    if expected_hash is not None:
        actual = content_hash(data)
        if actual != expected_hash.lower():
            raise ModelRejected(Reason.HASH_MISMATCH, f"expected {expected_hash}, bytes hash to {actual}")
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(bytes(data))
        metadata = _metadata(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelRejected(Reason.UNDECODABLE, f"not a safetensors blob: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise ModelRejected(Reason.UNDECODABLE, f"format {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("spec") != spec.spec_hash:
        raise ModelRejected(Reason.WRONG_SPEC, f"blob claims spec {metadata.get('spec')}, task has {spec.spec_hash}")
    names = [_name(i) for i in range(len(tensors))]
    if sorted(tensors) != names:
        raise ModelRejected(
            Reason.WRONG_SPEC, f"tensor names {sorted(tensors)[:4]}... are not w0000..w{len(tensors) - 1:04d}"
        )
    arrays = [tensors[n] for n in names]
    _check_tensors(arrays, spec)
    for i, a in enumerate(arrays):
        if not np.all(np.isfinite(a)):
            raise ModelRejected(Reason.NON_FINITE, f"tensor {i} holds NaN or infinite values")
    return arrays


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    inner = json.loads(meta.get("fedoracle", "{}"))
    if not isinstance(inner, dict):
        raise ValueError("fedoracle metadata is not an object")
    return inner


def _check_tensors(arrays: Sequence[NDArray[Any]], spec: ModelSpec) -> None:
    if len(arrays) != len(spec.tensors):
        raise ModelRejected(Reason.WRONG_SPEC, f"{len(arrays)} tensors, spec has {len(spec.tensors)}")
    for i, (a, t) in enumerate(zip(arrays, spec.tensors, strict=True)):
        if tuple(a.shape) != tuple(t.shape):
            raise ModelRejected(Reason.WRONG_SPEC, f"tensor {i} has shape {tuple(a.shape)}, spec says {t.shape}")
        if str(a.dtype) != t.dtype:
            raise ModelRejected(Reason.WRONG_SPEC, f"tensor {i} has dtype {a.dtype}, spec says {t.dtype}")
