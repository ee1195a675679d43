"""The typed registry client against anvil: transactions, views, events and decoded errors."""

from __future__ import annotations

import secrets

import pytest

from fedoracle.chain import Chain, ChainError, Phase, TaskParams, TaskRegistry, dev_account, load_account
from fedoracle.commitments import TestSetCommitment
from fedoracle.errors import ConfigError
from fedoracle.units import BP
from tests.conftest import run

ORACLE = 1


def params(**overrides) -> TaskParams:
    tc = TestSetCommitment.create([secrets.token_bytes(32) for _ in range(6)], 2)
    base = dict(
        oracle=dev_account(ORACLE).address,
        model_spec_hash="0x" + "11" * 32,
        initial_model_hash="0x" + "22" * 32,
        initial_model_uri="file:///init",
        threshold_bp=5000,
        test_set_root=tc.root,
        seed_commitment=tc.seed_commitment,
        num_groups=6,
        groups_per_round=2,
        max_rounds=3,
    )
    base.update(overrides)
    return TaskParams(**base)


def as_(registry: TaskRegistry, anvil, index: int) -> TaskRegistry:
    return registry.with_chain(Chain(anvil.rpc_url, dev_account(index)))


def test_publish_emits_and_stores(registry, anvil):
    p = params(epsilon=8.0, delta=0.00247875, clip=1.5)
    task_id, receipt = run(registry.publish(p, 10**18))
    names = [e.name for e in registry.events_of(receipt)]
    assert names == ["TaskPublished", "RoundOpened"]
    cfg = run(registry.get_task(task_id))
    assert cfg["reward"] == 10**18
    assert cfg["epsilonMilli"] == 8000 and cfg["clipMicro"] == 1_500_000
    assert cfg["deltaE18"] == 2_478_750_000_000_000
    assert cfg["oracle"] == dev_account(ORACLE).address
    state = run(registry.get_state(task_id))
    assert state["phase"] == Phase.OPEN and state["round"] == 1 and state["thresholdBp"] == 5000


def test_custom_errors_are_decoded(registry, anvil):
    task_id, _ = run(registry.publish(params(), 10**17))
    device = as_(registry, anvil, 7)
    run(device.submit(task_id, "0x" + "33" * 32, "file:///m", dev_account(7).address, 10, max_threshold_bp=BP))
    with pytest.raises(ChainError, match=r"FLTaskDuplicateSubmission\(taskId=\d+, round=1, device=0x"):
        run(device.submit(task_id, "0x" + "33" * 32, "file:///m", dev_account(7).address, 10, max_threshold_bp=BP))
    with pytest.raises(ChainError, match=r"FLTaskUnauthorized"):
        run(device.aggregate(task_id, "0x" + "44" * 32, "u", 1, seal_secret=b"\x01" * 32, next_seal_key=None))
    with pytest.raises(ChainError, match=r"FLTaskInvalidParameter\(name=numSamples\)"):
        run(
            device.submit(
                task_id, "0x" + "35" * 32, "file:///m", dev_account(7).address, 2**32 - 1, max_threshold_bp=BP
            )
        )
    with pytest.raises(ChainError, match=r"FLTaskNoReward"):
        run(registry.publish(params(), 0))


def test_concurrent_transactions_share_one_nonce_sequence(registry, anvil):
    """Many coroutines sending at once from one account: all mined, none lost to nonce races."""
    import asyncio

    task_id, _ = run(registry.publish(params(max_submissions_per_round=0), 10**17))

    async def many():
        devices = [as_(registry, anvil, i) for i in range(8, 14)]
        await asyncio.gather(
            *(
                d.submit(task_id, "0x" + f"{i:02x}" * 32, "u", d.chain.address, 1, max_threshold_bp=BP)
                for i, d in enumerate(devices, start=1)
            )
        )
        return await registry.get_state(task_id)

    assert run(many())["submissions"] == 6


def test_events_over_a_range(registry, anvil):
    start = run(registry.chain.block_number()) + 1
    task_id, _ = run(registry.publish(params(), 10**17))
    events = run(registry.get_events(start, run(registry.chain.block_number())))
    assert [e.name for e in events if e.args.get("taskId") == task_id] == ["TaskPublished", "RoundOpened"]
    assert len({e.key for e in events}) == len(events)


@pytest.mark.parametrize("source", ["dev:3", "0x" + "01" * 32])
def test_key_sources(source):
    assert load_account(source).address.startswith("0x")


def test_bad_key_source():
    with pytest.raises(ConfigError, match="not a usable private key"):
        load_account("0x1234")


def test_a_nonce_taken_by_another_client_is_recovered(registry, anvil):
    """Two clients of one key (e.g. a CLI command beside a daemon): the stale one re-reads its nonce."""
    stale = as_(registry, anvil, 15)
    other = as_(registry, anvil, 15)
    task_id, _ = run(registry.publish(params(), 10**15))
    run(stale.submit(task_id, "0x" + "51" * 32, "u", stale.chain.address, 1, max_threshold_bp=BP))  # caches nonce n+1
    second, _ = run(registry.publish(params(), 10**15))
    run(other.submit(second, "0x" + "52" * 32, "u", other.chain.address, 1, max_threshold_bp=BP))  # takes nonce n+1
    third, _ = run(registry.publish(params(), 10**15))
    receipt = run(
        stale.submit(third, "0x" + "53" * 32, "u", stale.chain.address, 1, max_threshold_bp=BP)
    )  # n+1 is gone
    assert receipt["status"] == 1
