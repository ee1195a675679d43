"""cancel (timeouts), claim (pull payments), refund, the split rule, and hostile recipients."""

import pytest

from fltask_harness import (
    AWAITING_FINALIZE,
    CANCELLED,
    CLOSED,
    FINALIZED,
    OPEN,
    S_ACCEPTED,
    S_CLAIMED,
    Params,
    assert_event,
    reverts_with,
)


def expected_split(reward: int, max_rounds: int, accepted: list[int]) -> tuple[list[int], int]:
    """The documented rule: equal round pools (last takes the remainder), equal shares in a round."""
    pool = reward // max_rounds
    per = []
    for r, k in enumerate(accepted, start=1):
        p = reward - pool * (max_rounds - 1) if r == max_rounds else pool
        per.append(p // k if k else 0)
    refund = reward - sum(p * k for p, k in zip(per, accepted, strict=True))
    return per, refund


# ---------------------------------------------------------------------------------------------- claim


def test_claim_pays_the_recorded_payee(task, registry, devices, payees, stranger, reward):
    t = task
    for d, p in zip(devices[:2], payees[:2], strict=True):
        t.submit(d, payee=p)
    t.submit(devices[2], payee=payees[2])
    t.close()
    t.disclose()
    t.verdict(devices[0], 9_000)
    t.verdict(devices[1], 8_000)
    t.verdict(devices[2], 100)
    t.aggregate()

    share = reward // 3 // 2
    assert registry.claimable(t.task_id, 1, devices[0]) == share
    assert registry.claimable(t.task_id, 1, devices[2]) == 0
    before_payee, before_device = payees[0].balance, devices[0].balance
    receipt = registry.claim(t.task_id, 1, devices[0], sender=stranger)  # anyone may trigger it
    assert_event(
        receipt,
        registry.RewardClaimed,
        dict(taskId=t.task_id, round=1, device=devices[0].address, payee=payees[0].address, amount=share),
    )
    assert payees[0].balance == before_payee + share
    assert devices[0].balance == before_device
    assert registry.getVerdict(t.task_id, 1, devices[0]).status == S_CLAIMED
    assert registry.claimable(t.task_id, 1, devices[0]) == 0
    assert registry.balance == reward - share

    with reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=1, device=devices[0].address):
        registry.claim(t.task_id, 1, devices[0], sender=devices[0])
    registry.claim(t.task_id, 1, devices[1], sender=devices[1])
    assert payees[1].balance > 0


@pytest.mark.parametrize("who", ["rejected", "absent"])
def test_claim_without_an_accepted_submission_reverts(task, registry, devices, who):
    task.run_round(accepted=devices[:1], rejected=devices[1:2])
    d = devices[1] if who == "rejected" else devices[5]
    with reverts_with(registry.FLTaskNothingToClaim, taskId=task.task_id, round=1, device=d.address):
        registry.claim(task.task_id, 1, d, sender=d)


@pytest.mark.parametrize("round_", [0, 1, 2, 65_535])
def test_claim_of_an_unsettled_round_reverts(task, registry, devices, round_):
    task.submit(devices[0])
    task.close()
    task.disclose()
    task.verdict(devices[0], 9_000)  # accepted, but the round is not settled yet
    with reverts_with(registry.FLTaskRoundNotSettled, taskId=task.task_id, round=round_):
        registry.claim(task.task_id, round_, devices[0], sender=devices[0])


def test_claim_when_the_share_rounds_to_zero_reverts(publish, registry, devices, publisher):
    t, _ = publish(value=2)  # 3 rounds: pools of 0, 0 and 2 wei
    t.run_round(accepted=devices[:1])
    assert registry.getRound(t.task_id, 1).rewardPerAccepted == 0
    with reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=1, device=devices[0].address):
        registry.claim(t.task_id, 1, devices[0], sender=devices[0])


def test_claim_unknown_task_reverts(registry, devices):
    with reverts_with(registry.FLTaskUnknown, taskId=12):
        registry.claim(12, 1, devices[0], sender=devices[0])


# ---------------------------------------------------------------------------------------------- split rule


