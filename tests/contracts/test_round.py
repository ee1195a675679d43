"""The round's functions: closing, disclosure, verdicts, aggregation and finalization.

closeSubmissions, discloseTestData (disclosure_test_data), postVerdict (evaluate_local_model),
aggregate (aggregate_model_update + evaluate_model), finalize (finalize_contract + post_evaluation).
"""

import pytest

from fltask_harness import (
    AWAITING_FINALIZE,
    CLOSED,
    EVALUATION_WINDOW,
    EVALUATOR,
    FINALIZED,
    OPEN,
    REASON_BELOW_THRESHOLD,
    REASON_OK,
    ROUND_DURATION,
    S_ACCEPTED,
    S_NONE,
    S_REJECTED,
    ZERO32,
    assert_event,
    h,
    make_testset,
    model_uri,
    next_block_at,
    reverts_with,
)

# ---------------------------------------------------------------------------------------------- close


def test_oracle_closes_any_time(task, registry, devices):
    task.submit(devices[0])
    task.submit(devices[1])
    receipt = task.close()
    window_end = receipt.timestamp + EVALUATION_WINDOW
    assert_event(
        receipt,
        registry.SubmissionsClosed,
        dict(taskId=task.task_id, round=1, submissions=2, evaluationDeadline=window_end),
    )
    s = registry.getState(task.task_id)
    assert (s.phase, s.deadline, s.submissions) == (CLOSED, window_end, 2)
    assert registry.getRound(task.task_id, 1).submissions == 0  # recorded at settlement


def test_a_round_without_submissions_can_close(task, registry):
    receipt = task.close()
    assert [log.submissions for log in receipt.decode_logs(registry.SubmissionsClosed)] == [0]


@pytest.mark.parametrize("who", ["publisher", "stranger"])
def test_others_close_only_after_the_deadline(task, registry, chain, publisher, stranger, who):
    sender = publisher if who == "publisher" else stranger
    deadline = registry.getState(task.task_id).deadline
    with reverts_with(registry.FLTaskDeadlineNotReached, taskId=task.task_id, deadline=deadline):
        task.close(sender=sender)
    next_block_at(chain, deadline)  # at the deadline: not past it yet
    with reverts_with(registry.FLTaskDeadlineNotReached, taskId=task.task_id, deadline=deadline):
        task.close(sender=sender)
    next_block_at(chain, deadline + 1)
    receipt = task.close(sender=sender)
    assert receipt.timestamp == deadline + 1
    assert registry.getState(task.task_id).phase == CLOSED


def test_close_twice_reverts(task, registry):
    task.close()
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=CLOSED, expected=OPEN):
        task.close()


def test_close_unknown_task_reverts(registry, oracle):
    with reverts_with(registry.FLTaskUnknown, taskId=77):
        registry.closeSubmissions(77, sender=oracle)


# ---------------------------------------------------------------------------------------------- disclose


@pytest.fixture
def closed(task, devices):
    """Round 1 with two submissions, closed."""
    task.submit(devices[0])
    task.submit(devices[1])
    task.close()
    return task


@pytest.mark.parametrize("who", ["publisher", "oracle"])
def test_disclosure_reveals_seed_once_and_the_rounds_groups(closed, registry, publisher, oracle, devices, who):
    t = closed
    sender = publisher if who == "publisher" else oracle
    groups = t.ts.disclosure(1)
    receipt = t.disclose(sender=sender)
    assert_event(receipt, registry.SeedRevealed, dict(taskId=t.task_id, seed=t.ts.seed))
    assert_event(
        receipt,
        registry.TestDataDisclosed,
        [
            dict(taskId=t.task_id, round=1, groupIndex=g.index, salt=g.salt, groupHash=g.group_hash, uri=g.uri)
            for g in groups
        ],
    )
    assert registry.getRound(t.task_id, 1).disclosed
    c = registry.getTask(t.task_id)
    assert c.seedRevealed and bytes(c.seed) == t.ts.seed

    # Round 2: its own groups, no second SeedRevealed.
    for d in devices[:2]:
        t.verdict(d, 9_000)
    t.aggregate()
    t.submit(devices[0])
    t.close()
    receipt = t.disclose(sender=sender)
    assert len(list(receipt.decode_logs(registry.SeedRevealed))) == 0
    assert [log.groupIndex for log in receipt.decode_logs(registry.TestDataDisclosed)] == t.ts.round_indices(2)
    assert set(t.ts.round_indices(1)).isdisjoint(t.ts.round_indices(2))


