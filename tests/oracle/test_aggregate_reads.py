"""The round's aggregation reads its verdicts from the chain in one pass, not one call per submission.

Before, ``Oracle._aggregate`` asked the contract for every submission's verdict one call at a time
(300 calls, ~3.3 s at P = 300). It now reads the round's ``VerdictPosted`` events in one
``eth_getLogs`` and asks the contract only about a submission whose event it does not find.
"""

from __future__ import annotations

import asyncio

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, Phase, Status, dev_account
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import Scorer
from tests.conftest import run
from tests.oracle.kit import make_blob, publish, submit, wait_phase

ORACLE = 8
FIRST_DEVICE = 74
KINDS = ["good", "noise", "good", "missing"]


def test_aggregation_reads_the_rounds_verdicts_in_one_pass_and_gets_them_right(node, reg, models, mnist, tmp_path):
    blobs, vault = LocalBlobStore(tmp_path / "blobs"), tmp_path / "vault"
    devices = [dev_account(FIRST_DEVICE + i).address.lower() for i in range(len(KINDS))]

    async def go():
        t = await publish(reg, blobs, vault, models, mnist, oracle=dev_account(ORACLE).address, cap=len(KINDS))
        for i, kind in enumerate(KINDS):
            digest = make_blob(kind, blobs, models, models.initial, which=i % 2)
            await submit(node.rpc_url, reg.address, FIRST_DEVICE + i, t.task_id, digest, blobs)
        oracle = Oracle(
            Chain(node.rpc_url, dev_account(ORACLE)),
            reg.address,
            blobs,
            InProcessPool(Scorer(blobs, str(vault))),
            OracleConfig(
                vault=vault, state_dir=tmp_path / "state", poll_interval=0.1, from_block=t.block, threshold_margin=None
            ),
        )
        # Probes on the real calls (which still go to the chain): the verdict reads made while
        # the oracle aggregates, and the accepted set it aggregates.
        reads = {"in_aggregate": 0}
        aggregating = False
        read_verdict, aggregate, accepted_of = oracle.registry.get_verdict, oracle._aggregate, oracle._accepted
        seen: list[list[str]] = []

        async def get_verdict(*args):
            if aggregating:
                reads["in_aggregate"] += 1
            return await read_verdict(*args)

        async def in_aggregate(*args):
            nonlocal aggregating
            aggregating = True
            try:
                return await aggregate(*args)
            finally:
                aggregating = False

        async def accepted(*args):
            subs = await accepted_of(*args)
            seen.append([s.device.lower() for s in subs])
            return subs

        oracle.registry.get_verdict, oracle._aggregate, oracle._accepted = get_verdict, in_aggregate, accepted
        daemon = asyncio.create_task(oracle.run())
        try:
            await wait_phase(reg, t.task_id, Phase.FINALIZED, 300, alive=lambda: not daemon.done())
            chain = [await read_verdict(t.task_id, 1, d) for d in devices]
            missing = await accepted_of(t.task_id, 1, [])  # no submissions: nothing accepted, nothing read
            return reads, seen, chain, missing, await reg.get_round(t.task_id, 1)
        finally:
            oracle.stopped.set()
            await asyncio.wait_for(daemon, 60)
            await oracle.close()

    reads, seen, chain, missing, record = run(asyncio.wait_for(go(), 600))
    assert reads["in_aggregate"] == 0  # one getLogs instead of a call per submission
    want = [d for d, v in zip(devices, chain, strict=True) if v["status"] == Status.ACCEPTED]
    assert seen == [want] and len(want) == record["accepted"] == 2
    assert missing == []