@pytest.mark.parametrize(
    "reward,accepted",
    [
        (3 * 10**18, [2, 0, 1]),
        (10, [3, 1, 4]),  # pools 3, 3, 4 -> shares 1, 3, 1: everything allocated
        (7, [0, 3]),  # pools 3, 4 -> round 1 unpaid, shares of 1 in round 2, 4 wei back
        (10**18 + 1, [3, 3, 2]),
        (1, [1]),
    ],
    ids=["3eth-2-0-1", "10wei", "7wei-2rounds", "odd-wei", "1wei-1round"],
)
def test_split_rule_and_full_payout(publish, registry, chain, devices, payees, stranger, publisher, reward, accepted):
    rounds = len(accepted)
    t, _ = publish(value=reward, maxRounds=rounds)
    for k in accepted:
        t.run_round(accepted=devices[:k], rejected=devices[k : k + 1])
    t.finalize()
    per, refund = expected_split(reward, rounds, accepted)
    paid = 0
    for r, (p, k) in enumerate(zip(per, accepted, strict=True), start=1):
        rec = registry.getRound(t.task_id, r)
        assert (rec.rewardPerAccepted, rec.accepted, rec.settled) == (p, k, True)
        for d in devices[:k]:
            if p:
                registry.claim(t.task_id, r, d, sender=stranger)
                paid += p
    assert registry.getTask(t.task_id).allocated == reward - refund
    assert registry.refundable(t.task_id) == refund
    if refund:
        registry.refund(t.task_id, sender=stranger)
    else:
        with reverts_with(registry.FLTaskNothingToRefund, taskId=t.task_id):
            registry.refund(t.task_id, sender=stranger)
    assert paid + refund == reward
    assert registry.balance == 0


# ---------------------------------------------------------------------------------------------- refund


def test_refund_after_finalize(publish, registry, devices, publisher, stranger, reward):
    t, _ = publish(maxRounds=3, targetAccuracyBp=7_000)
    t.run_round(accepted=devices[:1], accuracy_bp=7_000)  # converges in round 1
    assert registry.refundable(t.task_id) == 0  # not terminal yet
    t.finalize()
    amount = reward - reward // 3  # rounds 2 and 3 never ran
    assert registry.refundable(t.task_id) == amount
    before = publisher.balance
    receipt = registry.refund(t.task_id, sender=stranger)
    assert_event(receipt, registry.Refunded, dict(taskId=t.task_id, publisher=publisher.address, amount=amount))
    assert publisher.balance == before + amount
    assert registry.getTask(t.task_id).refunded == amount
    assert registry.refundable(t.task_id) == 0
    with reverts_with(registry.FLTaskNothingToRefund, taskId=t.task_id):
        registry.refund(t.task_id, sender=publisher)
    registry.claim(t.task_id, 1, devices[0], sender=stranger)
    assert registry.balance == 0


@pytest.mark.parametrize("stage", ["open", "closed", "awaiting"])
def test_refund_before_the_end_reverts(publish, registry, devices, publisher, stage):
    t, _ = publish(maxRounds=1)
    phase = OPEN
    if stage == "closed":
        t.close()
        phase = CLOSED
    elif stage == "awaiting":
        t.run_round(accepted=devices[:1])
        phase = AWAITING_FINALIZE
    with reverts_with(registry.FLTaskWrongPhase, taskId=t.task_id, current=phase, expected=FINALIZED):
        registry.refund(t.task_id, sender=publisher)


def test_refund_unknown_task_reverts(registry, publisher):
    with reverts_with(registry.FLTaskUnknown, taskId=31):
        registry.refund(31, sender=publisher)


# ---------------------------------------------------------------------------------------------- cancel


def test_publisher_withdraws_an_untouched_task(task, registry, publisher, reward):
    receipt = registry.cancel(task.task_id, sender=publisher)
    assert_event(receipt, registry.TaskCancelled, dict(taskId=task.task_id, round=1, phase=OPEN, by=publisher.address))
    assert registry.getState(task.task_id).phase == CANCELLED
    before = publisher.balance
    receipt = registry.refund(task.task_id, sender=publisher)
    assert publisher.balance == before + reward - receipt.total_fees_paid
    assert registry.balance == 0


@pytest.mark.parametrize("case", ["stranger", "oracle", "after-submission", "round-2", "past-deadline"])
def test_an_open_round_cannot_be_cancelled(task, registry, chain, publisher, oracle, stranger, devices, case):
    sender = {"stranger": stranger, "oracle": oracle}.get(case, publisher)
    if case == "after-submission":
        task.submit(devices[0])
    elif case == "round-2":
        task.run_round(accepted=devices[:1])
    elif case == "past-deadline":
        task.submit(devices[0])
        task.warp_past_deadline()  # must be closed first, then it runs the evaluation window
    with reverts_with(registry.FLTaskCannotCancel, taskId=task.task_id, phase=OPEN):
        registry.cancel(task.task_id, sender=sender)


