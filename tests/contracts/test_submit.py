"""submit (submit_model_update), announceThreshold, setAllowlist / isAllowlisted."""

import pytest

from fedoracle.commitments import submission_commitment as commitment
from fedoracle.units import BP

from fltask_harness import (
    CLOSED,
    EVALUATION_WINDOW,
    MAX_SAMPLES,
    OPEN,
    REASON_BELOW_THRESHOLD,
    S_ACCEPTED,
    S_REJECTED,
    ZERO32,
    ZERO_ADDRESS,
    assert_event,
    h,
    model_uri,
    next_block_at,
    reverts_with,
)

# ---------------------------------------------------------------------------------------------- submit


@pytest.mark.parametrize("num_samples", [1, MAX_SAMPLES])
def test_submit_stores_commitment_and_emits(task, registry, devices, payees, num_samples):
    device, payee = devices[0], payees[0]
    mh = h("update")
    uri = model_uri(mh)
    receipt = registry.submit(task.task_id, mh, uri, payee, num_samples, BP, 7_991, sender=device)

    assert_event(
        receipt,
        registry.ModelSubmitted,
        dict(
            taskId=task.task_id,
            round=1,
            device=device.address,
            payee=payee.address,
            modelHash=mh,
            modelURI=uri,
            thresholdBp=6_000,
            numSamples=num_samples,
            epsilonSpentMilli=7_991,
        ),
    )
    expected = commitment(mh, payee, 6_000, num_samples)
    assert expected[0] == 0  # the top byte is the verdict's mark, never a commitment's
    assert bytes(registry.getCommitment(task.task_id, 1, device)) == expected
    assert bytes(registry.submissionCommitment(mh, payee, 6_000, num_samples)) == expected
    assert registry.getState(task.task_id).submissions == 1
    assert bytes(registry.getCommitment(task.task_id, 1, devices[1])) == ZERO32


@pytest.mark.parametrize("declared", [0, MAX_SAMPLES + 1, 2**32 - 1])
def test_a_declared_sample_count_outside_the_tasks_bound_is_refused(task, registry, devices, declared):
    """An unbounded numSamples would hijack FedAvg: the contract refuses it.

    The attacker declares 2^32 - 1 samples to carry all of FedAvg's weight, or 0 to switch the
    weighting off for everyone: both revert, and nothing is recorded.
    """
    with reverts_with(registry.FLTaskInvalidParameter, name="numSamples"):
        registry.submit(task.task_id, h("greedy"), "u", devices[0], declared, BP, 0, sender=devices[0])
    assert registry.getState(task.task_id).submissions == 0
    assert bytes(registry.getCommitment(task.task_id, 1, devices[0])) == ZERO32


def test_submissions_count_and_a_device_may_submit_again_next_round(task, registry, devices):
    for d in devices[:3]:
        task.submit(d)
    assert registry.getState(task.task_id).submissions == 3
    task.close()
    task.disclose()
    for d in devices[:3]:
        task.verdict(d, 9_000)
    task.aggregate()
    assert registry.getState(task.task_id).round == 2
    assert registry.getState(task.task_id).submissions == 0
    task.submit(devices[0])  # new round, new slot
    assert registry.getState(task.task_id).submissions == 1


def test_submit_unknown_task_reverts(registry, devices):
    with reverts_with(registry.FLTaskUnknown, taskId=9):
        registry.submit(9, h("m"), "u", devices[0], 1, BP, 0, sender=devices[0])


def test_submit_twice_in_a_round_reverts(task, registry, devices):
    task.submit(devices[0])
    with reverts_with(registry.FLTaskDuplicateSubmission, taskId=task.task_id, round=1, device=devices[0].address):
        task.submit(devices[0], model_hash=h("other"))


def test_submit_after_close_reverts(task, registry, devices):
    task.submit(devices[0])
    task.close()
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=CLOSED, expected=OPEN):
        task.submit(devices[1])


