"""Each submission of a round is evaluated exactly once, however the oracle's steps interleave.

Before the fix, 17-20 of 300 candidates of a round were scored twice, with nothing in the log:
``Oracle._prefetch`` listed the open round's unscored submissions, awaited the chain (the task's
global model hash), then started an evaluation for every listed one, including those whose
evaluation had finished and been cached during that await. ``_start_scoring`` now asks the
checkpoint before it starts one.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, dev_account
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import ScoreJob, Scorer
from oracle.store import Score
from tests.conftest import run
from tests.oracle.kit import make_blob, publish, submit

ORACLE = 7
FIRST_DEVICE = 70
KINDS = ["good", "noise", "good", "good"]


class CountingPool(InProcessPool):
    """The real in-process pool, counting evaluations per (device, model hash).

    Each finished evaluation is held back until :attr:`release` is set, so that the test can
    choose the moment the oracle sees them finish.
    """

    def __init__(self, scorer: Scorer) -> None:
        super().__init__(scorer)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.computed = 0
        self.release = asyncio.Event()

    async def score(self, job: ScoreJob) -> Score:
        assert job.submission is not None
        self.calls[(job.submission.device.lower(), job.submission.model_hash)] += 1
        score = await super().score(job)
        self.computed += 1
        await self.release.wait()
        return score


def test_each_submission_is_evaluated_once_even_when_scores_land_during_a_chain_read(
    node, reg, models, mnist, tmp_path
):
    blobs, vault = LocalBlobStore(tmp_path / "blobs"), tmp_path / "vault"

    async def go():
        # No cap: the round stays open, so the oracle keeps prefetching while the scores land.
        t = await publish(reg, blobs, vault, models, mnist, oracle=dev_account(ORACLE).address)
        for i, kind in enumerate(KINDS):
            digest = make_blob(kind, blobs, models, models.initial, which=i % 2)
            await submit(node.rpc_url, reg.address, FIRST_DEVICE + i, t.task_id, digest, blobs)
        pool = CountingPool(Scorer(blobs, str(vault)))
        oracle = Oracle(
            Chain(node.rpc_url, dev_account(ORACLE)),
            reg.address,
            blobs,
            pool,
            OracleConfig(
                vault=vault, state_dir=tmp_path / "state", poll_interval=0.1, from_block=t.block, threshold_margin=None
            ),
        )
        # The moment that used to lose track of scores: every started evaluation has finished
        # computing, and the oracle is awaiting a chain read in the middle of a step. Release them
        # then (a probe on the real call, which still goes to the chain).
        read_task = oracle.registry.get_task

        async def get_task(task_id: int):
            if pool.calls and pool.computed == sum(pool.calls.values()):
                pool.release.set()
            return await read_task(task_id)

        oracle.registry.get_task = get_task
        daemon = asyncio.create_task(oracle.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 300
            while len(oracle.checkpoint.scores(t.task_id)) < len(KINDS) and not daemon.done():
                assert loop.time() < deadline, f"scored {oracle.checkpoint.scores(t.task_id)} after 300 s"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # more reconciliations: a late second evaluation would show up
            return pool.calls, oracle.checkpoint.scores(t.task_id), pool.release.is_set(), daemon.done()
        finally:
            oracle.stopped.set()
            await asyncio.wait_for(daemon, 60)
            await oracle.close()

    calls, scores, released, died = run(asyncio.wait_for(go(), 600))
    assert not died
    assert released  # the scores did land during a chain read
    devices = {dev_account(FIRST_DEVICE + i).address.lower() for i in range(len(KINDS))}
    assert {device for device, _ in calls} == devices and len(scores) == len(KINDS)
    assert dict(calls) == {key: 1 for key in calls}, calls  # one evaluation per submitted model
