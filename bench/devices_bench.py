"""Benchmark of the device side: relay→MQTT fan-out latency and whole-round wall time.

Writes ``bench/results/devices.json`` and ``bench/results/devices.md``. Run with
``./run python bench/devices_bench.py [--sizes 100,300,1000] [--round-sizes 100,300]``.

- ``fanout``: P MQTT clients in this one process (the receive-only path: a light subscriber per
  device with the same :func:`fedoracle.mqtt.client` settings as a device — TCP no-delay, QoS 1 —
  subscribed to the device's task and round topics) wait for a task; a publisher sends
  ``publish`` to anvil; the relay (its own asyncio task in this process, polling every 50 ms)
  turns ``TaskPublished``/``RoundOpened`` into retained messages. Per device we record the time
  from the publish transaction's receipt (wall clock when the receipt came back) to the moment
  that device's client received the ``RoundOpened`` message (and the ``TaskPublished`` one), and
  report p50/p95/max and the time until the last device had it. Block timestamps are whole
  seconds on anvil, too coarse for this, so the receipt time stands in for "the block".
- ``round``: the wall time of one whole round with P full :class:`devices.client.Device` clients
  in one process (a :class:`devices.fleet.Fleet`: 20% malicious, 20% unreliable; each checks the
  round against the chain, trains ``small_cnn`` on a tiny 64-example MNIST shard for one epoch
  with local DP, stores its blob and submits from its own account), the relay and the oracle
  (TFF scoring of every candidate, verdicts, aggregation, finalize) in one process: from the
  publish receipt to the first/last submission, the round's close, and ``TaskFinalized``.

Everything runs on this machine (2 cores, no GPU) beside anvil and mosquitto, often next to other
engineers' test runs: the numbers are an upper bound of what the code costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from demo.services import Anvil, Mosquitto
from fedoracle import mqtt
from fedoracle.chain import Chain, TaskParams, TaskRegistry, dev_account
from fedoracle.commitments import TestSetCommitment
from relay.relay import Relay

RESULTS = Path(__file__).parent / "results"
PUBLISHER, ORACLE, FAUCET = 0, 1, 2


def _pcts(values: list[float]) -> dict:
    v = sorted(values)
    return {
        "n": len(v),
        "p50_ms": round(1e3 * statistics.median(v), 1),
        "p95_ms": round(1e3 * v[min(len(v) - 1, int(0.95 * len(v)))], 1),
        "max_ms": round(1e3 * v[-1], 1),
    }


def _dummy_params() -> TaskParams:
    tc = TestSetCommitment.create([secrets.token_bytes(32) for _ in range(2)], 2)
    return TaskParams(
        oracle=dev_account(ORACLE).address,
        model_spec_hash="0x" + "11" * 32,
        initial_model_hash="0x" + "22" * 32,
        initial_model_uri="file:///init",
        threshold_bp=5000,
        test_set_root=tc.root,
        seed_commitment=tc.seed_commitment,
        num_groups=2,
        groups_per_round=2,
        max_rounds=1,
    )


async def fanout(p: int, anvil: Anvil, broker: Mosquitto) -> dict:
    """Receive latency of P light subscribers for a relayed ``TaskPublished``/``RoundOpened``."""
    registry = await TaskRegistry.deploy(Chain(anvil.rpc_url, dev_account(PUBLISHER)))
    start_block = await registry.chain.block_number() + 1
    relay = Relay(anvil.rpc_url, registry.address, broker.url, from_block=start_block, poll_interval=0.05)
    got_task: dict[int, float] = {}
    got_round: dict[int, float] = {}
    subscribed = 0
    all_in = asyncio.Event()
    stop = asyncio.Event()

    async def subscriber(i: int) -> None:
        nonlocal subscribed
        async with mqtt.client(broker.url, f"bench-{p}-{i}") as c:
            await c.subscribe(mqtt.task_topic("+"), qos=mqtt.QOS)
            await c.subscribe(mqtt.round_topic("+", "+"), qos=mqtt.QOS)
            subscribed += 1
            async for m in c.messages:
                now = time.time()
                doc = json.loads(m.payload)
                if doc.get("registry") != registry.address:
                    continue
                (got_round if "/rounds/" in str(m.topic) else got_task).setdefault(i, now)
                if i in got_task and i in got_round:
                    if len(got_round) == p and len(got_task) == p:
                        all_in.set()
                    await stop.wait()
                    return

    t0 = time.perf_counter()
    clients = []
    for i in range(p):  # connect in waves: a burst of 1,000 handshakes overruns the listen backlog
        clients.append(asyncio.create_task(subscriber(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    while subscribed < p:
        await asyncio.sleep(0.05)
    connect_s = time.perf_counter() - t0
    ready = asyncio.Event()
    relay_job = asyncio.create_task(relay.run(ready))
    await ready.wait()
    sent = time.time()
    _, receipt = await registry.publish(_dummy_params(), 10**15)
    receipt_at = time.time()
    await asyncio.wait_for(all_in.wait(), 120)
    stop.set()
    relay_job.cancel()
    await asyncio.gather(relay_job, *clients, return_exceptions=True)
    rounds = [got_round[i] - receipt_at for i in range(p)]
    tasks = [got_task[i] - receipt_at for i in range(p)]
    return {
        "devices": p,
        "connect_all_s": round(connect_s, 2),
        "receipt_after_send_ms": round(1e3 * (receipt_at - sent), 1),
        "block": receipt["blockNumber"],
        "round_opened_after_receipt": _pcts(rounds),
        "task_published_after_receipt": _pcts(tasks),
        "last_device_ms": round(1e3 * max(rounds + tasks), 1),
        "round_opened_after_send": _pcts([got_round[i] - sent for i in range(p)]),
    }


async def whole_round(p: int, anvil: Anvil, broker: Mosquitto, work: Path, data) -> dict:
    """Wall time of one whole round with P full devices, the relay and the oracle in this process."""
    from devices.client import TrainingConfig
    from devices.fleet import Fleet, FleetConfig, fund
    from fedoracle.blobstore import LocalBlobStore
    from fedoracle.chain import Phase
    from oracle.daemon import Oracle, OracleConfig
    from oracle.pool import InProcessPool
    from oracle.scoring import Scorer
    from publisher.publish import TaskPlan, publish_task

    registry = await TaskRegistry.deploy(Chain(anvil.rpc_url, dev_account(PUBLISHER)))
    blobs = LocalBlobStore(work / f"blobs-{p}")
    vault = work / f"vault-{p}"
    config = FleetConfig(
        count=p,
        malicious=0.2,
        unreliable=0.2,
        flip_rate=1.0,
        emd=1.5,
        samples_per_device=64,
        key_seed=f"bench-{p}",
        training=TrainingConfig(epochs=1, batch_size=32, learning_rate=2e-3),
    )
    fleet = Fleet(config, anvil.rpc_url, registry.address, blobs, broker.url)
    t = time.perf_counter()
    fleet.build()
    build_s = time.perf_counter() - t
    await fund(anvil.rpc_url, f"dev:{FAUCET}", [d.address for d in fleet.devices], 10**17)
    stop = asyncio.Event()
    fleet_job = asyncio.create_task(fleet.run(stop))
    await asyncio.wait_for(_all_connected(fleet), 300)
    plan = TaskPlan(
        dataset="mnist",
        rounds=1,
        threshold=0.1,
        clip=5.0,
        groups_per_round=2,
        test_examples=1_000,
        max_submissions_per_round=p,
        reward_eth=1.0,
        round_duration=3_600,
    )
    relay = Relay(
        anvil.rpc_url,
        registry.address,
        broker.url,
        from_block=await registry.chain.block_number() + 1,
        poll_interval=0.05,
    )
    relay_job = asyncio.create_task(relay.run())
    oracle = Oracle(
        Chain(anvil.rpc_url, dev_account(ORACLE)),
        registry.address,
        blobs,
        InProcessPool(Scorer(blobs, str(vault))),
        OracleConfig(vault=vault, state_dir=work / f"oracle-{p}", poll_interval=0.1, threshold_margin=None),
    )
    oracle_job = asyncio.create_task(oracle.run())
    t0 = time.time()
    published = await publish_task(registry, blobs, vault, plan, dev_account(ORACLE).address, dataset=data)
    t_receipt = time.time()
    task_id = published.task_id
    marks: dict[str, float] = {}
    while True:
        state = await registry.get_state(task_id)
        if "closed" not in marks and state["phase"] != Phase.OPEN:
            marks["closed"] = time.time()
        if state["phase"] in (Phase.FINALIZED, Phase.CANCELLED):
            marks["finalized"] = time.time()
            break
        await asyncio.sleep(0.2)
    events = await registry.get_events(published.block_number, await registry.chain.block_number())
    block_times = {}
    for e in events:
        if e.block_number not in block_times:
            block_times[e.block_number] = (await registry.chain.w3.eth.get_block(e.block_number))["timestamp"]
    subs = [e for e in events if e.name == "ModelSubmitted"]
    verdicts = [e for e in events if e.name == "VerdictPosted"]
    rec = await registry.get_round(task_id, 1)
    stop.set()
    oracle.stopped.set()
    relay_job.cancel()
    await asyncio.gather(fleet_job, oracle_job, relay_job, return_exceptions=True)
    await oracle.close()
    by_kind: dict[str, dict[str, int]] = {}
    accepted = {e.args["device"].lower() for e in verdicts if e.args["accepted"]}
    for d in fleet.devices:
        k = by_kind.setdefault(d.kind, {"devices": 0, "submitted": 0, "accepted": 0})
        k["devices"] += 1
        k["submitted"] += bool(d.stats.submitted)
        k["accepted"] += d.address.lower() in accepted
    return {
        "devices": p,
        "shard": 64,
        "epochs": 1,
        "batch_size": 32,
        "model": "small_cnn",
        "dataset": "mnist",
        "fleet_build_s": round(build_s, 1),
        "publish_s": round(t_receipt - t0, 2),
        "submissions": len(subs),
        "verdicts": len(verdicts),
        "accepted": rec["accepted"],
        "first_submission_s": block_times[subs[0].block_number] - int(t_receipt) if subs else None,
        "last_submission_s": block_times[subs[-1].block_number] - int(t_receipt) if subs else None,
        "closed_s": round(marks["closed"] - t_receipt, 1),
        "round_wall_s": round(marks["finalized"] - t_receipt, 1),
        "global_accuracy": rec["globalAccuracyBp"] / 1e4,
        "by_kind": by_kind,
    }


async def _all_connected(fleet) -> None:
    while not all(d.connected.is_set() for d in fleet.devices):
        await asyncio.sleep(0.1)


def write_md(result: dict) -> str:
    lines = [
        "# Device benchmark",
        "",
        f"Machine: {result['machine']}. Generated by `bench/devices_bench.py`.",
        "",
        "## Relay → MQTT fan-out (receive-only path: one light subscriber per device, same client settings)",
        "",
        "Time from the `publish` transaction's receipt to each device's receipt of the relayed message "
        "(relay polls every 50 ms).",
        "",
        "| P | connect all (s) | RoundOpened p50 / p95 / max (ms) | TaskPublished p50 / p95 / max (ms) "
        "| last device (ms) | RoundOpened after *sending* the tx, p50 / max (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["fanout"]:
        a, b = r["round_opened_after_receipt"], r["task_published_after_receipt"]
        lines.append(
            f"| {r['devices']} | {r['connect_all_s']} | {a['p50_ms']} / {a['p95_ms']} / {a['max_ms']} | "
            f"{b['p50_ms']} / {b['p95_ms']} / {b['max_ms']} | {r['last_device_ms']} | "
            f"{r['round_opened_after_send']['p50_ms']} / {r['round_opened_after_send']['max_ms']} |"
        )
    lines += [
        "",
        "## One whole round (full devices, relay and oracle in one process)",
        "",
        "small_cnn on MNIST, **tiny shards** (64 examples, 1 epoch, batch 32), local DP (clip 5, ε 8), "
        "threshold 0.1 (a timing run: tiny shards do not reach the demo's 0.5), "
        "20% malicious / 20% unreliable; TFF scoring of every candidate. Seconds after the publish receipt "
        "(submission times from block timestamps, whole seconds).",
        "",
        "| P | submissions | accepted | first / last submission (s) | closed (s) | finalized: round wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["round"]:
        lines.append(
            f"| {r['devices']} | {r['submissions']} | {r['accepted']} | {r['first_submission_s']} / "
            f"{r['last_submission_s']} | {r['closed_s']} | {r['round_wall_s']} |"
        )
    lines += ["", result["note"], ""]
    return "\n".join(lines)


async def main(sizes: list[int], round_sizes: list[int]) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "fanout": [],
        "round": [],
        "note": (
            "2 cores shared with anvil, mosquitto, the oracle and often other test runs; "
            "P=1000 uses the receive-only path (full Device objects each also hold a web3 "
            "session and a training shard)."
        ),
    }
    with Anvil(accounts=10) as anvil, Mosquitto() as broker:
        for p in sizes:
            r = await fanout(p, anvil, broker)
            logging.info("fanout %s", r)
            result["fanout"].append(r)
        if round_sizes:
            from fedoracle.learning.data import load_dataset

            data = load_dataset("mnist")
            with tempfile.TemporaryDirectory(prefix="fedoracle-bench-") as work:
                for p in round_sizes:
                    r = await whole_round(p, anvil, broker, Path(work), data)
                    logging.info("round %s", r)
                    result["round"].append(r)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--round-sizes", default="100,300")
    ap.add_argument("--out", default=str(RESULTS / "devices.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # unclosed web3 sessions at exit
    for noisy in ("devices.client", "oracle.daemon", "httpx", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = asyncio.run(
        main([int(x) for x in args.sizes.split(",") if x], [int(x) for x in args.round_sizes.split(",") if x])
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(write_md(res))
    print(json.dumps(res, indent=1))