def test_submit_at_deadline_is_accepted_and_after_it_reverts(task, registry, chain, devices):
    deadline = registry.getState(task.task_id).deadline
    next_block_at(chain, deadline)
    receipt = task.submit(devices[0])
    assert receipt.timestamp == deadline
    next_block_at(chain, deadline + 1)
    with reverts_with(registry.FLTaskDeadlinePassed, taskId=task.task_id, deadline=deadline):
        task.submit(devices[1])


@pytest.mark.parametrize("field,name", [("model_hash", "modelHash"), ("payee", "payee")])
def test_submit_rejects_zero_hash_or_payee(task, registry, devices, field, name):
    kwargs = {"model_hash": ZERO32, "payee": devices[0]} if field == "model_hash" else {}
    mh = kwargs.get("model_hash", h("m"))
    payee = ZERO_ADDRESS if field == "payee" else devices[0]
    with reverts_with(registry.FLTaskInvalidParameter, name=name):
        registry.submit(task.task_id, mh, "u", payee, 1, BP, 0, sender=devices[0])


def test_a_full_round_refuses_more_and_anyone_closes_it(publish, registry, devices, stranger):
    """The submission that fills the round pays what every other does: it no longer closes it.

    A third submission is refused with ``FLTaskRoundFull``; anyone may close a full round before
    its deadline (nobody else could before the deadline), and the oracle's daemon does so at once.
    """
    t, _ = publish(maxSubmissionsPerRound=2)
    first = t.submit(devices[0])
    last = t.submit(devices[1])
    assert last.gas_used == first.gas_used  # constant submit gas, the last submitter included
    s = registry.getState(t.task_id)
    assert s.phase == OPEN and s.submissions == 2
    with reverts_with(registry.FLTaskRoundFull, taskId=t.task_id, round=1, maxSubmissions=2):
        t.submit(devices[2])
    receipt = registry.closeSubmissions(t.task_id, sender=stranger)  # before the deadline: the round is full
    s = registry.getState(t.task_id)
    assert s.phase == CLOSED
    assert s.deadline == receipt.timestamp + EVALUATION_WINDOW
    assert_event(
        receipt,
        registry.SubmissionsClosed,
        dict(taskId=t.task_id, round=1, submissions=2, evaluationDeadline=receipt.timestamp + EVALUATION_WINDOW),
    )
    with reverts_with(registry.FLTaskWrongPhase, taskId=t.task_id, current=CLOSED, expected=OPEN):
        t.submit(devices[2])


def test_a_round_below_its_cap_is_not_closed_by_a_stranger(publish, registry, devices, stranger):
    t, _ = publish(maxSubmissionsPerRound=2)
    t.submit(devices[0])
    with reverts_with(registry.FLTaskDeadlineNotReached, taskId=t.task_id):
        registry.closeSubmissions(t.task_id, sender=stranger)


# ---------------------------------------------------------------------------------------------- allowlist


def test_allowlist_gates_submissions(publish, registry, publisher, devices):
    t, _ = publish(allowlistOnly=True)
    assert registry.getState(t.task_id).allowlistOnly
    with reverts_with(registry.FLTaskNotAllowlisted, taskId=t.task_id, device=devices[0].address):
        t.submit(devices[0])

    receipt = registry.setAllowlist(t.task_id, [devices[0], devices[1]], True, sender=publisher)
    assert_event(
        receipt,
        registry.AllowlistUpdated,
        [
            dict(taskId=t.task_id, device=devices[0].address, allowed=True),
            dict(taskId=t.task_id, device=devices[1].address, allowed=True),
        ],
    )
    assert registry.isAllowlisted(t.task_id, devices[0]) and registry.isAllowlisted(t.task_id, devices[1])
    assert not registry.isAllowlisted(t.task_id, devices[2])
    t.submit(devices[0])

    receipt = registry.setAllowlist(t.task_id, [devices[1]], False, sender=publisher)
    assert_event(receipt, registry.AllowlistUpdated, dict(taskId=t.task_id, device=devices[1].address, allowed=False))
    assert not registry.isAllowlisted(t.task_id, devices[1])
    with reverts_with(registry.FLTaskNotAllowlisted, taskId=t.task_id, device=devices[1].address):
        t.submit(devices[1])


