"""The contract's fixed-point units, converted in one place.

Accuracies and thresholds travel on-chain in basis points (``uint16``, 10,000 = 100%); a task's
DP parameters as ε in thousandths (``epsilonMilli``), δ in 1e-18 (``deltaE18``) and the clip norm
S in millionths (``clipMicro``). Every role converts through these functions, so a device, the
oracle, the publisher and the experiments round exactly alike. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

BP = 10_000  # basis points in 1.0
EPSILON_SCALE = 10**3  # epsilonMilli
DELTA_SCALE = 10**18  # deltaE18
CLIP_SCALE = 10**6  # clipMicro


def to_bp(fraction: float) -> int:
    """A threshold or margin in basis points, rounded to the nearest (e.g. ``0.5`` → ``5000``)."""
    return round(fraction * BP)


def floor_bp(fraction: float) -> int:
    """An accuracy in basis points, rounded down so that a verdict never overstates it.

    The ``1e-9`` absorbs float error in fractions that are exact in decimal (``0.29`` → 2900, not 2899).
    """
    return int(math.floor(fraction * BP + 1e-9))


def from_bp(bp: int) -> float:
    """Basis points as a fraction of 1."""
    return bp / BP


def encode_dp(epsilon: float, delta: float, clip: float) -> tuple[int, int, int]:
    """``(epsilonMilli, deltaE18, clipMicro)`` as ``FLTaskRegistry.publish`` takes them."""
    return round(epsilon * EPSILON_SCALE), round(delta * DELTA_SCALE), round(clip * CLIP_SCALE)


def epsilon_milli(epsilon: float) -> int:
    """ε in the registry's 1e-3 units (``uint32``; a spent budget in ``submit``), rounded up.

    Rounding up never under-reports what a device spent.
    """
    if not 0.0 <= epsilon < 2**32 / EPSILON_SCALE:
        raise ValueError(f"epsilon {epsilon} is out of range")
    return min(math.ceil(epsilon * EPSILON_SCALE - 1e-9), 2**32 - 1)


def decode_dp(task: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(ε, δ, S)`` from the registry's ``getTask`` view."""
    return task["epsilonMilli"] / EPSILON_SCALE, task["deltaE18"] / DELTA_SCALE, task["clipMicro"] / CLIP_SCALE


def quantize_dp(epsilon: float, delta: float, clip: float) -> tuple[float, float, float]:
    """``(ε, δ, S)`` after the round trip through the contract."""
    milli, e18, micro = encode_dp(epsilon, delta, clip)
    return decode_dp({"epsilonMilli": milli, "deltaE18": e18, "clipMicro": micro})