def test_an_oracle_that_judges_its_favourite_and_stalls_cannot_hand_it_the_pool(
    task, registry, chain, devices, payees, stranger, publisher, reward
):
    """The stall rule, attacked by the oracle itself.

    It posts a verdict only for the device it favours and one it rejects, then stops; cancel
    divides by accepted + pending, so the favourite gets the share it would have had if the
    pending device had passed, and the rest goes back to the publisher.
    """
    t = task
    t.run_round(accepted=devices[:1])  # round 1 settled: reward/3 to devices[0]
    for d in devices[:3]:
        t.submit(d, payee=payees[devices.index(d)])
    t.close()
    t.disclose()
    t.verdict(devices[0], 9_000)
    t.verdict(devices[1], 100)  # devices[2] never gets a verdict: the oracle stalls
    deadline = registry.getState(t.task_id).deadline
    with reverts_with(registry.FLTaskDeadlineNotReached, taskId=t.task_id, deadline=deadline):
        registry.cancel(t.task_id, sender=stranger)
    chain.mine(timestamp=deadline + 1)
    receipt = registry.cancel(t.task_id, sender=stranger)
    assert_event(receipt, registry.TaskCancelled, dict(taskId=t.task_id, round=2, phase=CLOSED, by=stranger.address))
    rec = registry.getRound(t.task_id, 2)
    pool = reward // 3
    share = pool // 2  # 1 accepted + 1 pending
    assert (rec.settled, rec.accepted, rec.rewardPerAccepted) == (True, 1, share)
    assert registry.claimable(t.task_id, 1, devices[0]) == pool
    assert registry.claimable(t.task_id, 2, devices[0]) == share  # not the whole pool
    assert registry.claimable(t.task_id, 2, devices[2]) == 0
    assert registry.refundable(t.task_id) == reward - pool - share
    registry.claim(t.task_id, 1, devices[0], sender=stranger)
    registry.claim(t.task_id, 2, devices[0], sender=stranger)
    registry.refund(t.task_id, sender=stranger)
    assert registry.balance == 0


def test_cancel_when_the_test_data_is_never_disclosed(task, registry, chain, devices, stranger, reward):
    task.submit(devices[0])
    task.close()
    task.warp_past_deadline()
    registry.cancel(task.task_id, sender=stranger)
    assert registry.refundable(task.task_id) == reward


def test_cancel_when_finalize_is_missed(publish, registry, chain, devices, stranger, reward):
    t, _ = publish(maxRounds=1)
    t.run_round(accepted=devices[:2])
    deadline = registry.getState(t.task_id).deadline
    assert deadline > 0
    with reverts_with(registry.FLTaskDeadlineNotReached, taskId=t.task_id, deadline=deadline):
        registry.cancel(t.task_id, sender=stranger)
    t.warp_past_deadline()
    receipt = registry.cancel(t.task_id, sender=stranger)
    assert_event(
        receipt, registry.TaskCancelled, dict(taskId=t.task_id, round=1, phase=AWAITING_FINALIZE, by=stranger.address)
    )
    for d in devices[:2]:
        registry.claim(t.task_id, 1, d, sender=stranger)
    with reverts_with(registry.FLTaskNothingToRefund, taskId=t.task_id):
        registry.refund(t.task_id, sender=stranger)
    assert registry.balance == 0


@pytest.mark.parametrize("end", [FINALIZED, CANCELLED])
def test_a_finished_task_cannot_be_cancelled(publish, registry, devices, publisher, end):
    t, _ = publish(maxRounds=1)
    if end == FINALIZED:
        t.run_round(accepted=devices[:1])
        t.finalize()
    else:
        registry.cancel(t.task_id, sender=publisher)
    with reverts_with(registry.FLTaskCannotCancel, taskId=t.task_id, phase=end):
        registry.cancel(t.task_id, sender=publisher)


def test_cancel_unknown_task_reverts(registry, publisher):
    with reverts_with(registry.FLTaskUnknown, taskId=13):
        registry.cancel(13, sender=publisher)


# ---------------------------------------------------------------------------------------------- hostile recipients

ACCEPT, REJECT, REENTER_CLAIM, REENTER_REFUND = range(4)


@pytest.fixture
def payee_contract(project, deployer):
    return deployer.deploy(project.FLTestPayee)


def _settle_two_accepted(t, devices, payee):
    """Round 1 settled with two accepted submissions, the first naming ``payee``."""
    t.submit(devices[0], payee=payee)
    t.submit(devices[1])
    t.close()
    t.disclose()
    t.verdict(devices[0], 9_000)
    t.verdict(devices[1], 9_000)
    t.aggregate()