def test_allowlist_is_ignored_for_open_tasks(task, registry, publisher, devices):
    registry.setAllowlist(task.task_id, [devices[0]], False, sender=publisher)
    task.submit(devices[0])


@pytest.mark.parametrize("who", ["oracle", "stranger", "device"])
def test_only_the_publisher_sets_the_allowlist(task, registry, oracle, stranger, devices, who):
    sender = {"oracle": oracle, "stranger": stranger, "device": devices[0]}[who]
    with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
        registry.setAllowlist(task.task_id, [devices[0]], True, sender=sender)


def test_allowlist_of_unknown_task_reverts(registry, publisher, devices):
    with reverts_with(registry.FLTaskUnknown, taskId=3):
        registry.setAllowlist(3, [devices[0]], True, sender=publisher)


# ---------------------------------------------------------------------------------------------- threshold


@pytest.mark.parametrize("who", ["publisher", "oracle"])
def test_threshold_is_raised_in_real_time(task, registry, publisher, oracle, who):
    sender = publisher if who == "publisher" else oracle
    receipt = registry.announceThreshold(task.task_id, 7_500, sender=sender)
    assert_event(
        receipt, registry.ThresholdAnnounced, dict(taskId=task.task_id, round=1, previousBp=6_000, thresholdBp=7_500)
    )
    assert registry.getState(task.task_id).thresholdBp == 7_500
    registry.announceThreshold(task.task_id, 10_000, sender=sender)
    assert registry.getState(task.task_id).thresholdBp == 10_000


@pytest.mark.parametrize("proposed", [0, 5_999, 6_000, 10_001, 65_535])
def test_threshold_must_go_up_within_bounds(task, registry, publisher, proposed):
    with reverts_with(registry.FLTaskThresholdNotRaised, currentBp=6_000, proposedBp=proposed):
        registry.announceThreshold(task.task_id, proposed, sender=publisher)


def test_threshold_only_by_publisher_or_oracle(task, registry, stranger, devices):
    for sender in (stranger, devices[0]):
        with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
            registry.announceThreshold(task.task_id, 7_000, sender=sender)


def test_threshold_only_while_open(task, registry, publisher, devices):
    task.submit(devices[0])
    task.close()
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=CLOSED, expected=OPEN):
        registry.announceThreshold(task.task_id, 7_000, sender=publisher)


def test_threshold_of_unknown_task_reverts(registry, publisher):
    with reverts_with(registry.FLTaskUnknown, taskId=5):
        registry.announceThreshold(5, 7_000, sender=publisher)


def test_each_submission_is_judged_against_the_threshold_it_saw(task, registry, publisher, devices):
    early, late = devices[0], devices[1]
    task.submit(early)  # threshold 6000
    registry.announceThreshold(task.task_id, 8_000, sender=publisher)
    task.submit(late)  # threshold 8000
    assert task.subs[1][late.address][2] == 8_000
    task.close()
    task.disclose()
    r_early = task.verdict(early, 7_000)
    r_late = task.verdict(late, 7_000)
    assert registry.getVerdict(task.task_id, 1, early).status == S_ACCEPTED
    v = registry.getVerdict(task.task_id, 1, late)
    assert v.status == S_REJECTED and v.reason == REASON_BELOW_THRESHOLD
    assert [log.accepted for log in r_early.decode_logs(registry.VerdictPosted)] == [True]
    assert [log.reason for log in r_late.decode_logs(registry.VerdictPosted)] == [REASON_BELOW_THRESHOLD]
