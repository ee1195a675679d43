"""Seal keys: setSealKey for round 1, the rollover in aggregate, the disclosure of each round's secret."""

import pytest

from fltask_harness import (
    AWAITING_FINALIZE,
    CLOSED,
    OPEN,
    ZERO32,
    assert_event,
    event_args,
    h,
    reverts_with,
    seal_key,
    seal_secret,
)


def test_round_one_opens_unkeyed_and_the_oracle_keys_it_once(task, registry, oracle):
    assert bytes(registry.getRound(task.task_id, 1).sealKey) == ZERO32
    receipt = task.set_seal_key()
    key = seal_key(task.task_id, 1)
    assert_event(receipt, registry.SealKeySet, dict(taskId=task.task_id, round=1, sealKey=key))
    assert bytes(registry.getRound(task.task_id, 1).sealKey) == key
    # A second key would let the oracle re-key a round under devices that sealed to the first.
    with reverts_with(registry.FLTaskSealKeyAlreadySet, taskId=task.task_id, round=1):
        task.set_seal_key(h("another key"))
    assert bytes(registry.getRound(task.task_id, 1).sealKey) == key


@pytest.mark.parametrize("who", ["publisher", "stranger", "device"])
def test_only_the_oracle_sets_a_seal_key(task, registry, publisher, stranger, devices, who):
    """Whoever sets the key can read the round.

    A publisher or a device that could set it would see the other devices' updates before the
    round is settled.
    """
    sender = {"publisher": publisher, "stranger": stranger, "device": devices[0]}[who]
    with reverts_with(registry.FLTaskUnauthorized, caller=sender.address):
        task.set_seal_key(h("attacker's key"), sender=sender)
    assert bytes(registry.getRound(task.task_id, 1).sealKey) == ZERO32


def test_a_zero_seal_key_and_a_closed_round_are_refused(task, registry, devices):
    with reverts_with(registry.FLTaskInvalidParameter, name="sealKey"):
        task.set_seal_key(ZERO32)
    task.submit(devices[0])
    task.close()
    with reverts_with(registry.FLTaskWrongPhase, taskId=task.task_id, current=CLOSED, expected=OPEN):
        task.set_seal_key()


def test_aggregate_discloses_the_secret_and_keys_the_next_round(task, registry, devices):
    task.set_seal_key()
    receipt = task.run_round(accepted=devices[:1])
    assert_event(
        receipt, registry.SealKeyDisclosed, dict(taskId=task.task_id, round=1, sealSecret=seal_secret(task.task_id, 1))
    )
    assert_event(receipt, registry.SealKeySet, dict(taskId=task.task_id, round=2, sealKey=seal_key(task.task_id, 2)))
    assert task.state.phase == OPEN and task.round == 2
    assert bytes(registry.getRound(task.task_id, 2).sealKey) == seal_key(task.task_id, 2)
    with reverts_with(registry.FLTaskSealKeyAlreadySet, taskId=task.task_id, round=2):
        task.set_seal_key()


def test_a_zero_next_key_leaves_the_next_round_to_set_seal_key(task, registry, devices):
    task.submit(devices[0])
    task.close()
    task.disclose()
    task.verdict(devices[0], 9_000)
    receipt = task.aggregate(next_key=ZERO32)
    assert event_args(receipt, registry.SealKeySet) == []
    assert bytes(registry.getRound(task.task_id, 2).sealKey) == ZERO32
    task.set_seal_key()
    assert bytes(registry.getRound(task.task_id, 2).sealKey) == seal_key(task.task_id, 2)


def test_aggregate_without_a_secret_is_refused(task, registry, devices):
    """Without the secret nobody could re-check the round's verdicts."""
    task.submit(devices[0])
    task.close()
    task.disclose()
    task.verdict(devices[0], 9_000)
    with reverts_with(registry.FLTaskInvalidParameter, name="sealSecret"):
        task.aggregate(secret=ZERO32)
    assert task.state.phase == CLOSED


def test_the_last_round_discloses_its_secret_and_keys_nothing(publish, registry, devices):
    t, _ = publish(maxRounds=1)
    t.set_seal_key()
    receipt = t.run_round(accepted=devices[:1])
    assert t.state.phase == AWAITING_FINALIZE
    assert_event(
        receipt, registry.SealKeyDisclosed, dict(taskId=t.task_id, round=1, sealSecret=seal_secret(t.task_id, 1))
    )
    assert event_args(receipt, registry.SealKeySet) == []
    assert bytes(registry.getRound(t.task_id, 2).sealKey) == ZERO32