@pytest.mark.parametrize("mode", [REJECT, REENTER_CLAIM, REENTER_REFUND])
def test_a_hostile_payee_only_blocks_itself(task, registry, devices, stranger, payee_contract, mode, reward):
    t = task
    _settle_two_accepted(t, devices, payee_contract)
    payee_contract.configure(mode, registry, t.task_id, 1, devices[0], sender=stranger)
    # No reentrancy guard: the share is marked claimed before the transfer, so a payee that
    # re-enters claim finds nothing to claim, and one that re-enters refund finds the task running.
    if mode == REJECT:
        ctx = reverts_with(payee_contract.FLTestPayeeRejected)
    elif mode == REENTER_CLAIM:
        ctx = reverts_with(registry.FLTaskNothingToClaim, taskId=t.task_id, round=1, device=devices[0].address)
    else:
        ctx = reverts_with(registry.FLTaskWrongPhase, taskId=t.task_id)
    with ctx:
        registry.claim(t.task_id, 1, devices[0], sender=stranger)
    share = reward // 3 // 2
    assert registry.getVerdict(t.task_id, 1, devices[0]).status == S_ACCEPTED  # nothing lost
    registry.claim(t.task_id, 1, devices[1], sender=stranger)  # others are unaffected
    payee_contract.configure(ACCEPT, registry, t.task_id, 1, devices[0], sender=stranger)
    registry.claim(t.task_id, 1, devices[0], sender=stranger)
    assert payee_contract.received() == share
    assert payee_contract.balance == share


def test_a_reentrant_publisher_cannot_refund_twice(registry, oracle, testset, stranger, payee_contract, reward):
    p = Params.for_testset(oracle, testset)
    data = registry.publish.encode_input(p.as_tuple())
    payee_contract.execute(registry, data, value=reward, sender=stranger)
    task_id = registry.taskCount()
    assert registry.getTask(task_id).publisher == payee_contract.address
    payee_contract.execute(registry, registry.cancel.encode_input(task_id), sender=stranger)
    payee_contract.configure(REENTER_REFUND, registry, task_id, 0, stranger, sender=stranger)
    with reverts_with(registry.FLTaskNothingToRefund, taskId=task_id):  # `refunded` grew before the transfer
        registry.refund(task_id, sender=stranger)
    payee_contract.configure(ACCEPT, registry, task_id, 0, stranger, sender=stranger)
    registry.refund(task_id, sender=stranger)
    assert payee_contract.balance == reward
    assert registry.balance == 0


def test_a_payee_that_can_never_receive_does_not_lock_the_share(
    task, registry, devices, stranger, payee_contract, reward
):
    """The attack: name (or be tricked into naming) a payee that reverts on receive, for good.

    Before ``setPayee``, such a share stayed in the contract forever (claim reverted with the
    payee's error and nothing could redirect it). Now the device that submitted redirects it; no
    one else can, and the redirected share is paid exactly once.
    """
    t = task
    _settle_two_accepted(t, devices, payee_contract)
    payee_contract.configure(REJECT, registry, t.task_id, 1, devices[0], sender=stranger)  # it never accepts ETH
    with reverts_with(payee_contract.FLTestPayeeRejected):
        registry.claim(t.task_id, 1, devices[0], sender=stranger)
    with reverts_with(registry.FLTaskNothingToClaim, device=stranger.address):
        registry.setPayee(t.task_id, 1, stranger, sender=stranger)  # a stranger cannot take it
    with reverts_with(registry.FLTaskInvalidParameter, name="newPayee"):
        registry.setPayee(t.task_id, 1, "0x" + "00" * 20, sender=devices[0])
    receipt = registry.setPayee(t.task_id, 1, devices[2], sender=devices[0])
    assert_event(
        receipt,
        registry.PayeeChanged,
        dict(
            taskId=t.task_id,
            round=1,
            device=devices[0].address,
            previousPayee=payee_contract.address,
            newPayee=devices[2].address,
        ),
    )
    before = devices[2].balance
    registry.claim(t.task_id, 1, devices[0], sender=stranger)
    assert devices[2].balance - before == reward // 3 // 2  # the round's pool (a third) split between two
    with reverts_with(registry.FLTaskNothingToClaim):
        registry.setPayee(t.task_id, 1, devices[3], sender=devices[0])  # claimed: nothing left to redirect
    with reverts_with(registry.FLTaskNothingToClaim):
        registry.claim(t.task_id, 1, devices[0], sender=stranger)
