"""Device shards of a training set: honest (class-balanced), unreliable (label-skewed) and malicious (label-flipped).

The label skew of a shard is measured as in the paper and Zhao et al. 2018 ("Federated learning
with non-IID data"): the Earth Mover's Distance between the shard's label distribution ``p`` and
the population's ``q``, ``EMD = sum_k |p_k - q_k|`` (0 for identical distributions, at most 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray


class DeviceKind(StrEnum):
    """The role a simulated device plays."""

    HONEST = "honest"
    UNRELIABLE = "unreliable"
    MALICIOUS = "malicious"


@dataclass(frozen=True)
class Shard:
    """The training data of one device.

    Attributes:
        kind: the device's role.
        indices: rows of the training set the device holds (disjoint across shards).
        labels: the labels the device trains on (flipped for a malicious device).
        emd: EMD between the shard's true label distribution and the population's.
    """

    kind: DeviceKind
    indices: NDArray[Any]
    labels: NDArray[Any]
    emd: float


def label_distribution(y: NDArray[Any], num_classes: int) -> NDArray[Any]:
    """Fraction of each class among the labels ``y``."""
    return np.bincount(y, minlength=num_classes)[:num_classes] / max(len(y), 1)


def emd(p: NDArray[Any], q: NDArray[Any]) -> float:
    """Earth Mover's Distance between two label distributions as the paper defines it: ``sum |p - q|``."""
    return float(np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def fleet_kinds(num_devices: int, seed: int, *, malicious: float = 0.2, unreliable: float = 0.2) -> list[DeviceKind]:
    """The role of each device in a fleet, in a random order fixed by ``seed``.

    ``round(malicious * num_devices)`` devices are malicious, ``round(unreliable * num_devices)``
    unreliable and the rest honest (the paper's 20% / 20% / 60% mix by default).

    Raises:
        ValueError: when the fractions are negative or add up to more than 1.
    """
    if malicious < 0 or unreliable < 0 or malicious + unreliable > 1:
        raise ValueError(f"bad fleet mix: malicious={malicious}, unreliable={unreliable}")
    n_mal = round(malicious * num_devices)
    n_unr = min(round(unreliable * num_devices), num_devices - n_mal)
    kinds = [DeviceKind.MALICIOUS] * n_mal + [DeviceKind.UNRELIABLE] * n_unr
    kinds += [DeviceKind.HONEST] * (num_devices - len(kinds))
    order = np.random.default_rng(seed).permutation(num_devices)
    return [kinds[i] for i in order]


def skewed_distribution(population: NDArray[Any], target_emd: float, dominant: int) -> NDArray[Any]:
    """The label distribution ``(1 - a) q + a e_c`` at EMD ``target_emd`` from the population ``q``.

    Mixing the population with the one-hot distribution of class ``c = dominant`` moves the EMD
    linearly: ``EMD = a * 2 (1 - q_c)``, so ``a = target_emd / (2 (1 - q_c))``.

    Raises:
        ValueError: when the target is out of reach with this dominant class (``a > 1``).
    """
    q = np.asarray(population, float)
    reach = 2.0 * (1.0 - q[dominant])
    if not 0.0 <= target_emd <= reach:
        raise ValueError(f"EMD {target_emd} is out of reach with dominant class {dominant} (max {reach:.3f})")
    a = target_emd / reach if reach > 0 else 0.0
    p = (1.0 - a) * q
    p[dominant] += a
    return p


def flip_labels(
    y: NDArray[Any], rate: float, rng: np.random.Generator, num_classes: int, *, mode: str = "shift"
) -> NDArray[Any]:
    """Flips the labels of a random fraction ``rate`` of the samples.

    Args:
        y: true labels.
        rate: the paper's lambda, in [0, 1]; ``round(rate * len(y))`` labels are flipped.
        rng: source of randomness.
        num_classes: number of classes.
        mode: ``"shift"`` maps ``y -> (y + 1) mod num_classes``; ``"random"`` draws another class
            uniformly.

    Returns:
        A new label array; every flipped label differs from the true one.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate {rate} is not in [0, 1]")
    out = np.array(y, copy=True)
    chosen = rng.choice(len(y), size=round(rate * len(y)), replace=False)
    if mode == "shift":
        out[chosen] = (out[chosen] + 1) % num_classes
    elif mode == "random":
        out[chosen] = (out[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    else:
        raise ValueError(f"unknown flip mode {mode!r}; expected 'shift' or 'random'")
    return out


def _counts(p: NDArray[Any], size: int) -> NDArray[Any]:
    """Integer class counts summing to ``size`` closest to ``p * size`` (largest remainder)."""
    exact = p * size
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: size - counts.sum()]] += 1
    return counts


def partition(
    y: NDArray[Any],
    kinds: Sequence[DeviceKind],
    shard_size: int,
    seed: int,
    *,
    num_classes: int = 10,
    target_emd: float = 1.0,
    flip_rate: float = 1.0,
    flip_mode: str = "shift",
) -> list[Shard]:
    """Draws one disjoint shard of ``shard_size`` samples per device.

    Honest and malicious shards hold every class equally often (the remainder spread over random
    classes); a malicious shard's labels are then flipped at ``flip_rate``. An unreliable shard
    follows :func:`skewed_distribution` around the reachable class with the most samples left
    (ties broken at random), so its realized EMD is
    within ``num_classes / shard_size`` of ``target_emd`` (the rounding of class counts).

    Args:
        y: labels of the whole training set.
        kinds: the role of each device (see :func:`fleet_kinds`).
        shard_size: samples per device.
        seed: fixes every random choice.
        num_classes: number of classes.
        target_emd: EMD of unreliable shards from the population (the paper goes up to 1.5).
        flip_rate: fraction of a malicious shard's labels that are flipped (the paper's lambda).
        flip_mode: see :func:`flip_labels`.

    Raises:
        ValueError: when a class runs out of samples or the target EMD is out of reach.
    """
    rng = np.random.default_rng(seed)
    population = label_distribution(y, num_classes)
    pools = [rng.permutation(np.flatnonzero(y == k)) for k in range(num_classes)]
    taken = np.zeros(num_classes, dtype=int)
    reachable = np.flatnonzero(2.0 * (1.0 - population) >= target_emd)
    shards = []
    for device, kind in enumerate(kinds):
        if kind is DeviceKind.UNRELIABLE:
            if len(reachable) == 0:
                raise ValueError(f"EMD {target_emd} is out of reach for every class")
            left = np.array([len(pools[k]) for k in reachable]) - taken[reachable]
            dominant = int(rng.choice(reachable[left == left.max()]))
            counts = _counts(skewed_distribution(population, target_emd, dominant), shard_size)
        else:
            counts = np.full(num_classes, shard_size // num_classes)
            counts[rng.choice(num_classes, size=shard_size % num_classes, replace=False)] += 1
        short = np.flatnonzero(taken + counts > [len(pool) for pool in pools])
        if len(short):
            raise ValueError(f"device {device}: class {short[0]} has no {counts[short[0]]} samples left")
        indices = np.concatenate([pools[k][taken[k] : taken[k] + counts[k]] for k in range(num_classes)])
        taken += counts
        indices = rng.permutation(indices)
        labels = y[indices]
        shard_emd = emd(label_distribution(labels, num_classes), population)
        if kind is DeviceKind.MALICIOUS:
            labels = flip_labels(labels, flip_rate, rng, num_classes, mode=flip_mode)
        shards.append(Shard(kind=kind, indices=indices, labels=labels, emd=shard_emd))
    return shards


def shard_size(num_train: int, fleet_size: int, samples_per_device: int | None = None) -> int:
    """Training examples per device: ``samples_per_device``, or ``min(2000, ⌊0.9·N⌋ // P)``.

    At most 90% of the training set is handed out (``DEFAULTS.shard_share``): skewed (unreliable)
    shards draw one class heavily, and handing out everything runs a class dry at P ≥ 30.
    """
    from fedoracle.defaults import DEFAULTS

    if samples_per_device:
        return samples_per_device
    return min(DEFAULTS.max_shard, int(DEFAULTS.shard_share * num_train) // max(1, fleet_size))


def device_seed(fleet_seed: int, index: int) -> int:
    """The seed of fleet device ``index``: its training order and its noise source."""
    return fleet_seed * 100_003 + index


def plan_fleet(
    y_train: NDArray[Any],
    fleet_size: int,
    seed: int,
    *,
    num_classes: int,
    malicious: float,
    unreliable: float,
    emd: float,
    flip_rate: float,
    samples_per_device: int | None = None,
) -> list[Shard]:
    """The whole fleet's kinds and disjoint shards, as every role and the experiments draw them.

    A process running devices ``i..j`` of a fleet takes ``plan_fleet(...)[i:j+1]``: slices of one
    fleet on several hosts get exactly the devices one process running it all would have.

    Args:
        y_train: the data set's training labels.
        fleet_size: P, the devices of the whole fleet.
        seed: the fleet's seed.
        num_classes: classes of the data set.
        malicious: share of malicious devices in the fleet.
        unreliable: share of unreliable devices in the fleet.
        emd: target EMD of an unreliable device's labels.
        flip_rate: λ of a malicious device.
        samples_per_device: shard size (``None``: :func:`shard_size`'s rule).

    Returns:
        One :class:`Shard` per device, in fleet order.
    """
    kinds = fleet_kinds(fleet_size, seed, malicious=malicious, unreliable=unreliable)
    size = shard_size(len(y_train), fleet_size, samples_per_device)
    return partition(y_train, kinds, size, seed, num_classes=num_classes, target_emd=emd, flip_rate=flip_rate)
