"""publish (the paper's init()), taskCount/getTask/getState views, and every publish revert."""

import pytest

from fltask_harness import (
    EVALUATION_WINDOW,
    OPEN,
    ROUND_DURATION,
    ZERO32,
    ZERO_ADDRESS,
    Params,
    assert_event,
    reverts_with,
)


def test_publish_escrows_commits_and_opens_round_1(registry, publisher, oracle, testset, reward):
    p = Params.for_testset(oracle, testset, maxSubmissionsPerRound=5, targetAccuracyBp=9_000, privacyMode=2)
    assert registry.taskCount() == 0
    receipt = registry.publish(p.as_tuple(), value=reward, sender=publisher)

    assert registry.taskCount() == 1
    assert registry.balance == reward
    assert_event(
        receipt,
        registry.TaskPublished,
        dict(
            taskId=1,
            publisher=publisher.address,
            oracle=oracle.address,
            reward=reward,
            modelSpecHash=p.modelSpecHash,
            initialModelHash=p.initialModelHash,
            initialModelURI=p.initialModelURI,
            thresholdBp=p.thresholdBp,
            maxRounds=p.maxRounds,
        ),
    )
    deadline = receipt.timestamp + ROUND_DURATION
    assert_event(
        receipt,
        registry.RoundOpened,
        dict(
            taskId=1, round=1, globalModelHash=p.initialModelHash, globalModelURI=p.initialModelURI, deadline=deadline
        ),
    )

    c = registry.getTask(1)
    assert c.publisher == publisher.address and c.oracle == oracle.address
    assert c.reward == reward
    assert bytes(c.modelSpecHash) == p.modelSpecHash
    assert bytes(c.testSetRoot) == testset.root
    assert bytes(c.seedCommitment) == testset.seed_commitment
    assert bytes(c.seed) == ZERO32 and not c.seedRevealed
    assert bytes(c.globalModelHash) == p.initialModelHash
    assert (c.targetAccuracyBp, c.maxRounds, c.groupsPerRound, c.numGroups) == (9_000, 3, 2, 6)
    assert (c.roundDuration, c.evaluationWindow) == (ROUND_DURATION, EVALUATION_WINDOW)
    assert (c.epsilonMilli, c.deltaE18, c.clipMicro) == (p.epsilonMilli, p.deltaE18, p.clipMicro)
    assert (c.allocated, c.refunded) == (0, 0)
    assert c.privacyMode == 2  # the privacy unit and mechanism are part of the task, for devices to obey

    s = registry.getState(1)
    assert (s.phase, s.round, s.thresholdBp, s.allowlistOnly) == (OPEN, 1, p.thresholdBp, False)
    assert (s.submissions, s.verdicts, s.accepted, s.maxSubmissions) == (0, 0, 0, 5)
    assert s.deadline == deadline and s.maxSamples == p.maxSamplesPerDevice


