"""The fleet's crafted-attack kinds: a coalition of the slice's malicious devices submits crafted updates."""

from __future__ import annotations

import numpy as np
import pytest

from devices.client import TrainingConfig
from devices.fleet import FleetConfig
from devices.training import AttackerTrainer, LocalTrainer, make_trainers
from fedoracle.learning.attacks import flatten
from fedoracle.learning.copies import find_copies
from fedoracle.units import encode_dp


def _task(rule_code: int = 1, threshold_bp: int = 0) -> dict:
    milli, e18, micro = encode_dp(8.0, 1e-5, 1.0)
    return {
        "epsilonMilli": milli,
        "deltaE18": e18,
        "clipMicro": micro,
        "maxRounds": 3,
        "privacyMode": 0,
        "aggregationRule": rule_code,
        "thresholdBp": threshold_bp,
        "taskId": 1,
        "round": 1,
    }


def test_unknown_fleet_attack_is_refused() -> None:
    """A fleet attack outside label_flip and the crafted attacks is a configuration error."""
    with pytest.raises(ValueError, match="unknown fleet attack"):
        FleetConfig(attack="krum")


def test_min_max_coalition_submits_crafted_updates_the_copy_rule_lets_through() -> None:
    """With attack=min_max the malicious devices of a slice collude: one crafted update each, distinct, not copies.

    Their updates are crafted around the members' own benign (DP) updates (partial knowledge), and
    the honest devices keep their LocalTrainer.
    """
    from fedoracle.learning.models import initial_weights, model_spec

    config = FleetConfig(
        count=10,
        malicious=0.3,
        unreliable=0.0,
        samples_per_device=64,
        attack="min_max",
        training=TrainingConfig(epochs=1),
    )
    trainers = make_trainers(config)
    attackers = [t for kind, t in trainers if kind == "malicious"]
    assert len(attackers) == 3 and all(isinstance(t, AttackerTrainer) for t in attackers)
    assert all(isinstance(t, LocalTrainer) for kind, t in trainers if kind != "malicious")
    spec = model_spec("small_cnn", (28, 28, 1), 10)
    glob = initial_weights(spec, 0)
    task = _task()
    outs = [t(spec, glob, task) for t in attackers]
    updates = [u for u, _, _ in outs]
    assert [n for _, n, _ in outs] == [64, 64, 64]
    assert all(np.all(np.isfinite(flatten(u))) for u in updates)
    assert find_copies([str(i) for i in range(3)], updates) == [None, None, None]
    again = attackers[0](spec, glob, task)[0]  # the round is crafted once: a second call returns the same update
    assert all(np.array_equal(a, b) for a, b in zip(again, updates[0], strict=True))
