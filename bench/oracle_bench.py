"""Benchmark of the oracle daemon: submission-to-verdict latency and verdicts per minute.

Latency runs from a ``ModelSubmitted`` block to its verdict being mined; both are measured at 50
and 300 submissions.

Writes ``bench/results/oracle.json`` and ``bench/results/oracle.md``. Run with
``./run python bench/oracle_bench.py`` (``--sizes 50,300``).

Set-up, per size N: a fresh anvil (automine, one block per transaction) with N + 20 dev accounts,
a registry, an MNIST ``small_cnn`` task published by ``publisher.publish`` with rounds of 50
submissions (the cap closes each round; N = 300 is six rounds), 1,000 hidden test examples, and
the oracle running in this process with the default in-process pool (2 evaluation threads). Each
device (its own dev account) submits one update per round as fast as the node takes them: 80 %
real trained updates, 20 % useless ones (rejected below the threshold). Times are wall-clock on
one machine: a submission's time is when its receipt came back (its block was mined), a
verdict's is when the oracle recorded the mined receipt.

Because verdicts can only be posted once a round is closed, a verdict's latency includes waiting
for the rest of its round's submissions; ``after_close`` measures from the round's last
submission instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from demo.services import Anvil
from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, Phase, TaskRegistry, dev_account
from fedoracle.codec import decode, encode
from fedoracle.seal import SealContext, seal
from fedoracle.units import BP
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import Scorer
from publisher.publish import TaskPlan, publish_task

RESULTS = Path(__file__).parent / "results"
PER_ROUND = 50
ORACLE, FIRST_DEVICE = 1, 10


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_size(n: int, mnist, trained: list[np.ndarray], workers: int) -> dict:
    rounds = n // PER_ROUND
    with Anvil(accounts=FIRST_DEVICE + PER_ROUND + 5) as node, tempfile.TemporaryDirectory() as tmp:
        blobs, vault = LocalBlobStore(Path(tmp) / "blobs"), Path(tmp) / "vault"
        registry = await TaskRegistry.deploy(Chain(node.rpc_url, dev_account(0)))
        plan = TaskPlan(
            rounds=rounds,
            threshold=0.5,
            test_examples=1000,
            max_submissions_per_round=PER_ROUND,
            reward_eth=1.0,
            round_duration=7200,
            evaluation_window=7200,
        )
        published = await publish_task(registry, blobs, vault, plan, dev_account(ORACLE).address, dataset=mnist)
        task_id = published.task_id
        from fedoracle.codec import spec_from_blob

        spec = spec_from_blob(blobs.get(published.spec_hash), published.spec_hash)
        oracle = Oracle(
            Chain(node.rpc_url, dev_account(ORACLE)),
            registry.address,
            blobs,
            InProcessPool(Scorer(blobs, str(vault)), workers=workers),
            OracleConfig(
                vault=vault,
                state_dir=Path(tmp) / "state",
                poll_interval=0.05,
                from_block=published.block_number,
                threshold_margin=None,
            ),
        )
        ready = asyncio.Event()
        daemon = asyncio.create_task(oracle.run(ready))
        await ready.wait()
        devices = [
            TaskRegistry(Chain(node.rpc_url, dev_account(FIRST_DEVICE + i)), registry.address) for i in range(PER_ROUND)
        ]
        rng = np.random.default_rng(0)
        chain_id = await registry.chain.chain_id()
        submitted: dict[tuple[int, str], float] = {}
        closed_at: dict[int, float] = {}
        t0 = time.time()
        try:
            for r in range(1, rounds + 1):
                while (s := await registry.get_state(task_id))["phase"] != Phase.OPEN or s["round"] != r:
                    await asyncio.sleep(0.05)
                g_hash = (await registry.get_task(task_id))["globalModelHash"]
                global_w = decode(blobs.get(g_hash), spec)
                delta = [w - g for w, g in zip(trained, global_w, strict=True)]
                while not int(key := (await registry.get_round(task_id, r))["sealKey"], 16):
                    await asyncio.sleep(0.05)  # the oracle keys round 1 on sight, later rounds in aggregate
                for i, dev in enumerate(devices):
                    if i % 5 == 4:  # useless values: evaluated and rejected
                        update = [rng.normal(0, 50, g.shape).astype(g.dtype) for g in global_w]
                    else:  # a distinct update of each device (the copy rule pays copies once)
                        update = [
                            (d + rng.normal(0, 0.5 * np.sqrt(np.mean(d**2)), d.shape)).astype(d.dtype) for d in delta
                        ]
                    ctx = SealContext(chain_id, registry.address, task_id, r, dev.chain.address)
                    digest = blobs.put(seal(encode(update, spec), key, ctx))
                    await dev.submit(task_id, digest, blobs.uri(digest), dev.chain.address, 100, max_threshold_bp=BP)
                    submitted[(r, dev.chain.address.lower())] = time.time()
                closed_at[r] = time.time()
            while (await registry.get_state(task_id))["phase"] != Phase.FINALIZED:
                await asyncio.sleep(0.1)
            t_end = time.time()
            verdicts = {
                (a["round"], a["subject"].lower()): a["at"]
                for a in oracle.checkpoint.action_rows("verdict")
                if a["status"] == "mined"
            }
        finally:
            oracle.stopped.set()
            await daemon
            await oracle.close()
    assert len(verdicts) == n == len(submitted), (len(verdicts), n, len(submitted))
    latency = [verdicts[k] - t for k, t in submitted.items()]
    after_close = [verdicts[k] - closed_at[k[0]] for k in submitted]
    first, last = min(submitted.values()), max(verdicts.values())
    return {
        "submissions": n,
        "rounds": rounds,
        "per_round": PER_ROUND,
        "workers": workers,
        "latency_s": {"p50": pct(latency, 50), "p95": pct(latency, 95), "max": max(latency)},
        "after_close_s": {"p50": pct(after_close, 50), "p95": pct(after_close, 95), "max": max(after_close)},
        "verdicts_per_minute": n / (last - first) * 60,
        "seconds_first_submission_to_last_verdict": last - first,
        "seconds_total_incl_aggregation_and_finalize": t_end - t0,
    }


def train_update(mnist) -> list[np.ndarray]:
    """One honest device's trained weights (its update is these minus the round's global model)."""
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.training import local_train

    spec = model_spec("small_cnn", mnist.input_shape, mnist.num_classes)
    return local_train(
        spec,
        initial_weights(spec, 0),
        mnist.x_train[:3000],
        mnist.y_train[:3000],
        epochs=1,
        batch_size=64,
        learning_rate=2e-3,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50,300")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from fedoracle.learning.data import load_dataset

    mnist = load_dataset("mnist")
    trained = train_update(mnist)
    results = {}
    for n in (int(x) for x in args.sizes.split(",")):
        results[str(n)] = asyncio.run(run_size(n, mnist, trained, args.workers))
        print(json.dumps({n: results[str(n)]}, indent=1))
    load = os.getloadavg()
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in load],
            "note": "2-core shared machine; other engineers' test suites may have been running",
        },
        "chain": "anvil, automine (one block per transaction)",
        "oracle": "in-process, InProcessPool (threads), poll interval 0.05 s",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oracle.json").write_text(json.dumps(doc, indent=1) + "\n")
    rows = "\n".join(
        f"| {n} | {r['rounds']} | {r['latency_s']['p50']:.2f} | {r['latency_s']['p95']:.2f} | "
        f"{r['after_close_s']['p50']:.2f} | {r['after_close_s']['p95']:.2f} | {r['verdicts_per_minute']:.0f} |"
        for n, r in results.items()
    )
    table_head = (
        "| submissions | rounds | latency p50 (s) | latency p95 (s) | after close p50 (s) "
        "| after close p95 (s) | verdicts / min |"
    )
    (RESULTS / "oracle.md").write_text(f"""# Oracle benchmark

`./run python bench/oracle_bench.py` on a {os.cpu_count()}-core machine (load average at the end
{load[0]:.1f}; other engineers' work may have been running, so treat these as rough numbers).
Anvil with automine; MNIST small_cnn; rounds of {PER_ROUND} submissions closed by the cap; 80 %
good updates, 20 % rejected; oracle in-process with 2 evaluation threads.

{table_head}
|---|---|---|---|---|---|---|
{rows}

Latency: from a submission's block being mined to its verdict being mined. A verdict can only be
posted after its round closes, so this includes waiting for the rest of the round's submissions;
"after close" counts from the round's last submission. Verdicts per minute: submissions divided
by the time from the first submission to the last verdict (includes submitting, disclosing and
aggregating between rounds).
""")


if __name__ == "__main__":
    main()