def test_task_ids_increment_and_tasks_are_independent(publish, registry, publisher, stranger, reward):
    a, _ = publish()
    b, _ = publish(value=reward // 3, sender=stranger, thresholdBp=7_000)
    assert (a.task_id, b.task_id) == (1, 2)
    assert registry.taskCount() == 2
    assert registry.getTask(2).publisher == stranger.address
    assert registry.getTask(2).reward == reward // 3
    assert registry.getState(1).thresholdBp == 6_000
    assert registry.getState(2).thresholdBp == 7_000
    assert registry.balance == reward + reward // 3


def test_publish_at_the_limits_is_accepted(publish, registry, testset):
    # threshold 0 and 10000, one round, maxRounds * groupsPerRound == numGroups exactly.
    t, _ = publish(thresholdBp=10_000, targetAccuracyBp=10_000, maxRounds=3, value=1)
    assert registry.getState(t.task_id).thresholdBp == 10_000
    t, _ = publish(thresholdBp=0, maxRounds=1, value=1)
    assert registry.getTask(t.task_id).maxRounds == 1


@pytest.mark.parametrize(
    "rule,param,param2,root",
    [
        (0, 0, 0, ZERO32),
        (1, 0, 0, ZERO32),
        (2, 2_000, 0, ZERO32),
        (3, 2, 0, ZERO32),
        (3, 2, 7, ZERO32),
        (4, 0, 0, b"\x07" * 32),
    ],
)
def test_the_aggregation_rule_is_committed_at_publish(publish, registry, rule, param, param2, root):
    t, _ = publish(
        aggregationRule=rule, aggregationParam=param, aggregationParam2=param2, rootSetHash=root, lossMarginBp=500
    )
    c = registry.getTask(t.task_id)
    assert (c.aggregationRule, c.aggregationParam, c.aggregationParam2, bytes(c.rootSetHash)) == (
        rule,
        param,
        param2,
        root,
    )
    assert c.lossMarginBp == 500 and c.claimWindow > 0


def test_publish_without_reward_reverts(registry, publisher, params):
    with reverts_with(registry.FLTaskNoReward):
        registry.publish(params.as_tuple(), value=0, sender=publisher)


@pytest.mark.parametrize(
    "field,value,name",
    [
        ("oracle", ZERO_ADDRESS, "oracle"),
        ("modelSpecHash", ZERO32, "modelSpecHash"),
        ("initialModelHash", ZERO32, "initialModelHash"),
        ("thresholdBp", 10_001, "thresholdBp"),
        ("targetAccuracyBp", 10_001, "targetAccuracyBp"),
        ("maxRounds", 0, "maxRounds"),
        ("testSetRoot", ZERO32, "testSetRoot"),
        ("seedCommitment", ZERO32, "seedCommitment"),
        ("groupsPerRound", 0, "numGroups"),
        ("numGroups", 5, "numGroups"),  # 3 rounds x 2 groups need 6
        ("maxRounds", 4, "numGroups"),  # 4 rounds x 2 groups need 8 > 6
        ("roundDuration", 0, "roundDuration"),
        ("evaluationWindow", 0, "evaluationWindow"),
        ("maxSamplesPerDevice", 0, "maxSamplesPerDevice"),
        ("privacyMode", 3, "privacyMode"),
        ("claimWindow", 0, "claimWindow"),
        ("lossMarginBp", 10_001, "lossMarginBp"),
        ("aggregationRule", 5, "aggregationRule"),
        ({"aggregationParam": 1}, None, "aggregationParam"),  # fedavg takes no parameter
        ({"aggregationRule": 1, "aggregationParam2": 3}, None, "aggregationParam2"),  # nor does the median
        ({"aggregationRule": 2}, None, "aggregationParam"),  # trimmed mean needs 0 < beta
        ({"aggregationRule": 2, "aggregationParam": 5_000}, None, "aggregationParam"),  # ... < 5000 bp
        ({"aggregationRule": 2, "aggregationParam": 2_000, "aggregationParam2": 1}, None, "aggregationParam2"),
        ({"aggregationRule": 4}, None, "rootSetHash"),  # FLTrust needs its root set
        ({"rootSetHash": b"\x01" * 32}, None, "rootSetHash"),  # and only FLTrust takes one
    ],
)
def test_publish_rejects_invalid_parameter(registry, publisher, params, reward, field, value, name):
    for k, v in field.items() if isinstance(field, dict) else [(field, value)]:
        setattr(params, k, v)
    with reverts_with(registry.FLTaskInvalidParameter, name=name):
        registry.publish(params.as_tuple(), value=reward, sender=publisher)
    assert registry.taskCount() == 0


def test_views_of_unknown_task_are_empty(registry):
    assert registry.getState(42).phase == 0
    assert registry.getTask(42).publisher == ZERO_ADDRESS
    assert registry.claimable(42, 1, ZERO_ADDRESS) == 0
    assert registry.refundable(42) == 0


def test_constants(registry):
    assert registry.REASON_OK() == 0
    assert registry.REASON_BELOW_THRESHOLD() == 1
    assert registry.REASON_MAX() == 11
    assert registry.PRIVACY_MODE_MAX() == 2
    assert registry.AGGREGATION_RULE_MAX() == 4
    assert registry.MAX_BP() == 10_000
    assert registry.SHUFFLE_ROUNDS() == 90