@pytest.mark.parametrize("num_groups,per_round", [(1, 1), (2, 1), (5, 2), (7, 3), (16, 4)])
def test_disclosure_verifies_for_any_tree_shape(publish, registry, devices, num_groups, per_round):
    ts = make_testset(num_groups=num_groups, groups_per_round=per_round, seed=num_groups)
    t, _ = publish(ts=ts)
    for r in range(1, ts.max_rounds + 1):
        t.close()
        receipt = t.disclose()
        assert [log.groupIndex for log in receipt.decode_logs(registry.TestDataDisclosed)] == ts.round_indices(r)
        t.aggregate()
    assert registry.getState(t.task_id).phase == AWAITING_FINALIZE


def test_disclosure_by_others_reverts(closed, registry, stranger, devices):
    for sender in (stranger, devices[0]):
        with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
            closed.disclose(sender=sender)


def test_disclosure_while_open_reverts(task, registry, publisher):
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=OPEN, expected=CLOSED):
        task.disclose()


def test_disclosure_twice_reverts(closed, registry):
    closed.disclose()
    with reverts_with(registry.FLTaskAlreadyDisclosed, taskId=closed.task_id, round=1):
        closed.disclose()


def test_disclosure_with_wrong_seed_reverts(closed, registry, publisher):
    with reverts_with(registry.FLTaskBadSeed, taskId=closed.task_id):
        registry.discloseTestData(closed.task_id, h("not the seed"), closed.disclosure(1), sender=publisher)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_disclosure_with_wrong_group_count_reverts(closed, registry, publisher, count):
    groups = (closed.disclosure(1) * 2)[:count]
    with reverts_with(registry.FLTaskWrongGroupCount, expected=2, given=count):
        registry.discloseTestData(closed.task_id, closed.ts.seed, groups, sender=publisher)


def test_disclosure_of_another_rounds_groups_reverts(closed, registry, publisher):
    want, other = closed.ts.round_indices(1), closed.ts.round_indices(2)
    with reverts_with(registry.FLTaskWrongGroup, expectedIndex=want[0], givenIndex=other[0]):
        registry.discloseTestData(closed.task_id, closed.ts.seed, closed.disclosure(2), sender=publisher)


def test_disclosure_out_of_slot_order_reverts(closed, registry, publisher):
    groups = closed.disclosure(1)
    want = closed.ts.round_indices(1)
    with reverts_with(registry.FLTaskWrongGroup, expectedIndex=want[0], givenIndex=want[1]):
        registry.discloseTestData(closed.task_id, closed.ts.seed, groups[::-1], sender=publisher)


@pytest.mark.parametrize("tamper", ["salt", "groupHash", "proof-element", "proof-short", "proof-long", "group-1"])
def test_disclosure_with_bad_proof_reverts(closed, registry, publisher, tamper):
    groups = [list(g) for g in closed.disclosure(1)]
    target = groups[1] if tamper == "group-1" else groups[0]
    if tamper in ("salt", "group-1"):
        target[1] = h("forged salt")
    elif tamper == "groupHash":
        target[2] = h("forged data")
    elif tamper == "proof-element":
        target[4] = [h("x")] + target[4][1:]
    elif tamper == "proof-short":
        target[4] = target[4][:-1]
    else:
        target[4] = target[4] + [h("extra")]
    with reverts_with(registry.FLTaskInvalidGroupProof, index=target[0]):
        registry.discloseTestData(closed.task_id, closed.ts.seed, [tuple(g) for g in groups], sender=publisher)


def test_disclosure_accepts_any_uri(closed, registry, publisher):
    groups = [list(g) for g in closed.disclosure(1)]
    groups[0][3] = "https://mirror.example/group"  # the URI is not committed, only announced
    receipt = registry.discloseTestData(closed.task_id, closed.ts.seed, [tuple(g) for g in groups], sender=publisher)
    assert [log.uri for log in receipt.decode_logs(registry.TestDataDisclosed)][0] == "https://mirror.example/group"


def test_disclosure_of_unknown_task_reverts(registry, publisher, testset):
    with reverts_with(registry.FLTaskUnknown, taskId=8):
        registry.discloseTestData(8, testset.seed, [], sender=publisher)


# ---------------------------------------------------------------------------------------------- verdicts


@pytest.fixture
def disclosed(closed):
    closed.disclose()
    return closed


