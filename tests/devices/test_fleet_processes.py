"""The fleet command, one device per process, as on separate hosts.

It joins only the tasks it is told to, and a device process killed mid-training does not block
the round (the deadline closes it). The processes get only URLs (RPC, broker) and the blob
store; never the oracle's files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eth_account import Account

from devices.fleet import device_key, fund, payee_address
from fedoracle import mqtt
from fedoracle.chain import Phase
from fedoracle.procs import stop_process_groups
from tests.conftest import run
from tests.devices.conftest import FAUCET, task_harness, wait_for
from tests.devices.test_faults import quick_plan


def spawn_device(
    index: int, anvil, registry, broker, blobs: Path, key_seed: str, task_id: int, epochs: int, log_path: Path
) -> subprocess.Popen:
    """``fedoracle devices run`` for device ``index`` of a 2-device fleet, in its own process group."""
    args = [
        sys.executable,
        "-m",
        "fedoracle.cli",
        "-v",
        "devices",
        "run",
        "--rpc-url",
        anvil.rpc_url,
        "--registry",
        registry.address,
        "--broker-url",
        broker.url,
        "--blob-store",
        f"file://{blobs}",
        "--count",
        "1",
        "--first-index",
        str(index),
        "--fleet-size",
        "2",
        "--malicious",
        "0",
        "--unreliable",
        "0",
        "--samples-per-device",
        "400",
        "--epochs",
        str(epochs),
        "--key-seed",
        key_seed,
        "--task",
        str(task_id),
    ]
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )


async def presence(broker_url: str, addresses: list[str], want: str, timeout: float = 120) -> None:
    """Waits until every address's retained presence is ``want``."""
    seen: dict[str, str] = {}
    async with mqtt.client(broker_url, f"presence-{time.monotonic_ns()}") as c:
        for a in addresses:
            await c.subscribe(mqtt.presence_topic(a), qos=1)

        async def collect() -> None:
            async for m in c.messages:
                seen[str(m.topic)] = bytes(m.payload).decode()
                if all(seen.get(mqtt.presence_topic(a)) == want for a in addresses):
                    return

        await asyncio.wait_for(collect(), timeout)


def test_killed_device_process_does_not_block_the_round(anvil, broker, fresh_registry, tmp_path, mnist):
    registry = fresh_registry
    key_seed = f"procs-{tmp_path.name}"
    addresses = [Account.from_key(device_key(key_seed, i)).address for i in (0, 1)]
    procs: list[subprocess.Popen] = []

    async def go():
        await fund(anvil.rpc_url, f"dev:{FAUCET}", addresses, 10**18)
        # Task 1 is a decoy the fleet is not told to join; task 2 is theirs.
        async with task_harness(
            anvil,
            broker.url,
            registry,
            tmp_path / "decoy",
            mnist,
            quick_plan(max_submissions_per_round=5),
            oracle=False,
        ) as decoy:
            target = decoy.task_id + 1
            blobs = tmp_path / "blobs"
            survivor = spawn_device(0, anvil, registry, broker, blobs, key_seed, target, 3, tmp_path / "dev0.log")
            victim = spawn_device(1, anvil, registry, broker, blobs, key_seed, target, 300, tmp_path / "dev1.log")
            procs.extend([survivor, victim])
            await presence(broker.url, addresses, "online", timeout=180)
            # The deadline is what closes this round: three slots, two devices, one of them killed.
            plan = quick_plan(max_submissions_per_round=3, round_duration=40)
            async with task_harness(anvil, broker.url, registry, tmp_path, mnist, plan, threshold_margin=None) as h:
                assert h.task_id == target
                await wait_for(
                    lambda: f"training for task {target} round 1" in (tmp_path / "dev1.log").read_text(), timeout=120
                )
                os.killpg(victim.pid, signal.SIGKILL)  # mid-training, no goodbye
                await presence(broker.url, [addresses[1]], "offline", timeout=60)  # its last will
                state = await h.wait_phase(Phase.FINALIZED, timeout=300)
                await wait_for(lambda: registry.chain.balance(payee_address(key_seed, 0)), timeout=60)
                rec = await registry.get_round(target, 1)
                submitted = [e.args["device"] for e in await h.events("ModelSubmitted")]
                decoy_submitted = await decoy.events("ModelSubmitted")
                closed = await h.events("SubmissionsClosed")
                payee0 = await registry.chain.balance(payee_address(key_seed, 0))
            os.killpg(survivor.pid, signal.SIGTERM)
            code = survivor.wait(60)
            await presence(broker.url, [addresses[0]], "offline", timeout=30)  # said goodbye on SIGTERM
            return state, rec, submitted, decoy_submitted, closed, payee0, code

    try:
        state, rec, submitted, decoy_submitted, closed, payee0, code = run(asyncio.wait_for(go(), 600))
    finally:
        stop_process_groups(procs, 30, sig=signal.SIGKILL)
    assert state["phase"] == Phase.FINALIZED
    assert submitted == [addresses[0]]  # the killed device never submitted
    assert len(closed) == 1  # closed by the oracle at the deadline, not by the cap (3 slots)
    assert rec["settled"] and rec["accepted"] == 1
    assert payee0 == rec["rewardPerAccepted"] > 0  # the survivor claimed its share by itself
    assert decoy_submitted == []  # --task kept the fleet out of the other task
    assert code == 0
    assert all(p.poll() is not None for p in procs)
