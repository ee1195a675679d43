"""The round's rules (``fedoracle.learning.rounds`` and ``fedoracle.units``), which every role calls.

These test the rules themselves; the contract's side of the acceptance rule and of the commitment
is tested against the same functions in ``tests/contracts`` (``test_round.py``, ``test_views.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.errors import Reason
from fedoracle.learning.rounds import (
    DPParams,
    accuracy_bp,
    aggregate_accepted,
    candidate,
    device_update,
    is_accepted,
    next_threshold,
    score_candidate,
    training_seed,
    verdict_reason,
)
from fedoracle.units import BP, decode_dp, encode_dp, floor_bp, to_bp


@given(st.integers(0, BP))
def test_floor_bp_is_exact_on_basis_points(k):
    assert floor_bp(k / BP) == k


@given(st.floats(0.0, 1.0))
def test_floor_bp_never_overstates(acc):
    bp = floor_bp(acc)
    assert bp <= acc * BP + 1e-6 and bp > acc * BP - 1 - 1e-6


@given(reason=st.sampled_from(list(Reason)), acc=st.integers(0, BP), thr=st.integers(0, BP))
def test_acceptance_rule_and_its_reason(reason, acc, thr):
    accepted = is_accepted(reason, acc, thr)
    assert accepted == (reason == Reason.OK and acc >= thr)
    why = verdict_reason(reason, acc, thr)
    assert (why == Reason.OK) == accepted
    assert why == (Reason.BELOW_THRESHOLD if reason == Reason.OK and not accepted else reason)


@settings(deadline=None)
@given(
    round_=st.integers(1, 10),
    current=st.integers(0, BP),
    previous=st.integers(0, BP),
    margin=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_next_threshold_only_rises_and_stays_in_range(round_, current, previous, margin):
    got = next_threshold(round_, current, previous, margin)
    if margin is None or round_ < 2:
        assert got is None
        return
    target = min(previous - to_bp(margin), BP)
    assert got == (target if target > current else None)
    assert got is None or current < got <= BP


def test_dp_params_round_trip_the_chain_encoding():
    from fedoracle.chain import TaskParams

    params = TaskParams(
        oracle="0x" + "11" * 20,
        model_spec_hash="0x" + "22" * 32,
        initial_model_hash="0x" + "33" * 32,
        initial_model_uri="",
        threshold_bp=0,
        test_set_root=b"\0" * 32,
        seed_commitment=b"\0" * 32,
        num_groups=2,
        groups_per_round=1,
        epsilon=8.0,
        delta=math.exp(-5),
        clip=0.1234567,
    )
    milli, e18, micro = encode_dp(params.epsilon, params.delta, params.clip)
    assert (milli, e18, micro) in [tuple(params.as_tuple()[i : i + 3]) for i in range(len(params.as_tuple()) - 2)]
    task = {"epsilonMilli": milli, "deltaE18": e18, "clipMicro": micro}
    assert DPParams.from_task(task) == DPParams(8.0, math.exp(-5), 0.1234567).quantized()
    assert DPParams.from_task(task).clip == 0.123457 == decode_dp(task)[2]


def test_training_seeds_differ_by_device_and_round():
    seeds = {training_seed(d, r) for d in range(50) for r in range(1, 11)}
    assert len(seeds) == 500


def test_device_update_is_the_trained_minus_the_global_model(mnist, spec, initial):
    from fedoracle.learning.training import local_train

    x, y = mnist.x_train[:200], mnist.y_train[:200]
    trained = local_train(spec, initial, x, y, epochs=1, batch_size=128, learning_rate=2e-3, seed=training_seed(11, 1))
    got = device_update(
        spec,
        initial,
        x,
        y,
        epochs=1,
        batch_size=128,
        learning_rate=2e-3,
        optimizer="adam",
        seed=training_seed(11, 1),
        dp=None,
    )
    assert all(np.array_equal(t - g, u) for t, g, u in zip(trained, initial, got, strict=True))
    assert all(u.dtype == g.dtype for u, g in zip(got, initial, strict=True))


def test_a_dp_release_is_clipped_noised_and_accounted(mnist, spec, initial):
    from fedoracle.learning.privacy import PrivacyAccountant

    x, y = mnist.x_train[:200], mnist.y_train[:200]
    kwargs = dict(epochs=1, batch_size=128, learning_rate=2e-3, optimizer="adam", seed=training_seed(3, 1))
    raw = device_update(spec, initial, x, y, dp=None, **kwargs)
    dp = DPParams(8.0, 1e-5, 0.5, "update")
    accountant = PrivacyAccountant(dp.delta)
    noisy = device_update(spec, initial, x, y, dp=dp, accountant=accountant, **kwargs)
    assert not all(np.array_equal(a, b) for a, b in zip(raw, noisy, strict=True))
    assert accountant.epsilon() == pytest.approx(8.0, rel=0.05)  # one release at ε = 8


def test_score_candidate_scores_global_plus_update(mnist, spec, initial):
    from fedoracle.learning.evaluation import Evaluator

    ev = Evaluator(spec, mnist.x_test[:500], mnist.y_test[:500])
    update = [np.random.default_rng(1).normal(0, 0.01, w.shape).astype(w.dtype) for w in initial]
    bp = accuracy_bp(ev, candidate(initial, update))
    assert bp == floor_bp(ev.evaluate(candidate(initial, update)).accuracy)
    assert score_candidate(ev, initial, update, bp).accepted
    assert not score_candidate(ev, initial, update, bp + 1).accepted
    bad = [u.copy() for u in update]
    bad[0].flat[0] = np.inf
    v = score_candidate(ev, initial, bad, 0)
    assert (v.accuracy_bp, v.reason, v.accepted) == (0, Reason.NON_FINITE, False)


def test_aggregate_accepted_is_global_plus_the_weighted_mean():
    rng = np.random.default_rng(2)
    glob = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    updates = [[rng.normal(size=w.shape).astype(np.float32) for w in glob] for _ in range(3)]
    samples = [100, 300, 600]
    got = aggregate_accepted(glob, updates, samples)
    for i, g in enumerate(glob):
        want = g + sum(n * u[i] for u, n in zip(updates, samples, strict=True)) / sum(samples)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
        assert got[i].dtype == g.dtype
    unweighted = aggregate_accepted(glob, updates, [0, 300, 600])  # a zero count: plain mean
    np.testing.assert_allclose(unweighted[0], glob[0] + sum(u[0] for u in updates) / 3, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(aggregate_accepted(glob, [], []), glob, strict=True))
