"""Money out after a task: the claim window, multi-round claims, and batched verdicts.

Each test plays the party that would gain from a hole:
- the publisher who wants the devices' shares back early (before the claim window ends);
- a stranger who replays or repeats rounds in ``claimMany`` to be paid twice;
- an oracle that smuggles a second verdict for one device into a ``postVerdicts`` batch;
- nobody at all: shares that are never claimed must not stay in the contract for good.
"""

from __future__ import annotations

import pytest

from fltask_harness import (
    CLAIM_WINDOW,
    EVALUATOR,
    FINALIZED,
    REASON_LOSS_ABOVE_MARGIN,
    S_ACCEPTED,
    S_CLAIMED,
    S_EXPIRED,
    S_REJECTED,
    assert_event,
    reverts_with,
)


@pytest.fixture
def ended(publish, devices):
    """A 3-round task, finalized: devices 0-1 accepted in every round, device 2 only in round 2."""
    t, _ = publish()
    for r in (1, 2, 3):
        t.run_round(accepted=[devices[0], devices[1], *([devices[2]] if r == 2 else [])], rejected=[devices[3]])
    t.finalize()
    return t


def _share(registry, t, r):
    return registry.getRound(t.task_id, r).rewardPerAccepted


def test_the_publisher_cannot_take_unclaimed_shares_before_the_window_ends(ended, registry, publisher, devices):
    t = ended
    s = registry.getState(t.task_id)
    assert s.phase == FINALIZED
    before = registry.refundable(t.task_id)
    with reverts_with(registry.FLTaskClaimWindowOpen, taskId=t.task_id, claimDeadline=s.deadline):
        registry.reclaimExpired(t.task_id, 1, [devices[0]], sender=publisher)
    t.warp(CLAIM_WINDOW - 60)  # still inside the window: the device is paid in full
    registry.claim(t.task_id, 1, devices[0], sender=publisher)
    assert registry.getVerdict(t.task_id, 1, devices[0]).status == S_CLAIMED
    assert registry.refundable(t.task_id) == before


def test_a_running_task_has_no_claim_window_to_end(publish, registry, devices, stranger):
    t, _ = publish()
    t.run_round(accepted=[devices[0]])
    with reverts_with(registry.FLTaskClaimWindowOpen, taskId=t.task_id, claimDeadline=0):
        registry.reclaimExpired(t.task_id, 1, [devices[0]], sender=stranger)


def test_shares_nobody_claims_return_to_the_publisher_after_the_window(ended, registry, publisher, stranger, devices):
    t = ended
    registry.claim(t.task_id, 1, devices[0], sender=stranger)  # one share is paid in time
    t.warp_past_deadline()
    with reverts_with(registry.FLTaskClaimWindowClosed, taskId=t.task_id, claimDeadline=t.state.deadline):
        registry.claim(t.task_id, 2, devices[0], sender=stranger)
    with reverts_with(registry.FLTaskClaimWindowClosed, taskId=t.task_id):
        registry.claimMany(t.task_id, [2, 3], devices[1], sender=stranger)
    with reverts_with(registry.FLTaskClaimWindowClosed, taskId=t.task_id):
        registry.setPayee(t.task_id, 2, stranger, sender=devices[0])
    assert registry.claimable(t.task_id, 2, devices[0]) == 0
    # Already paid, rejected, or unknown shares cannot be expired (nor expired twice).
    for r, d in ((1, devices[0]), (1, devices[3])):
        with reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=r, device=d.address):
            registry.reclaimExpired(t.task_id, r, [d], sender=stranger)
    unclaimed = []
    for r in (1, 2, 3):
        accepted = [d for d in devices[:3] if registry.getVerdict(t.task_id, r, d).status == S_ACCEPTED]
        receipt = registry.reclaimExpired(t.task_id, r, accepted, sender=stranger)
        assert_event(
            receipt,
            registry.RewardExpired,
            [dict(taskId=t.task_id, round=r, device=d.address, amount=_share(registry, t, r)) for d in accepted],
        )
        unclaimed += [(r, d) for d in accepted]
        with reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=r):
            registry.reclaimExpired(t.task_id, r, accepted[:1], sender=stranger)
    assert all(registry.getVerdict(t.task_id, r, d).status == S_EXPIRED for r, d in unclaimed)
    before = publisher.balance
    registry.refund(t.task_id, sender=stranger)
    assert registry.balance == 0  # nothing left in the contract for good
    reward = registry.getTask(t.task_id).reward
    assert publisher.balance - before == reward - _share(registry, t, 1)  # all but the one share paid in time


def test_claim_many_pays_every_round_once_in_one_transfer(ended, registry, stranger, devices):
    t = ended
    payee = devices[0]
    before = payee.balance
    receipt = registry.claimMany(t.task_id, [1, 2, 3], devices[0], sender=stranger)
    shares = [_share(registry, t, r) for r in (1, 2, 3)]
    assert payee.balance - before == sum(shares)
    assert_event(
        receipt,
        registry.RewardClaimed,
        [
            dict(taskId=t.task_id, round=r, device=devices[0].address, payee=payee.address, amount=shares[r - 1])
            for r in (1, 2, 3)
        ],
    )
    with reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=1, device=devices[0].address):
        registry.claimMany(t.task_id, [1], devices[0], sender=stranger)


