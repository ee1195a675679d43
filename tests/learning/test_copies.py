"""The copy rule (fedoracle.learning.copies): Sybil copies caught, honest devices never."""

from __future__ import annotations

import numpy as np
import pytest

from fedoracle.errors import Reason
from fedoracle.learning.copies import NEAR_COPY_COSINE, Copy, find_copies, max_pairwise_cosine


def _update(rng, shapes=((3, 4), (7,))):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_exact_and_nudged_copies_of_a_sybil_are_paid_as_one():
    """One party submits its model from four identities.

    The same bytes, one weight nudged, and a copy with 1% noise: only the first is an original.
    """
    rng = np.random.default_rng(1)
    mine = _update(rng)
    nudged = [t.copy() for t in mine]
    nudged[1][3] += 1e-3
    noisy = [t + 0.01 * np.linalg.norm(t) / np.sqrt(t.size) * rng.standard_normal(t.shape) for t in mine]
    other = _update(rng)
    out = find_copies(["0xa", "0xb", "0xa", "0xc", "0xd"], [mine, other, mine, nudged, noisy])
    assert out[0] is None and out[1] is None
    assert out[2] == Copy(Reason.DUPLICATE, 0, 1.0)
    assert out[3] is not None and (out[3].reason, out[3].of) == (Reason.NEAR_DUPLICATE, 0)
    assert out[4] is not None and (out[4].reason, out[4].of) == (Reason.NEAR_DUPLICATE, 0)
    assert out[3].cosine >= NEAR_COPY_COSINE


def test_the_first_in_chain_order_is_the_original_and_failed_ones_are_skipped():
    rng = np.random.default_rng(2)
    a = _update(rng)
    zero = [np.zeros_like(t) for t in a]
    out = find_copies([None, "0x1", "0x2", "0x3", "0x4"], [None, a, [t * 2 for t in a], zero, [z.copy() for z in zero]])
    assert out[0] is None and out[1] is None  # a submission that did not open is judged on that
    assert out[2] is not None and out[2].of == 1  # a scaled copy points the same way
    assert out[3] is None and out[4] is None  # zero updates have no direction: judged on accuracy


def test_a_copy_needs_about_fourteen_percent_noise_to_pass():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(50_000)
    for ratio, caught in [(0.10, True), (0.20, False)]:
        copy = base + ratio * np.linalg.norm(base) / np.sqrt(base.size) * rng.standard_normal(base.size)
        assert (find_copies(["0x1", "0x2"], [[base], [copy]])[1] is not None) is caught


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        find_copies(["0x1"], [])


@pytest.mark.parametrize("dp", ["nondp", "sample", "record"])
def test_honest_devices_with_independent_data_are_never_near_copies(mnist, spec, initial, dp):
    """Honest devices with disjoint IID shards stay far below the bound, in every privacy mode.

    Four devices train round 1 from the same global model (where honest updates are most alike);
    their largest pairwise cosine is measured, with and without noise.
    """
    from fedoracle.learning.rounds import DPParams, device_update

    rng = np.random.default_rng(4)
    idx = rng.permutation(len(mnist.y_train))[: 4 * 300].reshape(4, 300)
    scaling = None if dp == "nondp" else dp
    params = None if scaling is None else DPParams(8.0, 1e-5, 1.0 if dp == "record" else 5.0, scaling, 3)
    updates = [
        device_update(
            spec,
            initial,
            mnist.x_train[i],
            mnist.y_train[i],
            epochs=1,
            batch_size=64,
            learning_rate=0.1 if dp == "record" else 2e-3,
            optimizer="sgd" if dp == "record" else "adam",
            seed=k,
            dp=params,
        )
        for k, i in enumerate(idx)
    ]
    worst = max_pairwise_cosine(updates)
    assert worst < NEAR_COPY_COSINE - 0.1, f"honest updates as alike as cosine {worst:.4f}"
    assert all(c is None for c in find_copies([f"0x{k}" for k in range(4)], updates))


def _one_pass_reference(hashes, updates, bound=NEAR_COPY_COSINE):
    """The rule as first written: each submission against the earlier originals, one pass each."""
    out, first, seen = [None] * len(updates), {}, []
    for i, (digest, update) in enumerate(zip(hashes, updates, strict=True)):
        if digest is None:
            continue
        if digest in first:
            out[i] = Copy(Reason.DUPLICATE, first[digest], 1.0)
            continue
        first[digest] = i
        v = np.concatenate([np.asarray(t, np.float64).ravel() for t in update])
        norm = np.linalg.norm(v)
        if norm == 0 or not np.isfinite(norm):
            continue
        u = v / norm
        best = max(((float(w @ u), j) for j, w in seen), default=None, key=lambda t: t[0])
        if best is not None and best[0] >= bound:
            out[i] = Copy(Reason.NEAR_DUPLICATE, best[1], best[0])
            continue
        seen.append((i, u))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_all_cosines_at_once_give_the_one_pass_rule(seed):
    """The rule from one matrix of cosines equals the rule applied one submission at a time.

    A mix of originals, exact copies, near-copies (of originals and of near-copies), zero and
    non-finite updates and submissions that did not open, in a random chain order.
    """
    rng = np.random.default_rng(seed)
    shapes = [(5, 4), (7,)]
    originals = [[rng.normal(size=s) for s in shapes] for _ in range(6)]
    hashes, updates = [], []
    for _ in range(40):
        kind = rng.choice(["original", "copy", "near", "zero", "nan", "failed"], p=[0.3, 0.15, 0.3, 0.1, 0.05, 0.1])
        base = originals[rng.integers(len(originals))]
        if kind == "original":
            u = [rng.normal(size=s) for s in shapes]
        elif kind == "copy":
            u = base
        elif kind == "near":
            u = [
                t + rng.normal(size=t.shape) * rng.choice([0.01, 0.1, 0.3]) * np.linalg.norm(t) / np.sqrt(t.size)
                for t in base
            ]
        elif kind == "zero":
            u = [np.zeros(s) for s in shapes]
        elif kind == "nan":
            u = [np.full(s, np.nan) for s in shapes]
        else:
            hashes.append(None)
            updates.append(None)
            continue
        u = [np.asarray(t, np.float32) for t in u]
        hashes.append(f"h{hash(tuple(float(x) for t in u for x in t.ravel()))}")
        updates.append(u)
    got, want = find_copies(hashes, updates), _one_pass_reference(hashes, updates)
    assert [c and (c.reason, c.of) for c in got] == [c and (c.reason, c.of) for c in want]
    for c, w in zip(got, want, strict=True):
        assert (c is None) or abs(c.cosine - w.cosine) < 1e-12
    assert any(c is not None and c.reason == Reason.NEAR_DUPLICATE for c in got)