@pytest.mark.parametrize("accuracy", [6_000, 6_001, 10_000])
def test_accepted_verdict(disclosed, registry, oracle, devices, accuracy):
    t, d = disclosed, devices[0]
    receipt = t.verdict(d, accuracy)
    mh, payee, _, _ = t.subs[1][d.address]
    assert_event(
        receipt,
        registry.VerdictPosted,
        dict(
            taskId=t.task_id,
            round=1,
            device=d.address,
            modelHash=mh,
            accuracyBp=accuracy,
            reason=REASON_OK,
            accepted=True,
            evaluatorHash=EVALUATOR,
        ),
    )
    v = registry.getVerdict(t.task_id, 1, d)
    assert (v.payee, v.accuracyBp, v.reason, v.status) == (payee, accuracy, REASON_OK, S_ACCEPTED)
    s = registry.getState(t.task_id)
    assert (s.verdicts, s.accepted) == (1, 1)
    assert registry.claimable(t.task_id, 1, d) == 0  # not before the round is settled


@pytest.mark.parametrize(
    "accuracy,reason,stored_reason",
    [
        (5_999, REASON_OK, REASON_BELOW_THRESHOLD),  # the contract applies the threshold
        (0, REASON_OK, REASON_BELOW_THRESHOLD),
        (5_999, REASON_BELOW_THRESHOLD, REASON_BELOW_THRESHOLD),
        *[(10_000, r, r) for r in range(2, 9)],  # any failure reason rejects, whatever the accuracy
        (0, 7, 7),
    ],
)
def test_rejected_verdict(disclosed, registry, devices, accuracy, reason, stored_reason):
    t, d = disclosed, devices[0]
    receipt = t.verdict(d, accuracy, reason)
    args = [dict(log.event_arguments) for log in receipt.decode_logs(registry.VerdictPosted)]
    assert [(a["accuracyBp"], a["reason"], a["accepted"]) for a in args] == [(accuracy, stored_reason, False)]
    v = registry.getVerdict(t.task_id, 1, d)
    assert (v.reason, v.status) == (stored_reason, S_REJECTED)
    s = registry.getState(t.task_id)
    assert (s.verdicts, s.accepted) == (1, 0)


@pytest.mark.parametrize("who", ["publisher", "stranger", "device"])
def test_verdicts_only_from_the_oracle(disclosed, registry, publisher, stranger, devices, who):
    sender = {"publisher": publisher, "stranger": stranger, "device": devices[0]}[who]
    with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
        disclosed.verdict(devices[0], 9_000, sender=sender)
    assert registry.getVerdict(disclosed.task_id, 1, devices[0]).status == S_NONE


def test_verdict_while_open_reverts(task, registry, devices):
    task.submit(devices[0])
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=OPEN, expected=CLOSED):
        task.verdict(devices[0], 9_000)


def test_verdict_before_disclosure_reverts(closed, registry, devices):
    with reverts_with(registry.FLTaskNotDisclosed, taskId=closed.task_id, round=1):
        closed.verdict(devices[0], 9_000)


def test_verdict_without_submission_reverts(disclosed, registry, oracle, devices):
    t = disclosed
    sub = t.subs[1][devices[0].address]
    with reverts_with(registry.FLTaskNoSubmission, taskId=t.task_id, round=1, device=devices[2].address):
        registry.postVerdict(t.task_id, devices[2], sub, 9_000, 0, EVALUATOR, sender=oracle)


@pytest.mark.parametrize("field", ["modelHash", "payee", "thresholdBp", "numSamples"])
def test_verdict_on_a_different_submission_reverts(disclosed, registry, oracle, devices, payees, field):
    t, d = disclosed, devices[0]
    sub = list(t.subs[1][d.address])
    i = ["modelHash", "payee", "thresholdBp", "numSamples"].index(field)
    sub[i] = {0: h("forged"), 1: payees[5].address, 2: 0, 3: sub[3] + 1}[i]
    with reverts_with(registry.FLTaskCommitmentMismatch, taskId=t.task_id, round=1, device=d.address):
        registry.postVerdict(t.task_id, d, tuple(sub), 9_000, 0, EVALUATOR, sender=oracle)


def test_second_verdict_reverts(disclosed, registry, devices):
    disclosed.verdict(devices[0], 9_000)
    with reverts_with(
        registry.FLTaskVerdictAlreadyPosted, taskId=disclosed.task_id, round=1, device=devices[0].address
    ):
        disclosed.verdict(devices[0], 1_000)


