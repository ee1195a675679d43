"""Reorgs on anvil (``evm_snapshot``/``evm_revert``): a reorged-away submission gets no verdict.

A ``ModelSubmitted`` that is reorged away never gets a verdict and its replacement does, whether
the oracle watches the reorg happen or is down while it happens (then its mirror holds a
submission the chain no longer has).
"""

from __future__ import annotations

import asyncio

import pytest

from demo.services import Anvil
from fedoracle.chain import Phase, Status, dev_account
from fedoracle.errors import Reason
from tests.conftest import run
from tests.oracle.harness import deploy, rpc
from tests.oracle.kit import make_blob, publish, submit, task_events, verdict_counts, wait_phase

X, Y, Z = 10, 11, 12  # dev accounts of three devices


@pytest.fixture
def fresh_node():
    """An anvil of this test's own: reverting it touches nobody else's state."""
    with Anvil(accounts=20) as a:
        yield a


def addr(i: int) -> str:
    return dev_account(i).address.lower()


async def until(cond, timeout: float = 120):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def test_a_reorged_submission_never_gets_a_verdict_and_its_replacement_does(
    fresh_node, models, mnist, tmp_path, caplog
):
    async def go():
        h = await deploy(fresh_node.rpc_url, tmp_path)
        t = await publish(h.registry, h.blobs, h.vault, models, mnist, oracle=h.oracle_address, cap=2)
        oracle = await h.start(t.block)
        try:
            snap = await rpc(h.registry, "evm_snapshot")
            good = make_blob("good", h.blobs, models, models.initial)
            await submit(h.rpc_url, h.registry.address, X, t.task_id, good, h.blobs)
            await submit(
                h.rpc_url,
                h.registry.address,
                Z,
                t.task_id,
                make_blob("good", h.blobs, models, models.initial, which=1),
                h.blobs,
            )

            async def scored_x():  # the oracle has seen X's first model and is scoring it (or has)
                return any(k[2] == addr(X) for k in oracle._scoring) or any(
                    s[2] == addr(X) for s in oracle.checkpoint.scores()
                )

            await until(scored_x)
            await rpc(h.registry, "evm_revert", snap)
            # The new branch: X submits another model (bad this time), Y submits, Z never does.
            receipt = await submit(
                h.rpc_url, h.registry.address, X, t.task_id, make_blob("nan", h.blobs, models, models.initial), h.blobs
            )
            (replacement,) = [e for e in h.registry.events_of(receipt) if e.name == "ModelSubmitted"]
            nan = "0x" + bytes(replacement.args["modelHash"]).hex()  # the sealed blob's hash, as on-chain
            await submit(h.rpc_url, h.registry.address, Y, t.task_id, good, h.blobs)
            await wait_phase(h.registry, t.task_id, Phase.FINALIZED, 300, alive=h.alive)
            return (
                t,
                nan,
                await task_events(h.registry, t.task_id, t.block),
                [await h.registry.get_verdict(t.task_id, 1, dev_account(i).address) for i in (X, Y, Z)],
                oracle.checkpoint.action_rows("verdict"),
            )
        finally:
            await h.stop()

    t, nan, events, (vx, vy, vz), verdict_txs = run(asyncio.wait_for(go(), 600))
    assert verdict_counts(events) == {(1, addr(X)): 1, (1, addr(Y)): 1}
    (posted_x,) = [e for e in events if e.name == "VerdictPosted" and e.args["device"].lower() == addr(X)]
    assert "0x" + posted_x.args["modelHash"].hex() == nan  # the replacement's model, not the reorged one's
    assert vx["status"] == Status.REJECTED and vx["reason"] == Reason.NON_FINITE
    assert vy["status"] == Status.ACCEPTED
    assert vz["status"] == Status.NONE
    assert len(verdict_txs) == 2
    # Seen live by the follower (removed logs), or, if a poll failed mid-reorg and the follower
    # lost its memory of block hashes, caught by the commitment check before any verdict.
    assert "action=reorg_removed" in caplog.text or "action=mirror_mismatch" in caplog.text


def test_a_submission_reorged_away_while_the_oracle_was_down_is_dropped_from_its_mirror(
    fresh_node, models, mnist, tmp_path, caplog
):
    async def go():
        h = await deploy(fresh_node.rpc_url, tmp_path)
        t = await publish(h.registry, h.blobs, h.vault, models, mnist, oracle=h.oracle_address, cap=2)
        oracle = await h.start(t.block)
        snap = await rpc(h.registry, "evm_snapshot")
        good = make_blob("good", h.blobs, models, models.initial)
        await submit(h.rpc_url, h.registry.address, Z, t.task_id, good, h.blobs)
        await until(lambda: asyncio.sleep(0, result=bool(oracle.checkpoint.submissions(t.task_id, 1))))
        await h.stop()
        # While the oracle is down: Z's block is replaced; X and Y submit in the new branch, at
        # heights the oracle's watermark has already passed (X) or not (Y).
        await rpc(h.registry, "evm_revert", snap)
        await submit(h.rpc_url, h.registry.address, X, t.task_id, good, h.blobs)
        await submit(
            h.rpc_url, h.registry.address, Y, t.task_id, make_blob("noise", h.blobs, models, models.initial), h.blobs
        )
        oracle = await h.start(t.block)
        try:
            await wait_phase(h.registry, t.task_id, Phase.FINALIZED, 300, alive=h.alive)
            return (
                await task_events(h.registry, t.task_id, t.block),
                [await h.registry.get_verdict(t.task_id, 1, dev_account(i).address) for i in (X, Y, Z)],
                oracle.checkpoint.action_rows(),
            )
        finally:
            await h.stop()

    events, (vx, vy, vz), actions = run(asyncio.wait_for(go(), 600))
    assert verdict_counts(events) == {(1, addr(X)): 1, (1, addr(Y)): 1}
    assert vx["status"] == Status.ACCEPTED
    assert vy["status"] == Status.REJECTED and vy["reason"] == Reason.BELOW_THRESHOLD
    assert vz["status"] == Status.NONE
    assert {a["status"] for a in actions} == {"mined"}  # no transaction wasted on the phantom
    assert "mirror_mismatch" in caplog.text
