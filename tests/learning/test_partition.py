"""Device shards: class balance, label skew hitting a target EMD, label flipping and the fleet mix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedoracle.learning.partition import (
    DeviceKind,
    emd,
    fleet_kinds,
    flip_labels,
    label_distribution,
    partition,
    skewed_distribution,
)

SHARD = 500


@pytest.mark.parametrize("target", [0.0, 0.25, 0.5, 1.0, 1.25, 1.5])
def test_unreliable_shards_hit_the_target_emd(mnist, target: float) -> None:
    """Every unreliable shard's EMD from the population is within num_classes / shard_size of the target."""
    kinds = fleet_kinds(100, seed=7)
    shards = partition(mnist.y_train, kinds, SHARD, seed=1, target_emd=target)
    population = label_distribution(mnist.y_train, 10)
    unreliable = [s for s in shards if s.kind is DeviceKind.UNRELIABLE]
    assert len(unreliable) == 20
    for shard in unreliable:
        measured = emd(label_distribution(mnist.y_train[shard.indices], 10), population)
        assert measured == pytest.approx(shard.emd)
        assert abs(measured - target) <= 10 / SHARD


def test_shards_are_disjoint_and_honest_ones_balanced(mnist) -> None:
    """No sample goes to two devices; honest shards hold every class 50 times."""
    shards = partition(mnist.y_train, fleet_kinds(100, seed=3), SHARD, seed=2, target_emd=1.5)
    every = np.concatenate([s.indices for s in shards])
    assert len(every) == len(np.unique(every)) == 100 * SHARD
    for shard in shards:
        if shard.kind is DeviceKind.HONEST:
            assert np.bincount(shard.labels, minlength=10).tolist() == [SHARD // 10] * 10


@pytest.mark.parametrize(("rate", "mode"), [(0.0, "shift"), (0.3, "shift"), (1.0, "shift"), (0.5, "random")])
def test_malicious_shards_flip_the_stated_fraction(mnist, rate: float, mode: str) -> None:
    """A malicious shard's labels differ from the truth on exactly round(rate * size) samples."""
    kinds = [DeviceKind.MALICIOUS] * 3
    for shard in partition(mnist.y_train, kinds, SHARD, seed=4, flip_rate=rate, flip_mode=mode):
        truth = mnist.y_train[shard.indices]
        flipped = shard.labels != truth
        assert flipped.sum() == round(rate * SHARD)
        if mode == "shift":
            assert np.array_equal(shard.labels[flipped], (truth[flipped] + 1) % 10)


@given(
    hnp.arrays(np.float64, 10, elements=st.floats(0.01, 1.0)),
    st.floats(0.0, 1.0),
    st.integers(0, 9),
)
def test_skewed_distribution_is_exactly_at_the_target(weights: np.ndarray, fraction: float, dominant: int) -> None:
    """The mixed distribution is a distribution and its EMD from the population is the target."""
    q = weights / weights.sum()
    target = fraction * 2 * (1 - q[dominant])
    p = skewed_distribution(q, target, dominant)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert emd(p, q) == pytest.approx(target, abs=1e-12)


def test_skewed_distribution_refuses_unreachable_targets() -> None:
    """EMD above 2 (1 - q_c) cannot be reached with dominant class c."""
    with pytest.raises(ValueError, match="out of reach"):
        skewed_distribution(np.full(10, 0.1), 1.81, 0)


@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_fleet_mix_is_20_20_60_and_seeded(n: int, seed: int) -> None:
    """The mix has round(0.2 n) malicious, round(0.2 n) unreliable, the rest honest; the seed fixes the order."""
    kinds = fleet_kinds(n, seed)
    assert kinds == fleet_kinds(n, seed)
    assert kinds.count(DeviceKind.MALICIOUS) == round(0.2 * n)
    assert kinds.count(DeviceKind.UNRELIABLE) == min(round(0.2 * n), n - round(0.2 * n))
    assert len(kinds) == n


def test_flip_labels_random_mode_never_keeps_the_label() -> None:
    """Random flipping always moves a label to another class."""
    y = np.repeat(np.arange(10), 100)
    out = flip_labels(y, 1.0, np.random.default_rng(0), 10, mode="random")
    assert np.all(out != y) and set(np.unique(out)) == set(range(10))


def test_partition_reports_exhausted_classes(mnist) -> None:
    """Asking for more samples of a class than exist fails with a clear error."""
    with pytest.raises(ValueError, match="class 5"):
        partition(mnist.y_train, [DeviceKind.HONEST] * 100, 600, seed=0)