@pytest.mark.parametrize(
    "accuracy,reason",
    [
        (10_001, 0),
        (65_535, 2),
        (5_000, 11),
        (5_000, 255),
        (6_000, REASON_BELOW_THRESHOLD),
        (9_000, REASON_BELOW_THRESHOLD),
    ],
)
def test_invalid_verdict_reverts(disclosed, registry, devices, accuracy, reason):
    with reverts_with(registry.FLTaskInvalidVerdict, accuracyBp=accuracy, reason=reason):
        disclosed.verdict(devices[0], accuracy, reason)


def test_verdict_on_unknown_task_reverts(registry, oracle, devices):
    with reverts_with(registry.FLTaskUnknown, taskId=4):
        registry.postVerdict(4, devices[0], (h("m"), devices[0].address, 0, 0), 1, 0, EVALUATOR, sender=oracle)


# ---------------------------------------------------------------------------------------------- aggregate


@pytest.fixture
def judged(disclosed, devices):
    """Round 1: devices[0] accepted, devices[1] rejected."""
    disclosed.verdict(devices[0], 9_000)
    disclosed.verdict(devices[1], 1_000)
    return disclosed


def test_aggregate_settles_and_opens_next_round(judged, registry, reward):
    t = judged
    new = h("global-1")
    receipt = t.aggregate(7_100, model_hash=new)
    per = reward // 3  # three rounds, one accepted submission
    assert_event(
        receipt,
        registry.GlobalModelUpdated,
        dict(
            taskId=t.task_id,
            round=1,
            modelHash=new,
            modelURI=model_uri(new),
            acceptedCount=1,
            globalAccuracyBp=7_100,
            rewardPerAccepted=per,
        ),
    )
    assert_event(
        receipt,
        registry.RoundOpened,
        dict(
            taskId=t.task_id,
            round=2,
            globalModelHash=new,
            globalModelURI=model_uri(new),
            deadline=receipt.timestamp + ROUND_DURATION,
        ),
    )
    rec = registry.getRound(t.task_id, 1)
    assert (bytes(rec.globalModelHash), rec.rewardPerAccepted, rec.submissions, rec.accepted) == (new, per, 2, 1)
    assert (rec.globalAccuracyBp, rec.disclosed, rec.settled) == (7_100, True, True)
    assert bytes(registry.getTask(t.task_id).globalModelHash) == new
    assert registry.getTask(t.task_id).allocated == per
    s = registry.getState(t.task_id)
    assert (s.phase, s.round, s.submissions, s.verdicts, s.accepted) == (OPEN, 2, 0, 0, 0)
    assert s.deadline == receipt.timestamp + ROUND_DURATION


def test_last_round_awaits_finalize(publish, registry, devices, reward):
    t, _ = publish(maxRounds=1)
    receipt = t.run_round(accepted=devices[:2], rejected=devices[2:3])
    s = registry.getState(t.task_id)
    assert (s.phase, s.round) == (AWAITING_FINALIZE, 1)
    assert s.deadline == receipt.timestamp + EVALUATION_WINDOW
    assert list(receipt.decode_logs(registry.RoundOpened)) == []
    assert [log.rewardPerAccepted for log in receipt.decode_logs(registry.GlobalModelUpdated)] == [reward // 2]


@pytest.mark.parametrize("target,accuracy,converged", [(7_000, 6_999, False), (7_000, 7_000, True), (0, 10_000, False)])
def test_convergence_ends_the_task_early(publish, registry, devices, target, accuracy, converged):
    t, _ = publish(targetAccuracyBp=target)
    t.run_round(accepted=devices[:1], accuracy_bp=accuracy)
    assert registry.getState(t.task_id).phase == (AWAITING_FINALIZE if converged else OPEN)


def test_round_without_accepted_updates_keeps_the_model(judged, registry, devices):
    t = judged
    t.aggregate()  # round 1: one accepted
    t.submit(devices[0])
    t.close()
    t.disclose()
    t.verdict(devices[0], 100)
    before = bytes(registry.getTask(t.task_id).globalModelHash)
    with reverts_with(registry.FLTaskInvalidParameter, name="modelHash"):
        t.aggregate(model_hash=h("a model from nowhere"))
    receipt = t.aggregate(model_hash=before)
    updated = receipt.decode_logs(registry.GlobalModelUpdated)
    assert [(log.acceptedCount, log.rewardPerAccepted) for log in updated] == [(0, 0)]
    assert bytes(registry.getTask(t.task_id).globalModelHash) == before


@pytest.mark.parametrize("who", ["publisher", "stranger"])
def test_aggregate_only_by_oracle(judged, registry, publisher, stranger, who):
    sender = publisher if who == "publisher" else stranger
    with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
        judged.aggregate(sender=sender)


def test_aggregate_while_open_reverts(task, registry):
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=OPEN, expected=CLOSED):
        task.aggregate(model_hash=h("m"))


