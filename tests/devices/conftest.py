"""Fixtures for the device suites: a dedicated broker, a fresh registry, and a whole-task harness.

Everything is real: anvil (the session's), mosquitto over TCP, TF/TFF training and scoring. The
accounts are distinct from the ones other suites use on the shared anvil (fresh registries are
deployed and published to by dev:3, the oracle is dev:4, the faucet dev:5; devices are derived
from a per-test key seed and funded), so no cached nonce elsewhere in the session goes stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from demo.services import Mosquitto
from devices.client import Device
from devices.fleet import Fleet, FleetConfig, fund
from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, ChainEvent, Phase, TaskRegistry, dev_account
from fedoracle.errors import ToolMissing
from publisher.publish import PublishedTask, TaskPlan, publish_task
from relay.relay import Relay
from tests.conftest import run

PUBLISHER, ORACLE, FAUCET = 3, 4, 5

log = logging.getLogger(__name__)


@pytest.fixture
def own_broker():
    """A mosquitto of this test's own (fault tests restart it; the session broker stays up)."""
    try:
        broker = Mosquitto()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    yield broker
    broker.stop()


@pytest.fixture
def fresh_registry(anvil) -> TaskRegistry:
    """A registry deployed for this test alone, so its balance is this test's money only."""
    return run(TaskRegistry.deploy(Chain(anvil.rpc_url, dev_account(PUBLISHER))))


@dataclass
class Harness:
    """One task on anvil with its relay, oracle and devices running in this event loop."""

    registry: TaskRegistry
    published: PublishedTask
    blobs: LocalBlobStore
    relay: Relay
    oracle: object
    devices: list[Device]
    jobs: dict[str, asyncio.Task] = field(default_factory=dict)

    @property
    def task_id(self) -> int:
        return self.published.task_id

    async def events(self, name: str | None = None) -> list[ChainEvent]:
        """This task's events so far (optionally of one name)."""
        head = await self.registry.chain.block_number()
        return [
            e
            for e in await self.registry.get_events(self.published.block_number, head)
            if e.args.get("taskId") == self.task_id and (name is None or e.name == name)
        ]

    async def wait_phase(self, *phases: Phase, round_: int | None = None, timeout: float = 300) -> dict:
        """Waits until the task is in one of ``phases`` (and at ``round_`` when given)."""

        async def poll() -> dict:
            while True:
                state = await self.registry.get_state(self.task_id)
                if state["phase"] in phases and (round_ is None or state["round"] == round_):
                    return state
                await asyncio.sleep(0.2)

        return await asyncio.wait_for(poll(), timeout)

    def start_device(self, device: Device) -> asyncio.Task:
        job = asyncio.create_task(device.run(), name=device.name)
        self.jobs[device.name] = job
        return job


async def wait_for(predicate, timeout: float = 120, interval: float = 0.1) -> None:
    """Polls ``predicate()`` (sync or async) until it is true."""

    async def poll() -> None:
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(interval)

    await asyncio.wait_for(poll(), timeout)


def fleet_config(count: int, key_seed: str, **kw) -> FleetConfig:
    """The demo's training (record-level DP-SGD, :data:`fedoracle.defaults.DEFAULTS`) on small shards.

    The clip is in the plan; 3 epochs (the default 2 is for 2,000-example shards: a 400-example
    shard takes 7 steps an epoch), flip rate 1.0.
    """
    from devices.client import TrainingConfig

    training = TrainingConfig(epochs=kw.pop("epochs", 3))
    return FleetConfig(
        count=count,
        key_seed=key_seed,
        flip_rate=kw.pop("flip_rate", 1.0),
        emd=1.5,
        samples_per_device=kw.pop("samples_per_device", 400),
        training=training,
        **kw,
    )


@contextlib.asynccontextmanager
async def task_harness(
    anvil,
    broker_url: str,
    registry: TaskRegistry,
    tmp_path: Path,
    mnist,
    plan: TaskPlan,
    fleet: FleetConfig | None = None,
    *,
    oracle: bool = True,
    threshold_margin: float | None = 0.05,
    start_devices: bool = True,
    relay: bool = True,
) -> AsyncIterator[Harness]:
    """Publishes ``plan`` and runs relay, oracle and the fleet's devices until the block exits."""
    from oracle.daemon import Oracle, OracleConfig
    from oracle.pool import InProcessPool
    from oracle.scoring import Scorer

    blobs = LocalBlobStore(tmp_path / "blobs")
    vault = tmp_path / "vault"
    publisher = registry  # publishes (and refunds) through the registry's own account and nonce
    devices: list[Device] = []
    fleet_obj = None
    if fleet is not None:
        fleet_obj = Fleet(fleet, anvil.rpc_url, registry.address, blobs, broker_url)
        devices = fleet_obj.build()
        await fund(anvil.rpc_url, f"dev:{FAUCET}", [d.address for d in devices], 10**18)
    published = await publish_task(publisher, blobs, vault, plan, dev_account(ORACLE).address, dataset=mnist)
    for d in devices:
        d.tasks = {published.task_id}
    relay_obj = Relay(anvil.rpc_url, registry.address, broker_url, from_block=published.block_number)
    orc = None
    if not oracle:  # no oracle to key round 1: key it from its account, as it would (devices seal to it)
        from tests.oracle.kit import key_round_as_oracle

        await key_round_as_oracle(registry, dev_account(ORACLE).address, published.task_id)
    if oracle:
        orc = Oracle(
            Chain(anvil.rpc_url, dev_account(ORACLE)),
            registry.address,
            blobs,
            InProcessPool(Scorer(blobs, str(vault))),
            OracleConfig(
                vault=vault,
                state_dir=tmp_path / "oracle",
                poll_interval=0.1,
                from_block=published.block_number,
                threshold_margin=threshold_margin,
            ),
        )
    h = Harness(publisher, published, blobs, relay_obj, orc, devices)
    ready = asyncio.Event()
    if relay:
        h.jobs["relay"] = asyncio.create_task(relay_obj.run(ready), name="relay")
    else:
        ready.set()
    if orc is not None:
        h.jobs["oracle"] = asyncio.create_task(orc.run(), name="oracle")
    if start_devices:
        for d in devices:
            h.start_device(d)
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield h
    finally:
        if orc is not None:
            orc.stopped.set()
        for job in h.jobs.values():
            job.cancel()
        await asyncio.gather(*h.jobs.values(), return_exceptions=True)
        if orc is not None:
            await orc.close()
        if fleet_obj is not None:
            fleet_obj.executor.shutdown(wait=True, cancel_futures=True)
