"""Faults a fleet meets in the field: a broker restart, retained replays, forged and malformed messages.

Real anvil, real mosquitto over TCP, real TF/TFF.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

from devices.client import Device
from fedoracle import mqtt
from fedoracle.chain import Phase
from fedoracle.defaults import DEFAULTS
from publisher.publish import TaskPlan
from tests.conftest import run
from tests.devices.conftest import fleet_config, task_harness, wait_for


def quick_plan(**kw) -> TaskPlan:
    """A small MNIST task; the threshold is low because these tests are about liveness."""
    base = dict(
        dataset="mnist",
        rounds=1,
        threshold=0.1,
        clip=DEFAULTS.clip,
        groups_per_round=1,
        test_examples=400,
        max_submissions_per_round=3,
        reward_eth=0.03,
        round_duration=600,
    )
    return TaskPlan(**{**base, **kw})


def test_broker_restart_mid_round_devices_reconnect_and_finish(anvil, own_broker, fresh_registry, tmp_path, mnist):
    plan = quick_plan(rounds=2)

    async def go():
        async with task_harness(
            anvil,
            own_broker.url,
            fresh_registry,
            tmp_path,
            mnist,
            plan,
            fleet_config(3, f"restart-{tmp_path.name}", malicious=0, unreliable=0),
            threshold_margin=None,
        ) as h:
            await wait_for(lambda: all((h.task_id, 1) in d.stats.training for d in h.devices))
            state = await fresh_registry.get_state(h.task_id)
            before = await h.events("ModelSubmitted")
            own_broker.restart()  # mosquitto without persistence: sessions and retained state are gone
            await h.wait_phase(Phase.FINALIZED, timeout=300)
            submitted = Counter((e.args["device"].lower(), e.args["round"]) for e in await h.events("ModelSubmitted"))
            return h, state, len(before), submitted

    h, state_at_restart, submitted_before, submitted = run(asyncio.wait_for(go(), 600))
    assert state_at_restart["phase"] == Phase.OPEN and state_at_restart["round"] == 1
    assert submitted_before < 3  # the restart came while round 1 was still being worked on
    # Every device lost the broker, came back, heard round 2 (opened after the restart) and
    # submitted once per round.
    assert all(d.stats.connects >= 2 for d in h.devices), [d.stats.connects for d in h.devices]
    assert h.relay.connects >= 2
    for d in h.devices:
        assert d.stats.submitted == [(h.task_id, 1), (h.task_id, 2)], (d.name, d.stats)
    assert len(submitted) == 6 and set(submitted.values()) == {1}


async def _retained(broker_url: str, topic: str) -> bytes:
    async with mqtt.client(broker_url, "replay-reader") as c:
        await c.subscribe(topic, qos=1)
        async for m in c.messages:
            return bytes(m.payload)


def test_retained_replay_and_a_restarted_device_do_not_submit_twice(anvil, broker, registry, tmp_path, mnist):
    plan = quick_plan(max_submissions_per_round=5)  # stays open: the replay meets an open round

    async def go():
        async with task_harness(
            anvil,
            broker.url,
            registry,
            tmp_path,
            mnist,
            plan,
            fleet_config(2, f"replay-{tmp_path.name}", malicious=0, unreliable=0),
            oracle=False,
        ) as h:
            task_id = h.task_id
            await wait_for(lambda: all(d.stats.submitted for d in h.devices))
            # 1. The same retained messages again (a relay restart republishes them like this).
            async with mqtt.client(broker.url, "replayer") as c:
                for topic in (mqtt.task_topic(task_id), mqtt.round_topic(task_id, 1)):
                    await c.publish(topic, await _retained(broker.url, topic), qos=1, retain=True)
            # 2. Device 0's process restarts: a new client with the same key and no memory.
            old = h.devices[0]
            h.jobs[old.name].cancel()
            await asyncio.gather(h.jobs[old.name], return_exceptions=True)
            reborn = Device(
                old.account,
                anvil.rpc_url,
                registry.address,
                h.blobs,
                broker.url,
                old.train,
                payee=old.payee,
                name=old.name + "-restarted",
                tasks={task_id},
            )
            h.start_device(reborn)
            await wait_for(lambda: reborn.stats.skipped)
            # 3. And a reconnect of device 1 (a fresh subscription gets the retained round again).
            h.jobs[h.devices[1].name].cancel()
            await asyncio.gather(h.jobs[h.devices[1].name], return_exceptions=True)
            h.start_device(h.devices[1])
            await wait_for(lambda: h.devices[1].stats.connects >= 2)
            await asyncio.sleep(1.0)  # time for the replays to reach everyone
            submitted = Counter(e.args["device"].lower() for e in await h.events("ModelSubmitted"))
            nonces = [await registry.chain.w3.eth.get_transaction_count(d.address) for d in h.devices]
            state = await registry.get_state(task_id)
            return h, reborn, submitted, nonces, state

    h, reborn, submitted, nonces, state = run(asyncio.wait_for(go(), 300))
    assert state["phase"] == Phase.OPEN  # the round was open all along: only dedup prevented a resubmission
    assert submitted == Counter({d.address.lower(): 1 for d in h.devices})
    assert nonces == [1, 1]  # no second transaction was even attempted
    for d in h.devices:
        assert d.stats.training == [(h.task_id, 1)]  # nor a second training
    assert reborn.stats.training == [] and reborn.stats.submitted == []
    assert reborn.stats.skipped == [(h.task_id, 1, "already submitted")]


def test_malformed_and_forged_messages_are_logged_and_ignored(anvil, broker, registry, tmp_path, mnist, caplog):
    caplog.set_level(logging.INFO, logger="devices.client")
    plan = quick_plan(max_submissions_per_round=5)

    async def go():
        # The relay starts late: the forgeries reach the device before the genuine round does.
        async with task_harness(
            anvil,
            broker.url,
            registry,
            tmp_path,
            mnist,
            plan,
            fleet_config(1, f"forged-{tmp_path.name}", malicious=0, unreliable=0),
            oracle=False,
            relay=False,
        ) as h:
            (device,) = h.devices
            task_id = h.task_id
            await wait_for(lambda: device.connected.is_set())
            task = await registry.get_task(task_id)
            genuine = mqtt.RoundMessage(
                registry=registry.address,
                chain_id=await registry.chain.chain_id(),
                block_number=h.published.block_number,
                tx_hash="0x" + "00" * 32,
                task_id=task_id,
                round=1,
                global_model_hash=task["globalModelHash"],
                global_model_uri="",
                deadline=0,
            ).model_dump()
            topic = mqtt.round_topic(task_id, 1)
            forged = [
                b"not json at all",
                b"[1, 2, 3]",
                b"\xff\xfe",
                json.dumps({**genuine, "round": "one"}).encode(),  # schema
                json.dumps({**genuine, "registry": "0x" + "12" * 20}).encode(),  # another registry
                json.dumps({**genuine, "global_model_hash": "0x" + "ab" * 32}).encode(),  # not the chain's model
                json.dumps({**genuine, "chain_id": 1}).encode(),  # another chain
            ]
            async with mqtt.client(broker.url, "forger") as c:
                for payload in forged:
                    await c.publish(topic, payload, qos=1)
                await c.publish(mqtt.round_topic(task_id, 2), json.dumps({**genuine, "round": 2}), qos=1)
            await wait_for(lambda: len(device.stats.dropped) >= len(forged) + 1)
            dropped_before_genuine = list(device.stats.dropped)
            trained_before_genuine = list(device.stats.training)
            h.jobs["relay"] = asyncio.create_task(h.relay.run())
            await wait_for(lambda: device.stats.submitted)
            alive = not h.jobs[device.name].done()
            submitted = await h.events("ModelSubmitted")
            return h, device, dropped_before_genuine, trained_before_genuine, alive, submitted

    h, device, dropped, trained, alive, submitted = run(asyncio.wait_for(go(), 300))
    assert trained == []  # no forgery made the device train
    reasons = " | ".join(why for _, why in dropped)
    for needle in (
        "JSON",
        "expected a JSON object",
        "registry",
        "differs from the chain's",
        "chain id",
        "round 2 is not open on-chain",
    ):
        assert needle in reasons, (needle, reasons)
    assert alive  # nothing crashed the listener
    # The forged round did not shadow the genuine one: it was trained on and submitted, once.
    assert device.stats.submitted == [(h.task_id, 1)]
    assert [e.args["device"].lower() for e in submitted] == [device.address.lower()]
    logged = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(logged) >= len(dropped)
