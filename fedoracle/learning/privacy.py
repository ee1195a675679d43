"""Local differential privacy of a device's update: clipping, Gaussian noise calibrated to (ε, δ), accounting.

A device releases ``clip(Δ, S) + N(0, std² I)``. The noise multiplier ``σ = std / sensitivity``
follows from the per-release ``(ε, δ)`` through the analytic Gaussian mechanism (Balle & Wang,
"Improving the Gaussian mechanism for differential privacy", ICML 2018), which is exact for any
ε. The classic bound ``σ = sqrt(2 ln(1.25/δ)) / ε`` (Dwork & Roth 2014, Thm. A.1) is only proven
for ε < 1 and, at the paper's ε = 8, gives far less noise than (ε, δ)-DP requires.

Sensitivity (what the noise protects), chosen with ``num_samples`` in :func:`noise_std`:

- ``num_samples=None`` (default, sound for any local training): the whole clipped update is the
  unit of privacy. Clipping bounds a device's contribution to L2 norm ``S``, so the release is
  (ε, δ)-DP between the device's update and no contribution (add/remove of one device, the
  user-level adjacency of DP-FedAvg). ``std = σ·S``. (Between two arbitrary devices, i.e.
  replacement, the distance is up to ``2S``; the same noise then gives the guarantee of ``σ/2``.)
- ``num_samples=D`` (the paper's ÷D scaling, after Wei et al., IEEE TIFS 2020): the sensitivity
  to one of the device's D samples is taken as ``S/D``, so ``std = σ·S/D``. This is exact when the
  update is a mean of D per-sample contributions each clipped to ``S`` (one full-batch step of
  per-sample-clipped SGD); for several local steps clipped as a whole it rests on Wei et al.'s
  empirical-risk-minimiser argument, not on a worst-case bound. Supported for reproduction.

Accounting across rounds composes one Gaussian event per release with dp-accounting.

The noise comes from the operating system's entropy (:func:`noise_generator`), never from a seed:
a device's training order is seeded and its seed is guessable (the fleet's seed and
:func:`fedoracle.learning.partition.device_seed` are public), so seeded noise could be
regenerated and subtracted. Experiments are reproducible in their data, training order and
models; their noise, like a real device's, is fresh each run.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr, ndtr

ACCOUNTANTS = ("pld", "rdp")
PLD_DISCRETIZATION = 1e-3  # ε within ~1e-6 of the exact Gaussian composition, 10x faster than the 1e-4 default


def global_norm(update: Sequence[NDArray[Any]]) -> float:
    """L2 norm of all tensors of an update taken together."""
    return float(math.sqrt(sum(float(np.sum(np.square(u, dtype=np.float64))) for u in update)))


def clip_update(update: Sequence[NDArray[Any]], clip: float) -> list[NDArray[Any]]:
    """Scales the update down to global L2 norm at most ``clip`` (unchanged when already within).

    Raises:
        ValueError: when ``clip`` is not positive.
    """
    if not clip > 0:
        raise ValueError(f"clip bound must be positive, got {clip}")
    norm = global_norm(update)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return [(np.asarray(u, dtype=np.float64) * scale).astype(u.dtype) for u in update]


def classic_gaussian_sigma(epsilon: float, delta: float) -> float:
    """The classic noise multiplier ``sqrt(2 ln(1.25/δ)) / ε`` (Dwork & Roth 2014, Thm. A.1).

    Raises:
        ValueError: unless ``0 < ε < 1`` and ``0 < δ < 1``: the theorem is proven only for ε < 1.
    """
    if not (0 < epsilon < 1 and 0 < delta < 1):
        raise ValueError(
            f"the classic Gaussian bound holds only for 0 < ε < 1 and 0 < δ < 1, got ε={epsilon}, δ={delta}"
        )
    return math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def gaussian_delta(sigma: float, epsilon: float) -> float:
    """The smallest δ for which ``N(0, σ²)`` noise on a sensitivity-1 query is (ε, δ)-DP.

    Balle & Wang 2018, Thm. 8: ``δ = Φ(1/(2σ) - εσ) - e^ε Φ(-1/(2σ) - εσ)``.
    """
    a, b = 1.0 / (2.0 * sigma), epsilon * sigma
    return float(max(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)), 0.0))


def _bisect(decreasing: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """Smallest x in [lo, hi] (geometric bisection) with decreasing(x) <= target."""
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if decreasing(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-12:
            break
    return hi


def gaussian_sigma(epsilon: float, delta: float) -> float:
    """Noise multiplier σ of the analytic Gaussian mechanism: the least σ that is (ε, δ)-DP.

    Solves :func:`gaussian_delta` ``(σ, ε) = δ`` by bisection. Valid for every ε > 0 and
    0 < δ < 1, unlike the classic ``sqrt(2 ln(1.25/δ)) / ε`` (:func:`classic_gaussian_sigma`),
    which holds only for ε < 1 and is larger there. Multiply by the sensitivity for the noise std.

    Raises:
        ValueError: when ε ≤ 0 or δ is not in (0, 1).
    """
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError(f"need ε > 0 and 0 < δ < 1, got ε={epsilon}, δ={delta}")
    hi = 1.0
    while gaussian_delta(hi, epsilon) > delta:
        hi *= 2.0
    return _bisect(lambda s: gaussian_delta(s, epsilon), delta, 1e-9, hi)


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """The least ε for which noise multiplier σ is (ε, δ)-DP (inverse of :func:`gaussian_sigma`)."""
    if gaussian_delta(sigma, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(sigma, hi) > delta:
        hi *= 2.0
    return _bisect(lambda e: gaussian_delta(sigma, e), delta, 1e-12, hi)


def noise_std(clip: float, epsilon: float, delta: float, *, num_samples: int | None = None) -> float:
    """Per-coordinate noise std ``σ(ε, δ) · sensitivity``; sensitivity ``S``, or ``S/D`` with ``num_samples=D``.

    See the module docstring for what each choice protects.
    """
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    sensitivity = clip if num_samples is None else clip / num_samples
    return gaussian_sigma(epsilon, delta) * sensitivity


def noise_generator() -> np.random.Generator:
    """A fresh generator seeded with 256 bits from the operating system (``secrets``): the only noise source.

    No argument can make it repeat: nothing a device, an experiment or a test passes reaches the
    seed, so no one who knows (or guesses) the run's seeds can regenerate the noise.
    """
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(secrets.randbits(256))))


def add_noise(
    update: Sequence[NDArray[Any]],
    clip: float,
    epsilon: float,
    delta: float,
    *,
    num_samples: int | None = None,
) -> list[NDArray[Any]]:
    """Clips the update to L2 norm ``clip`` and adds i.i.d. ``N(0, noise_std²)`` to every coordinate.

    Args:
        update: the device's update (trained weights minus global weights).
        clip: the clip bound S.
        epsilon: per-release ε.
        delta: per-release δ.
        num_samples: ``None`` for update-level sensitivity ``S``; the device's sample count D for
            the paper's ÷D scaling (sensitivity ``S/D``). See the module docstring.

    Returns:
        The privatised update, in the input dtypes.
    """
    std = noise_std(clip, epsilon, delta, num_samples=num_samples)
    rng = noise_generator()
    return [
        (u.astype(np.float64) + rng.normal(0.0, std, size=u.shape)).astype(u.dtype) for u in clip_update(update, clip)
    ]


class PrivacyAccountant:
    """The (ε, δ) one device has spent over the rounds it released a noised update in.

    Each release is a Gaussian mechanism with noise multiplier σ (noise std over sensitivity);
    releases compose without subsampling amplification (a device's every release is counted).
    ``method="pld"`` (default) uses dp-accounting's privacy-loss-distribution accountant, which
    is tight for Gaussian composition; ``"rdp"`` its Rényi-DP accountant (looser, never below PLD).
    ε is computed when asked and cached per release history, so a fleet of devices with the same
    history pays for it once.
    """

    def __init__(self, delta: float, *, method: str = "pld") -> None:
        """Starts with nothing spent.

        Args:
            delta: the δ at which ε is reported.
            method: ``"pld"`` or ``"rdp"``.
        """
        if method not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {method!r}; expected one of {', '.join(ACCOUNTANTS)}")
        if not 0 < delta < 1:
            raise ValueError(f"δ must be in (0, 1), got {delta}")
        self.delta = delta
        self.method = method
        self._releases: Counter[tuple[float, float]] = Counter()  # (σ, q) -> steps; q = 1: no subsampling
        self._steps = 0

    @property
    def rounds(self) -> int:
        """Number of releases recorded (for DP-SGD: steps)."""
        return sum(self._releases.values())

    @property
    def steps(self) -> int:
        """DP-SGD steps recorded (:meth:`record_sampled`)."""
        return self._steps

    def record(self, noise_multiplier: float, count: int = 1) -> None:
        """Records ``count`` releases with noise multiplier σ (e.g. ``gaussian_sigma(ε, δ)``)."""
        if not noise_multiplier > 0 or count < 1:
            raise ValueError(f"need σ > 0 and count ≥ 1, got σ={noise_multiplier}, count={count}")
        self._releases[(float(noise_multiplier), 1.0)] += count

    def record_sampled(self, noise_multiplier: float, sampling_rate: float, steps: int) -> None:
        """Records ``steps`` DP-SGD steps: Poisson-subsampled Gaussian mechanisms (rate q, multiplier σ)."""
        if not noise_multiplier > 0 or steps < 1 or not 0 < sampling_rate <= 1:
            raise ValueError(f"need σ > 0, 0 < q ≤ 1 and steps ≥ 1, got σ={noise_multiplier}, q={sampling_rate}")
        self._releases[(float(noise_multiplier), float(sampling_rate))] += steps
        self._steps += steps

    def epsilon(self) -> float:
        """ε spent so far at the accountant's δ (0 before any release)."""
        if not self._releases:
            return 0.0
        return _composed_epsilon(tuple(sorted(self._releases.items())), self.delta, self.method)

    def spent(self) -> tuple[float, float]:
        """``(ε, δ)`` spent so far."""
        return self.epsilon(), self.delta

    def advantage_bound(self) -> float:
        """The most membership advantage (TPR − FPR) the releases so far allow (see :func:`advantage_bound`)."""
        if not self._releases:
            return 0.0
        return _composed_delta(tuple(sorted(self._releases.items())), 0.0)


@lru_cache(maxsize=4096)
def _composed_epsilon(releases: tuple[tuple[tuple[float, float], int], ...], delta: float, method: str) -> float:
    import dp_accounting

    if method == "pld":
        accountant: dp_accounting.PrivacyAccountant = dp_accounting.pld.PLDAccountant(
            value_discretization_interval=PLD_DISCRETIZATION
        )
    else:
        accountant = dp_accounting.rdp.RdpAccountant()
    for (sigma, q), count in releases:
        event: Any = dp_accounting.GaussianDpEvent(sigma)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


@lru_cache(maxsize=4096)
def _composed_delta(releases: tuple[tuple[tuple[float, float], int], ...], epsilon: float) -> float:
    import dp_accounting

    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    for (sigma, q), count in releases:
        event: Any = dp_accounting.GaussianDpEvent(sigma)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        accountant.compose(event, count)
    return float(min(1.0, accountant.get_delta(epsilon)))


def advantage_bound(noise_multiplier: float, sampling_rate: float, steps: int) -> float:
    """The most advantage (TPR − FPR) any test has at telling one unit's presence from its absence.

    That is the total variation between the two output distributions, the privacy profile's δ at
    ε = 0, here of ``steps`` Gaussian mechanisms with multiplier σ, Poisson-subsampled at rate q
    (q = 1: none), composed by dp-accounting's PLD accountant (pessimistic discretisation, so an
    upper bound). Tighter than any bound from a single (ε, δ) pair: for one Gaussian release it is
    ``2Φ(1/(2σ)) − 1`` exactly.
    """
    if not noise_multiplier > 0 or steps < 1 or not 0 < sampling_rate <= 1:
        raise ValueError(f"need σ > 0, 0 < q ≤ 1 and steps ≥ 1, got σ={noise_multiplier}, q={sampling_rate}")
    return _composed_delta((((float(noise_multiplier), float(sampling_rate)), int(steps)),), 0.0)


TPR_EPSILONS = tuple(0.05 * i for i in range(401))  # the ε grid the TPR bound minimises over (0 … 20)


def tpr_bound(noise_multiplier: float, sampling_rate: float, steps: int, fpr: float) -> float:
    """The most true-positive rate any membership test has at false-positive rate ``fpr``.

    Every (ε, δ(ε)) point of the mechanism's privacy profile bounds a test by ``TPR ≤ e^ε·FPR + δ(ε)``
    and ``TPR ≤ 1 − e^−ε (1 − FPR − δ(ε))`` (Kairouz et al. 2015); the bound is the least of these
    over ε in :data:`TPR_EPSILONS`, with δ(ε) from dp-accounting's PLD accountant for ``steps``
    Gaussian mechanisms of multiplier σ, Poisson-subsampled at rate q (q = 1: none). At ``fpr = 0``
    it is the profile's δ at the grid's largest ε; it never exceeds 1.
    """
    if not noise_multiplier > 0 or steps < 1 or not 0 < sampling_rate <= 1 or not 0 <= fpr <= 1:
        raise ValueError(
            f"need σ > 0, 0 < q ≤ 1, steps ≥ 1 and 0 ≤ FPR ≤ 1, got σ={noise_multiplier}, q={sampling_rate}, "
            f"steps={steps}, FPR={fpr}"
        )
    return _tpr_bound((((float(noise_multiplier), float(sampling_rate)), int(steps)),), float(fpr))


@lru_cache(maxsize=1024)
def _tpr_bound(releases: tuple[tuple[tuple[float, float], int], ...], fpr: float) -> float:
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    pld: Any = None
    for (sigma, q), count in releases:
        one = pld_lib.from_gaussian_mechanism(
            standard_deviation=sigma, sampling_prob=q, value_discretization_interval=PLD_DISCRETIZATION
        ).self_compose(count)
        pld = one if pld is None else pld.compose(one)
    eps = np.asarray(TPR_EPSILONS)
    delta = np.asarray(pld.get_delta_for_epsilon(eps), dtype=np.float64)  # the whole profile in one pass
    bounds = np.minimum(np.exp(eps) * fpr + delta, 1 - np.exp(-eps) * (1 - fpr - delta))
    return float(min(1.0, max(float(np.min(bounds)), fpr)))


def dpsgd_epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *, method: str = "pld"
) -> float:
    """ε of ``steps`` DP-SGD steps (Poisson rate q, noise multiplier σ) at δ, one record added or removed."""
    return _composed_epsilon((((float(noise_multiplier), float(sampling_rate)), steps),), delta, method)


