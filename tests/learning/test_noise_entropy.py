"""The privacy noise cannot be replayed: it comes from the operating system's entropy, not a seed.

Written as the attacker would try it. Every device's training order is seeded (the fleet's seed
defaults to 0 and ``fedoracle.learning.partition.device_seed`` is public), so an attacker who
guesses the seed can rebuild everything a seeded device computes. Before this test, the device's
noise came from ``np.random.default_rng(seed)`` too: the attacker regenerated it, subtracted it
from the released update and recovered the clipped update to within 1e-6, every round. Now two
devices built from the same seed and data release different updates, and subtracting the noise
the seed would give leaves an error as large as the noise itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from devices.client import TrainingConfig
from devices.training import LocalTrainer
from fedoracle.learning.privacy import clip_update, noise_std
from fedoracle.units import encode_dp

EPSILON, DELTA, CLIP = 8.0, 1e-5, 1.0
SEED = 0  # the fleet's default seed: what an attacker guesses first


def _task() -> dict[str, int]:
    milli, e18, micro = encode_dp(EPSILON, DELTA, CLIP)
    return {"epsilonMilli": milli, "deltaE18": e18, "clipMicro": micro}


@pytest.mark.parametrize("scaling", ["update", "sample"])
def test_a_guessed_seed_does_not_give_back_the_noise(mnist, spec, initial, scaling):
    x, y = mnist.x_train[:256], mnist.y_train[:256]
    config = TrainingConfig(epochs=1, batch_size=128, dp_scaling=scaling)
    victim = LocalTrainer(x, y, config, seed=SEED)
    released, _, _ = victim(spec, initial, _task())

    # The attacker's twin: the same data, seed and global model; with DP off it shows the exact
    # (deterministic) update the victim trained, which the attacker clips as the device does.
    twin = LocalTrainer(x, y, TrainingConfig(epochs=1, batch_size=128, dp=False, dp_scaling=scaling), seed=SEED)
    raw, _, _ = twin(spec, initial, _task())
    clipped = clip_update(raw, CLIP)

    # The replay: the noise a device seeded with SEED would draw, in the order it draws it.
    std = noise_std(CLIP, EPSILON, DELTA, num_samples=len(victim.y) if scaling == "sample" else None)
    guess = np.random.default_rng(SEED)
    recovered = [r.astype(np.float64) - guess.normal(0.0, std, size=r.shape) for r in released]

    error = np.sqrt(sum(np.sum((r - c) ** 2) for r, c in zip(recovered, clipped, strict=True)))
    noise = np.sqrt(sum(np.sum((r.astype(np.float64) - c) ** 2) for r, c in zip(released, clipped, strict=True)))
    expected = std * np.sqrt(sum(c.size for c in clipped))
    assert noise == pytest.approx(expected, rel=0.05)  # the release carries the declared noise
    assert error > 0.5 * noise, f"the seed gave the noise back: error {error:.3g} against noise {noise:.3g}"

    # Two devices from the same seed release different updates (the noise is fresh each time).
    again, _, _ = LocalTrainer(x, y, config, seed=SEED)(spec, initial, _task())
    assert not any(np.array_equal(a, b) for a, b in zip(released, again, strict=True))
