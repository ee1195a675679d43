"""The chain→MQTT relay against anvil and a real broker over TCP."""

from __future__ import annotations

import asyncio
import json

from fedoracle import mqtt
from fedoracle.chain import Chain, dev_account
from fedoracle.units import BP
from relay.relay import Relay
from tests.conftest import run
from tests.core.test_chain import params


def test_lifecycle_events_become_retained_messages(registry, anvil, broker):
    async def go():
        start = await registry.chain.block_number() + 1
        task_id, receipt = await registry.publish(params(max_submissions_per_round=1), 10**15)
        relay = Relay(anvil.rpc_url, registry.address, broker.url, from_block=start)
        ready = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(ready))
        await ready.wait()
        device = registry.with_chain(Chain(anvil.rpc_url, dev_account(9)))
        await device.submit(
            task_id, "0x" + "ab" * 32, "u", dev_account(9).address, 5, max_threshold_bp=BP
        )  # fills the round: anyone may now close it
        await device.close_submissions(task_id)
        while relay.published < 4:
            await asyncio.sleep(0.05)
        # A subscriber that connects now still sees the retained state.
        got: dict[str, dict] = {}
        async with mqtt.client(broker.url, "late-subscriber") as c:
            await c.subscribe(f"{mqtt.task_topic(task_id)}/#", qos=1)
            await c.subscribe(mqtt.task_topic(task_id), qos=1)

            async def collect():
                async for m in c.messages:
                    got[str(m.topic)] = json.loads(m.payload)
                    if len(got) == 3:
                        return

            await asyncio.wait_for(collect(), 10)
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
        return task_id, receipt, got

    task_id, receipt, got = run(go())
    task = mqtt.TaskMessage.model_validate(got[mqtt.task_topic(task_id)])
    assert task.phase == "closed" and task.threshold_bp == 5000
    rnd = mqtt.RoundMessage.model_validate(got[mqtt.round_topic(task_id, 1)])
    assert rnd.global_model_hash == "0x" + "22" * 32
    assert rnd.tx_hash == "0x" + bytes(receipt["transactionHash"]).hex()
    assert got[mqtt.threshold_topic(task_id)]["threshold_bp"] == 5000
