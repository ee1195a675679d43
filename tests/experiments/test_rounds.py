"""``fedoracle.learning.rounds`` computes exactly what the protocol's roles compute today.

Each test runs the protocol's own code (``devices.training.LocalTrainer``, ``oracle.scoring``,
``oracle.daemon.OracleDaemon``) beside the shared function on the same inputs.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fedoracle.errors import Reason
from fedoracle.learning.rounds import (
    DPParams,
    accuracy_bp,
    aggregate_accepted,
    device_update,
    next_threshold,
    score_candidate,
    training_seed,
)


@pytest.fixture(scope="module")
def spec(mnist):
    from fedoracle.learning.models import model_spec

    return model_spec("small_cnn", mnist.input_shape, mnist.num_classes)


@pytest.fixture(scope="module")
def initial(spec):
    from fedoracle.learning.models import initial_weights

    return initial_weights(spec, 0)


def task_view(epsilon: float, delta: float, clip: float) -> dict:
    """The fields of ``getTask`` a device reads its DP parameters from (fixed point, as the chain stores them)."""
    return {"epsilonMilli": round(epsilon * 1e3), "deltaE18": round(delta * 1e18), "clipMicro": round(clip * 1e6)}


def test_dp_params_round_trip_the_chain_encoding():
    task = task_view(8.0, math.exp(-5), 5.0)
    assert DPParams.from_task(task) == DPParams(8.0, math.exp(-5), 5.0).quantized()
    assert DPParams(8.0, 1e-5, 0.1234567).quantized().clip == 0.123457


@pytest.mark.parametrize("dp_scaling", ["sample", "update"])
def test_device_update_equals_local_trainer_over_two_rounds(mnist, spec, initial, dp_scaling):
    from devices.client import TrainingConfig
    from devices.training import LocalTrainer
    from fedoracle.learning.privacy import PrivacyAccountant

    x, y = mnist.x_train[:300], mnist.y_train[:300]
    cfg = TrainingConfig(epochs=1, batch_size=128, learning_rate=2e-3, dp=True, dp_scaling=dp_scaling)
    seed = 7 * 100_003 + 3
    trainer = LocalTrainer(x, y, cfg, seed=seed)
    task = task_view(8.0, math.exp(-5), 0.5)
    rng, accountant = np.random.default_rng(seed), PrivacyAccountant(DPParams.from_task(task).delta)
    weights = initial
    for r in (1, 2):
        expected, n, _ = trainer(spec, weights, task)
        got = device_update(spec, weights, x, y, epochs=1, batch_size=128, learning_rate=2e-3, optimizer="adam",
                            seed=training_seed(seed, r), dp=DPParams.from_task(task, dp_scaling), rng=rng,
                            accountant=accountant)
        assert n == len(y)
        assert all(np.array_equal(a, b) for a, b in zip(expected, got))
        weights = [w + u for w, u in zip(weights, got)]
    assert accountant.epsilon() == pytest.approx(trainer.epsilon_spent)
    assert accountant.epsilon() > 8.0  # two releases at ε = 8


def test_device_update_without_dp_is_the_raw_update(mnist, spec, initial):
    from devices.client import TrainingConfig
    from devices.training import LocalTrainer

    x, y = mnist.x_train[:200], mnist.y_train[:200]
    trainer = LocalTrainer(x, y, TrainingConfig(epochs=1, learning_rate=2e-3, dp=False), seed=11)
    expected, _, _ = trainer(spec, initial, {})
    got = device_update(spec, initial, x, y, epochs=1, batch_size=128, learning_rate=2e-3, optimizer="adam",
                        seed=training_seed(11, 1), dp=None, rng=np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert trainer.epsilon_spent is None


def test_score_candidate_equals_the_oracle_scoring(mnist, spec, initial):
    from fedoracle.learning.evaluation import Evaluator
    from oracle.scoring import RoundContext

    ev = Evaluator(spec, mnist.x_test[:500], mnist.y_test[:500])
    ctx = RoundContext(1, 1, spec, "0x00", initial, ev, "0x00")
    rng = np.random.default_rng(1)
    update = [rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in initial]
    oracle_bp = ctx.accuracy_bp([g + u for g, u in zip(initial, update)])
    v = score_candidate(ev, initial, update, oracle_bp)
    assert (v.accuracy_bp, v.reason, v.accepted) == (oracle_bp, Reason.OK, True)
    assert not score_candidate(ev, initial, update, oracle_bp + 1).accepted  # _settle_round: acc >= threshold
    assert accuracy_bp(ev, initial) == ctx.accuracy_bp(initial)
    bad = [u.copy() for u in update]
    bad[0].flat[0] = np.inf
    assert score_candidate(ev, initial, bad, 0) == type(v)(0, Reason.NON_FINITE, False)


@pytest.mark.parametrize("rule", ["fedavg", "median", "trimmed_mean"])
def test_aggregate_accepted_equals_the_oracle_aggregation(tmp_path, spec, initial, rule):
    from fedoracle.blobstore import LocalBlobStore
    from fedoracle.chain import Submission
    from fedoracle.codec import encode_with_hash
    from oracle.daemon import Oracle

    blobs = LocalBlobStore(tmp_path / "blobs")
    rng = np.random.default_rng(2)
    updates = [[rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in initial] for _ in range(5)]
    samples = [100, 250, 300, 80, 600]
    subs = []
    for i, (u, n) in enumerate(zip(updates, samples)):
        data, digest = encode_with_hash(u, spec)
        blobs.put(data)
        subs.append(Submission(1, 1, f"0x{i:040x}", f"0x{i:040x}", digest, "", 5000, n))
    fake = SimpleNamespace(blobs=blobs, config=SimpleNamespace(aggregation=rule, trim_fraction=0.2))
    ctx = SimpleNamespace(spec=spec, global_weights=initial, global_hash="0x00")
    expected, _, _ = Oracle._aggregate_weights(fake, ctx, subs)
    got = aggregate_accepted(initial, updates, samples, rule=rule, trim_fraction=0.2)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert not all(np.array_equal(a, b) for a, b in zip(initial, got))
    same, _, _ = Oracle._aggregate_weights(fake, ctx, [])
    assert all(np.array_equal(a, b) for a, b in zip(same, aggregate_accepted(initial, [], [])))


@pytest.mark.parametrize(("round_", "current", "previous", "margin"),
                         [(1, 5000, 9000, 0.05), (2, 5000, 9000, 0.05), (3, 8900, 9000, 0.05),
                          (2, 5000, 9000, None), (2, 9990, 10_000, 0.0), (4, 8000, 8400, 0.05)])
def test_next_threshold_equals_the_oracle_follow_threshold(round_, current, previous, margin):
    from oracle.daemon import Oracle

    announced = []

    async def get_round(task_id, r):
        assert r == round_ - 1
        return {"globalAccuracyBp": previous}

    async def send(task_id, r, action, subject, tx, **fields):
        announced.append(fields["threshold_bp"])

    fake = SimpleNamespace(config=SimpleNamespace(threshold_margin=margin),
                           registry=SimpleNamespace(get_round=get_round, announce_threshold=lambda t, bp: None),
                           _send=send)
    asyncio.run(Oracle._follow_threshold(fake, 1, round_, current))
    expected = announced[0] if announced else None
    assert next_threshold(round_, current, previous, margin) == expected
