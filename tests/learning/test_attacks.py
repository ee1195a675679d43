"""The poisoning attacks: each keeps its constraint and moves its target's aggregate more than benign updates do."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.learning import attacks
from fedoracle.learning.copies import find_copies
from fedoracle.learning.robust import AggregationRule, robust_aggregate

SHAPES = [(6, 5), (8,)]
N_BENIGN, N_ATTACK = 16, 4


def _benign(seed: int, n: int = N_BENIGN) -> list[list[np.ndarray]]:
    """Benign updates: a shared direction plus larger per-device noise (as DP-noised honest updates are)."""
    rng = np.random.default_rng(seed)
    mean = [rng.normal(size=s) for s in SHAPES]
    return [[(m + rng.normal(size=m.shape) * 2.0).astype(np.float32) for m in mean] for _ in range(n)]


def _deviation(update: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return float(np.linalg.norm(attacks.flatten(update) - attacks.flatten(reference)))


TARGETS = [
    ("fang_krum", AggregationRule("multi_krum", N_ATTACK, 1)),  # Krum: m = 1
    ("fang_krum", AggregationRule("multi_krum", N_ATTACK)),
    ("fang_trmean", AggregationRule("trimmed_mean", 2000)),
    ("fang_trmean", AggregationRule("median")),
    ("min_max", AggregationRule("median")),
    ("min_max", AggregationRule("trimmed_mean", 2000)),
    ("min_max", AggregationRule("multi_krum", N_ATTACK)),
    ("min_sum", AggregationRule("median")),
    ("min_sum", AggregationRule("multi_krum", N_ATTACK)),
    ("min_sum", AggregationRule()),
]


@pytest.mark.parametrize(("attack", "rule"), TARGETS, ids=[f"{a}-{r}" for a, r in TARGETS])
@pytest.mark.parametrize("seed", [0, 1])
def test_attack_moves_the_aggregate_against_the_benign_direction_more_than_benign_updates(attack, rule, seed) -> None:
    """Aggregated with the benign updates, the crafted ones move the result away from the benign aggregate.

    Baseline: as many extra benign updates (same distribution). The attacked aggregate lies at
    least 1.25 times as far from the benign-only aggregate as the baseline does; the attacks that aim
    against the benign direction (Fang et al.'s) also lower the aggregate's component along it.
    """
    everyone = _benign(seed, N_BENIGN + N_ATTACK)
    benign, extra = everyone[:N_BENIGN], everyone[N_BENIGN:]
    rng = np.random.default_rng(seed)
    crafted = attacks.craft(attack, benign, N_ATTACK, rule, rng)
    assert len(crafted) == N_ATTACK and all(c[0].shape == SHAPES[0] and c[0].dtype == np.float32 for c in crafted)
    clean = robust_aggregate(rule, benign).update
    attacked = robust_aggregate(rule, benign + crafted).update
    baseline = robust_aggregate(rule, benign + extra).update
    assert _deviation(attacked, clean) > 1.25 * _deviation(baseline, clean)
    if attack.startswith("fang"):
        mu = np.mean([attacks.flatten(u) for u in benign], axis=0)
        assert attacks.flatten(attacked) @ mu < attacks.flatten(baseline) @ mu


@pytest.mark.parametrize("attack", attacks.CRAFTED)
def test_crafted_updates_pass_the_copy_rule(attack) -> None:
    """Submitted after the benign ones, no crafted update is a copy or near-copy (cosine < 0.99) of another."""
    benign = _benign(3)
    crafted = attacks.craft(attack, benign, N_ATTACK, AggregationRule("median"), np.random.default_rng(3))
    everything = benign + crafted
    copies = find_copies([str(i) for i in range(len(everything))], everything)
    assert copies == [None] * len(everything)


@pytest.mark.parametrize("objective", ["min_max", "min_sum"])
@pytest.mark.parametrize("kind", attacks.PERTURBATIONS)
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_min_max_and_min_sum_keep_their_constraint(objective, kind, seed) -> None:
    """Every copy stays within the benign updates' own spread, and γ is as large as bisection finds (> 0)."""
    rows = np.stack([attacks.flatten(u) for u in _benign(seed % 1000)])
    out = attacks.min_max_sum(rows, N_ATTACK, np.random.default_rng(seed), objective=objective, kind=kind)
    sq = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    for v in out:
        d2 = ((rows - v) ** 2).sum(axis=1)
        if objective == "min_max":
            assert np.sqrt(d2.max()) <= np.sqrt(sq.max()) * (1 + 1e-9)
        else:
            assert d2.sum() <= sq.sum(axis=1).max() * (1 + 1e-9)
    mu = rows.mean(axis=0)
    assert np.linalg.norm(out.mean(axis=0) - mu) > 0.1 * np.linalg.norm(mu)  # it moved


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 5))
def test_fang_krum_is_selected_by_krum(seed, c) -> None:
    """Krum (assuming c attackers) picks a crafted update among benign + crafted, and it points against s."""
    rows = np.stack([attacks.flatten(u) for u in _benign(seed % 1000)])
    out = attacks.fang_krum(rows, c, c, np.random.default_rng(seed))
    scores = attacks.krum_scores(np.vstack([rows, out]), c)
    assert int(np.argmin(scores)) >= len(rows)
    s = np.sign(rows.mean(axis=0))
    assert float(out[0] @ s) < 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fang_trmean_lies_beyond_the_benign_extremes(seed) -> None:
    """Each crafted coordinate lies past the benign maximum where the mean is negative, the minimum where positive."""
    rows = np.stack([attacks.flatten(u) for u in _benign(seed % 1000)])
    out = attacks.fang_trmean(rows, N_ATTACK, np.random.default_rng(seed))
    s = np.sign(rows.mean(axis=0))
    up, down = s < 0, s >= 0
    w_max, w_min, b = rows.max(axis=0), rows.min(axis=0), attacks.FANG_B
    far_up = np.where(w_max > 0, b * w_max, w_max / b)
    far_down = np.where(w_min > 0, w_min / b, b * w_min)
    eps = 1e-12
    assert np.all(out[:, up] >= np.minimum(w_max, far_up)[up] - eps)
    assert np.all(out[:, up] <= np.maximum(w_max, far_up)[up] + eps)
    assert np.all(out[:, down] >= np.minimum(w_min, far_down)[down] - eps)
    assert np.all(out[:, down] <= np.maximum(w_min, far_down)[down] + eps)
    # where the extreme's sign allows it, the value is beyond the benign range
    assert np.all(out[:, up & (rows.max(axis=0) > 0)] >= rows.max(axis=0)[up & (rows.max(axis=0) > 0)])
    assert np.all(out[:, down & (rows.min(axis=0) < 0)] <= rows.min(axis=0)[down & (rows.min(axis=0) < 0)])