def solve_noise_multiplier(epsilon: float, delta: float, sampling_rate: float, steps: int) -> float:
    """The smallest σ (to 0.1%) whose ``steps`` DP-SGD steps at rate q spend at most ε at δ (PLD).

    Solved once, before training, for the task's whole schedule (every step of every round), so
    that a device that takes part in every round ends with exactly its declared budget.

    Raises:
        ValueError: non-positive ε, δ outside (0, 1), or a schedule no σ ≤ 1000 fits.
    """
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need ε > 0 and 0 < δ < 1, got ε={epsilon}, δ={delta}")
    lo, hi = 0.3, 1.0
    if dpsgd_epsilon(lo, sampling_rate, steps, delta) <= epsilon:
        return lo  # the least noise this solver offers (DP-SGD does not train well below it anyway)
    while dpsgd_epsilon(hi, sampling_rate, steps, delta) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1000:
            raise ValueError(f"no noise multiplier up to 1000 fits ε={epsilon} over {steps} steps at q={sampling_rate}")
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if dpsgd_epsilon(mid, sampling_rate, steps, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


GUARANTEES = {
    "record": "one record (training example) of the device added or removed",
    "update": "one device's whole update added or removed (replacing one device's data: ε of σ/2)",
    "sample": (
        "the paper's ÷D scaling: no formal guarantee (it holds only if one record moves the update by at most S/D)"
    ),
}


def describe_epsilon(epsilon: float, delta: float, rounds: int, scaling: str) -> str:
    """The one way the system prints a spent ε: the figure with its δ, its unit and its rounds.

    Args:
        epsilon: ε spent (composed over the releases).
        delta: the δ it is stated at.
        rounds: releases (rounds) it covers.
        scaling: the mechanism's sensitivity, ``"update"`` or ``"sample"`` (see :func:`noise_std`).

    Returns:
        E.g. ``"ε = 7.90 at δ = 1e-05, per device, one device's whole update added or removed
        (...), over 3 rounds"``.

    Raises:
        ValueError: an unknown ``scaling``.
    """
    if scaling not in GUARANTEES:
        raise ValueError(f"unknown DP scaling {scaling!r}; expected one of {', '.join(GUARANTEES)}")
    return (
        f"ε = {epsilon:.2f} at δ = {delta:g}, per device, {GUARANTEES[scaling]}, "
        f"over {rounds} round{'s' if rounds != 1 else ''}"
    )
