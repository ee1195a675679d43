"""Beyond the paper: an adaptive attacker that crafts its update to pass the accuracy gate.

After Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning" (USENIX
Security 2020): the attacker estimates the benign direction from its own (true-labelled) data and
submits a scaled step the other way, ``Δ = −s · u / ‖u‖``. The threshold is public (on-chain), so
it picks the largest ``s`` whose candidate ``global + Δ`` still scores at least
``threshold + guard`` on a held-out quarter of its own shard, its stand-in for the hidden test set.
It adds no DP noise: nothing lets the oracle check that a device noised its update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedoracle.learning.rounds import BP, candidate, device_update, training_seed

GUARD = 0.02  # accuracy the attacker keeps above the threshold on its own data
SCALES = 24  # bisection steps over log(s)
MAX_FACTOR = 50.0  # largest ‖Δ‖ tried, as a multiple of the benign update's norm

_models: dict[str, Any] = {}


def _accuracy(spec: Any, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The attacker's own accuracy estimate (a Keras forward pass on its held-out data)."""
    from fedoracle.learning.models import build_spec_model

    model = _models.get(spec.spec_hash)
    if model is None:
        model = _models[spec.spec_hash] = build_spec_model(spec)
    model.set_weights(weights)
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def crafted_update(
    cfg: Any, task: Any, dev: Any, global_weights: list[np.ndarray], threshold_bp: int
) -> list[np.ndarray]:
    """The adaptive attacker's release for this round.

    Args:
        cfg: the run's :class:`~experiments.config.RunConfig`.
        task: the simulated task (its spec).
        dev: the attacking :class:`~experiments.simulate.SimDevice` (its true labels).
        global_weights: the round's global model.
        threshold_bp: the threshold in force (public).

    Returns:
        ``−s · u / ‖u‖`` with the largest ``s`` (up to ``MAX_FACTOR · ‖u‖``) that keeps the
        attacker's own held-out accuracy at or above ``threshold + GUARD``; the smallest tried
        when none does.
    """
    dev.rounds += 1
    n_val = max(1, len(dev.y_true) // 4)
    x_tr, y_tr = dev.x[n_val:], dev.y_true[n_val:]
    x_val, y_val = dev.x[:n_val], dev.y_true[:n_val]
    benign = device_update(
        task.spec,
        global_weights,
        x_tr,
        y_tr,
        **cfg.local_training(),
        seed=training_seed(dev.seed, dev.rounds),
        dp=None,
    )
    norm = float(np.sqrt(sum(float(np.sum(np.square(u, dtype=np.float64))) for u in benign)))
    direction = [-u / max(norm, 1e-12) for u in benign]
    target = threshold_bp / BP + GUARD

    def passes(s: float) -> bool:
        return _accuracy(task.spec, candidate(global_weights, [s * d for d in direction]), x_val, y_val) >= target

    lo, hi = 0.05 * norm, MAX_FACTOR * norm
    if passes(hi):
        lo = hi
    elif passes(lo):
        for _ in range(SCALES):  # geometric bisection: passes(lo), not passes(hi)
            mid = float(np.sqrt(lo * hi))
            if passes(mid):
                lo = mid
            else:
                hi = mid
            if hi / lo < 1.02:
                break
    dev.last_scale = lo / max(norm, 1e-12)
    return [np.asarray(lo * d, dtype=d.dtype) for d in direction]
