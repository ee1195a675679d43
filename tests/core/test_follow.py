"""The log follower: ranges, confirmations, and reorgs (made on anvil with snapshot/revert)."""

from __future__ import annotations

from fedoracle.chain import Chain, dev_account
from fedoracle.follow import LogFollower
from tests.conftest import run
from tests.core.test_chain import params


def test_reads_each_event_once_in_order(registry):
    async def go():
        start = await registry.chain.block_number() + 1
        follower = LogFollower(registry, start)
        t1, _ = await registry.publish(params(), 10**15)
        t2, _ = await registry.publish(params(), 10**15)
        seen = []
        while (batch := await follower.poll()) is not None:
            seen += batch.events
        assert await follower.poll() is None
        return t1, t2, seen

    t1, t2, seen = run(go())
    assert [(e.name, e.args["taskId"]) for e in seen] == [
        ("TaskPublished", t1),
        ("RoundOpened", t1),
        ("TaskPublished", t2),
        ("RoundOpened", t2),
    ]


def test_confirmations_hold_back_recent_blocks(registry, anvil):
    async def go():
        start = await registry.chain.block_number() + 1
        follower = LogFollower(registry, start, confirmations=2)
        await registry.publish(params(), 10**15)
        first = await follower.poll()
        w3 = registry.chain.w3
        await w3.provider.make_request("anvil_mine", [2])
        second = await follower.poll()
        return first, second

    first, second = run(go())
    assert first is None
    assert [e.name for e in second.events] == ["TaskPublished", "RoundOpened"]


def test_reorg_emits_removed_events_and_reads_the_new_branch(registry, anvil):
    async def go():
        w3 = registry.chain.w3
        start = await registry.chain.block_number() + 1
        follower = LogFollower(registry, start)
        snap = (await w3.provider.make_request("evm_snapshot", []))["result"]
        old_task, _ = await registry.publish(params(), 10**15)
        before = await follower.poll()
        await w3.provider.make_request("evm_revert", [snap])
        registry.chain.reset_nonce()  # the revert rolled the publisher's nonce back too
        # A different branch: another publisher's task at the same heights.
        other = registry.with_chain(Chain(anvil.rpc_url, dev_account(2)))
        await w3.provider.make_request("anvil_mine", [1])
        new_task, _ = await other.publish(params(threshold_bp=7000), 10**15)
        after = await follower.poll()
        return before, after

    before, after = run(go())
    assert [e.name for e in before.events] == ["TaskPublished", "RoundOpened"]
    removed = [e for e in after.events if e.removed]
    added = [e for e in after.events if not e.removed]
    assert {e.key for e in removed} == {e.key for e in before.events}
    assert [e.name for e in added] == ["TaskPublished", "RoundOpened"]
    assert added[0].args["thresholdBp"] == 7000