def test_fit_gates_pulls_back_just_enough() -> None:
    """An update that passes stays; one that does not is moved towards μ to the bisection's boundary."""
    benign = _benign(5)
    mu = attacks.benign_mean(benign)
    far = [np.asarray(t * -10, np.float32) for t in mu]
    mu_flat = attacks.flatten(mu)
    limit = 2.0 * np.linalg.norm(mu_flat)

    def passes(updates):
        return [np.linalg.norm(attacks.flatten(u) - mu_flat) <= limit for u in updates]

    near, pulled = attacks.fit_gates([mu, far], mu, passes, steps=20)
    assert all(np.array_equal(a, b) for a, b in zip(near, mu, strict=True))
    dist = np.linalg.norm(attacks.flatten(pulled) - mu_flat)
    assert limit * 0.999 <= dist <= limit * 1.0001


def test_layout_round_trip_and_bad_inputs() -> None:
    """Flatten / unflatten round-trip; unknown attacks and empty knowledge are refused."""
    benign = _benign(6)
    back = attacks.unflatten(attacks.flatten(benign[0]), benign[0])
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(back, benign[0], strict=True))
    with pytest.raises(ValueError, match="does not fill"):
        attacks.unflatten(np.zeros(3), benign[0])
    with pytest.raises(ValueError, match="not a crafted attack"):
        attacks.craft("label_flip", benign, 2, AggregationRule(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one benign"):
        attacks.craft("min_max", [], 2, AggregationRule(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="perturbation"):
        attacks.perturbation(np.zeros((2, 3)), "sign")
    assert attacks.craft("min_sum", benign, 0, AggregationRule(), np.random.default_rng(0)) == []


def test_decorrelate_brings_copies_under_the_copy_rule() -> None:
    """Identical crafted updates (e.g. pulled to the benign mean by the gates) end below cosine 0.99 of each other."""
    benign = _benign(7)
    same = [benign[0]] * 5
    out = attacks.decorrelate(same, np.random.default_rng(0))
    assert find_copies([str(i) for i in range(5)], out) == [None] * 5
    assert all(np.array_equal(a, b) for a, b in zip(out[0], benign[0], strict=True))  # the first is kept as it is
    assert find_copies([str(i) for i in range(5)], same)[1] is not None  # the copies were caught before
