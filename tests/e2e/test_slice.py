"""The vertical slice, end to end: real anvil, a real MQTT broker over TCP, real TF/TFF.

The publisher publishes an MNIST task; a relay puts it on MQTT; three devices (two honest, one
whose update is garbage) hear the round, train, store their blobs and submit on-chain; the
oracle sees ``ModelSubmitted``, loads each blob, checks its hash, scores it with the TFF
evaluator on the hidden test groups and posts verdicts; it aggregates, finalizes, and the
accepted devices claim.
"""

from __future__ import annotations

import asyncio

import numpy as np

from devices.client import Device, TrainingConfig
from devices.training import LocalTrainer
from fedoracle.chain import Chain, Phase, Status, dev_account
from fedoracle.errors import Reason
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import Scorer
from publisher.publish import TaskPlan, publish_task
from relay.relay import Relay
from tests.conftest import run


class GarbageTrainer:
    """A device that submits an update of the right shape whose values are huge noise."""

    def __call__(self, spec, global_weights, task):
        rng = np.random.default_rng(0)
        return [rng.normal(0, 50, g.shape).astype(g.dtype) for g in global_weights], 10, None


def test_slice_publish_submit_verdict_aggregate_claim(registry, anvil, broker, tmp_path, mnist):
    plan = TaskPlan(
        dataset="mnist",
        architecture="small_cnn",
        rounds=1,
        threshold=0.5,
        groups_per_round=2,
        test_examples=1_000,
        clip=1.0,
        epsilon=8.0,
        delta=1e-5,
        max_submissions_per_round=3,
        reward_eth=0.3,
    )
    blobs_dir = tmp_path / "blobs"

    async def go():
        from fedoracle.blobstore import LocalBlobStore

        blobs = LocalBlobStore(blobs_dir)
        published = await publish_task(registry, blobs, tmp_path / "vault", plan, dev_account(1).address, dataset=mnist)
        task_id = published.task_id
        oracle = Oracle(
            Chain(anvil.rpc_url, dev_account(1)),
            registry.address,
            blobs,
            InProcessPool(Scorer(blobs, str(tmp_path / "vault"))),
            OracleConfig(
                vault=tmp_path / "vault",
                state_dir=tmp_path / "oracle",
                poll_interval=0.1,
                from_block=published.block_number,
                threshold_margin=None,
            ),
        )
        relay = Relay(anvil.rpc_url, registry.address, broker.url, from_block=published.block_number)
        cfg = TrainingConfig(
            epochs=1, batch_size=64, learning_rate=1e-3, optimizer="adam", dp=False
        )  # about the slice, not DP
        rng = np.random.default_rng(1)
        devices = []
        for i, idx in enumerate(np.array_split(rng.permutation(len(mnist.y_train))[:3000], 2)):
            devices.append(
                Device(
                    dev_account(10 + i),
                    anvil.rpc_url,
                    registry.address,
                    blobs,
                    broker.url,
                    LocalTrainer(mnist.x_train[idx], mnist.y_train[idx], cfg, seed=i),
                    name=f"honest-{i}",
                    tasks={task_id},
                )
            )
        devices.append(
            Device(
                dev_account(12),
                anvil.rpc_url,
                registry.address,
                blobs,
                broker.url,
                GarbageTrainer(),
                name="garbage",
                tasks={task_id},
            )
        )
        tasks = [asyncio.create_task(x.run()) for x in [relay, oracle, *devices]]
        try:
            while (await registry.get_state(task_id))["phase"] != Phase.FINALIZED:
                await asyncio.sleep(0.2)
            # Devices claim by themselves once they hear the task is finalized.
            while sum(d.stats.claimed_wei > 0 for d in devices) < 2:
                await asyncio.sleep(0.2)
            verdicts = [await registry.get_verdict(task_id, 1, d.address) for d in devices]
            rec = await registry.get_round(task_id, 1)
            payees = [await registry.chain.balance(d.payee) for d in devices]
            return task_id, verdicts, rec, oracle.checkpoint.actions("verdict"), payees
        finally:
            oracle.stopped.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    task_id, verdicts, rec, verdict_txs, payees = run(asyncio.wait_for(go(), 300))
    honest, garbage = verdicts[:2], verdicts[2]
    assert [v["status"] for v in honest] == [Status.CLAIMED, Status.CLAIMED]
    assert all(v["accuracyBp"] >= 5000 for v in honest)
    assert garbage["status"] == Status.REJECTED and garbage["reason"] == Reason.BELOW_THRESHOLD
    assert rec["accepted"] == 2 and rec["settled"] and rec["globalAccuracyBp"] >= 5000
    assert len(verdict_txs) == 3  # exactly one verdict transaction per submission
    assert rec["rewardPerAccepted"] == 15 * 10**16  # one round: the whole 0.3 ETH, split in two