@pytest.mark.parametrize("rounds,bad", [([1, 1], 1), ([1, 2, 1], 1), ([2, 4], 4), ([2, 3], 3)])
def test_claim_many_cannot_pay_a_round_twice_or_one_without_a_share(ended, registry, stranger, devices, rounds, bad):
    """A repeated round, a round never settled, or one the device was not accepted in reverts it all."""
    t = ended
    device = devices[2]  # accepted in round 2 only
    if rounds == [1, 1] or rounds == [1, 2, 1]:
        device = devices[0]
    before = [registry.getVerdict(t.task_id, r, device).status for r in (1, 2, 3)]
    error = registry.FLTaskRoundNotSettled if bad == 4 else registry.FLTaskNothingToClaim
    with reverts_with(error, taskId=t.task_id, round=bad):
        registry.claimMany(t.task_id, rounds, device, sender=stranger)
    assert [registry.getVerdict(t.task_id, r, device).status for r in (1, 2, 3)] == before  # nothing moved


def test_claim_many_pays_each_payee_its_own_rounds(ended, registry, stranger, devices, payees):
    t = ended
    registry.setPayee(t.task_id, 2, payees[0], sender=devices[1])  # round 2's share goes elsewhere
    b_dev, b_payee = devices[1].balance, payees[0].balance
    registry.claimMany(t.task_id, [1, 2, 3], devices[1], sender=stranger)
    assert devices[1].balance - b_dev == _share(registry, t, 1) + _share(registry, t, 3)
    assert payees[0].balance - b_payee == _share(registry, t, 2)


def test_a_batch_of_verdicts_records_what_single_verdicts_would(publish, registry, oracle, devices):
    t, _ = publish()
    for d in devices[:4]:
        t.submit(d)
    t.close()
    t.disclose()
    subs = t.subs[1]
    batch = [
        (d.address, subs[d.address], acc, 0) for d, acc in zip(devices[:4], (9_000, 3_000, 6_000, 10_000), strict=True)
    ]
    receipt = registry.postVerdicts(t.task_id, batch, EVALUATOR, sender=oracle)
    want = [S_ACCEPTED, S_REJECTED, S_ACCEPTED, S_ACCEPTED]
    assert [registry.getVerdict(t.task_id, 1, d).status for d in devices[:4]] == want
    assert [registry.getVerdict(t.task_id, 1, d).accuracyBp for d in devices[:4]] == [9_000, 3_000, 6_000, 10_000]
    s = registry.getState(t.task_id)
    assert (s.verdicts, s.accepted) == (4, 3)
    assert [e["accepted"] for e in receipt.decode_logs(registry.VerdictPosted)] == [True, False, True, True]
    assert bytes(registry.getCommitment(t.task_id, 1, devices[0])) == b"\x00" * 32  # the verdict took the slot
    t.aggregate()


def test_an_oracle_cannot_smuggle_a_second_verdict_into_a_batch(publish, registry, oracle, stranger, devices):
    t, _ = publish()
    for d in devices[:2]:
        t.submit(d)
    t.close()
    t.disclose()
    subs = t.subs[1]
    good = (devices[0].address, subs[devices[0].address], 9_000, 0)
    with reverts_with(registry.FLTaskVerdictAlreadyPosted, taskId=t.task_id, round=1, device=devices[0].address):
        registry.postVerdicts(
            t.task_id, [good, (devices[0].address, subs[devices[0].address], 1_000, 1)], EVALUATOR, sender=oracle
        )
    with reverts_with(registry.FLTaskUnauthorized, caller=stranger.address):
        registry.postVerdicts(t.task_id, [good], EVALUATOR, sender=stranger)
    assert registry.getState(t.task_id).verdicts == 0  # the whole batch reverted
    t.verdict(devices[0], 9_000)
    with reverts_with(registry.FLTaskVerdictAlreadyPosted, device=devices[0].address):
        registry.postVerdicts(t.task_id, [good], EVALUATOR, sender=oracle)


def test_the_loss_reason_needs_a_task_with_a_loss_gate(publish, registry, devices):
    for margin, ok in ((0, False), (500, True)):
        t, _ = publish(lossMarginBp=margin)
        t.submit(devices[0])
        t.close()
        t.disclose()
        if ok:
            t.verdict(devices[0], 9_000, reason=REASON_LOSS_ABOVE_MARGIN)
            v = registry.getVerdict(t.task_id, 1, devices[0])
            assert (v.status, v.reason) == (S_REJECTED, REASON_LOSS_ABOVE_MARGIN)  # rejected whatever the accuracy
        else:
            with reverts_with(registry.FLTaskInvalidVerdict, accuracyBp=9_000, reason=REASON_LOSS_ABOVE_MARGIN):
                t.verdict(devices[0], 9_000, reason=REASON_LOSS_ABOVE_MARGIN)