def test_aggregate_before_disclosure_reverts(closed, registry):
    with reverts_with(registry.FLTaskNotDisclosed, taskId=closed.task_id, round=1):
        closed.aggregate(model_hash=h("m"))


def test_aggregate_with_pending_verdicts_reverts(disclosed, registry, devices):
    disclosed.verdict(devices[0], 9_000)
    with reverts_with(registry.FLTaskVerdictsPending, verdicts=1, submissions=2):
        disclosed.aggregate(model_hash=h("m"))


@pytest.mark.parametrize(
    "model_hash,accuracy,name", [(ZERO32, 7_000, "modelHash"), (b"\x01" * 32, 10_001, "globalAccuracyBp")]
)
def test_aggregate_invalid_parameter_reverts(judged, registry, model_hash, accuracy, name):
    with reverts_with(registry.FLTaskInvalidParameter, name=name):
        judged.aggregate(accuracy, model_hash=model_hash)


def test_aggregate_unknown_task_reverts(registry, oracle):
    with reverts_with(registry.FLTaskUnknown, taskId=6):
        registry.aggregate(6, h("m"), "u", 1, h("s"), h("k"), sender=oracle)


# ---------------------------------------------------------------------------------------------- finalize


@pytest.fixture
def awaiting(publish, devices):
    t, _ = publish(maxRounds=1)
    t.run_round(accepted=devices[:1])
    return t


def test_finalize_posts_the_report(awaiting, registry):
    receipt = awaiting.finalize(7_600)
    assert_event(
        receipt,
        registry.TaskFinalized,
        dict(
            taskId=awaiting.task_id, rounds=1, finalAccuracyBp=7_600, reportHash=h("report"), reportURI="blob://report"
        ),
    )
    assert registry.getState(awaiting.task_id).phase == FINALIZED


@pytest.mark.parametrize("who", ["publisher", "stranger"])
def test_finalize_only_by_oracle(awaiting, registry, publisher, stranger, who):
    sender = publisher if who == "publisher" else stranger
    with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
        awaiting.finalize(sender=sender)


@pytest.mark.parametrize("stage", ["open", "closed", "finalized"])
def test_finalize_in_wrong_phase_reverts(task, awaiting, registry, devices, stage):
    if stage == "finalized":
        awaiting.finalize()
        t, current = awaiting, FINALIZED
    else:
        t, current = task, OPEN
        if stage == "closed":
            task.close()
            current = CLOSED
    with reverts_with(registry.FLTaskWrongPhase, taskId=t.task_id, current=current, expected=AWAITING_FINALIZE):
        t.finalize()


def test_finalize_invalid_accuracy_reverts(awaiting, registry):
    with reverts_with(registry.FLTaskInvalidParameter, name="finalAccuracyBp"):
        awaiting.finalize(10_001)


def test_finalize_unknown_task_reverts(registry, oracle):
    with reverts_with(registry.FLTaskUnknown, taskId=2):
        registry.finalize(2, 1, ZERO32, "", sender=oracle)


@pytest.mark.parametrize("accuracy", [0, 5_999, 6_000, 10_000])
@pytest.mark.parametrize("reason", [0, 1, 2, 6, 8])
def test_python_acceptance_rule_is_the_contracts(disclosed, registry, devices, accuracy, reason):
    """The Python acceptance rule against what the contract records for the same verdict.

    ``fedoracle.learning.rounds.is_accepted`` / ``verdict_reason`` are what the oracle and the
    experiments decide with.
    """
    from fedoracle.learning.rounds import is_accepted, verdict_reason

    t, d = disclosed, devices[0]
    threshold_bp = t.subs[1][d.address][2]
    if reason == REASON_BELOW_THRESHOLD and accuracy >= threshold_bp:  # a score never says so: refused
        with reverts_with(registry.FLTaskInvalidVerdict, accuracyBp=accuracy, reason=reason):
            t.verdict(d, accuracy, reason)
        return
    t.verdict(d, accuracy, reason)
    v = registry.getVerdict(t.task_id, 1, d)
    assert (v.status == S_ACCEPTED) == is_accepted(reason, accuracy, threshold_bp)
    assert v.reason == verdict_reason(reason, accuracy, threshold_bp)
