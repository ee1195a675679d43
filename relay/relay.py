"""The chain→MQTT relay: republishes the registry's lifecycle events on MQTT topics.

A small daemon of its own rather than a part of the oracle: it holds no key and no state (on
start it re-reads the registry's events from ``from_block`` and republishes the retained topics,
which is idempotent), so it can run anywhere near the broker, be restarted freely, and be
replaced by any other relay without trusting it: devices check every message against the chain.

It keeps the latest payload of every retained topic in memory and republishes them all whenever
it (re)connects, so a broker that restarts without persistence gets its retained state back and
a device that reconnects to it still finds the open round.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fedoracle import mqtt
from fedoracle.chain import Chain, ChainEvent, TaskRegistry
from fedoracle.follow import LogFollower
from fedoracle.hashing import normalize_hash
from fedoracle.retry import Backoff

log = logging.getLogger(__name__)

_PHASE_OF = {
    "RoundOpened": "open",
    "SubmissionsClosed": "closed",
    "TaskFinalized": "finalized",
    "TaskCancelled": "cancelled",
}


class Relay:
    """Turns registry events into retained MQTT messages.

    Args:
        rpc_url: the chain.
        registry: the registry address.
        broker_url: the MQTT broker.
        from_block: the block to start reading at (the registry's deployment block).
        poll_interval: seconds to sleep when the chain has no new block.
    """

    def __init__(
        self, rpc_url: str, registry: str, broker_url: str, *, from_block: int = 0, poll_interval: float = 0.1
    ) -> None:
        self.registry = TaskRegistry(Chain(rpc_url), registry)
        self.broker_url = broker_url
        self.from_block = from_block
        self.poll_interval = poll_interval
        self._tasks: dict[int, dict[str, Any]] = {}
        self._retained: dict[str, str] = {}
        self.published = 0
        self.connects = 0

    def messages(self, ev: ChainEvent, chain_id: int) -> list[tuple[str, dict[str, Any]]]:
        """The (topic, payload) pairs an event becomes.

        Args:
            ev: a decoded registry event.
            chain_id: the chain's id, carried in every payload.

        Returns:
            The retained messages to publish, in order (none for an event that is not relayed).
        """
        a = ev.args
        base: dict[str, Any] = {
            "registry": self.registry.address,
            "chain_id": chain_id,
            "block_number": ev.block_number,
            "tx_hash": ev.tx_hash,
        }
        task_id: int | None = a.get("taskId")
        if task_id is None:  # not a task's event: nothing below relays it
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        if ev.name == "TaskPublished":
            task = mqtt.TaskMessage(
                **base,
                task_id=task_id,
                publisher=a["publisher"],
                oracle=a["oracle"],
                reward_wei=a["reward"],
                model_spec_hash=normalize_hash(a["modelSpecHash"]),
                initial_model_hash=normalize_hash(a["initialModelHash"]),
                initial_model_uri=a["initialModelURI"],
                threshold_bp=a["thresholdBp"],
                max_rounds=a["maxRounds"],
                phase="open",
            ).model_dump()
            self._tasks[task_id] = task
            out.append((mqtt.task_topic(task_id), task))
            out.append(
                (
                    mqtt.threshold_topic(task_id),
                    mqtt.ThresholdMessage(**base, task_id=task_id, round=1, threshold_bp=a["thresholdBp"]).model_dump(),
                )
            )
        elif ev.name == "RoundOpened":
            out.append(
                (
                    mqtt.round_topic(task_id, a["round"]),
                    mqtt.RoundMessage(
                        **base,
                        task_id=task_id,
                        round=a["round"],
                        global_model_hash=normalize_hash(a["globalModelHash"]),
                        global_model_uri=a["globalModelURI"],
                        deadline=a["deadline"],
                    ).model_dump(),
                )
            )
        elif ev.name == "ThresholdAnnounced":
            out.append(
                (
                    mqtt.threshold_topic(task_id),
                    mqtt.ThresholdMessage(
                        **base, task_id=task_id, round=a["round"], threshold_bp=a["thresholdBp"]
                    ).model_dump(),
                )
            )
        elif ev.name == "VerdictPosted":
            out.append(
                (
                    mqtt.verdict_topic(task_id, a["device"]),
                    mqtt.VerdictMessage(
                        **base,
                        task_id=task_id,
                        round=a["round"],
                        device=a["device"],
                        model_hash=normalize_hash(a["modelHash"]),
                        accuracy_bp=a["accuracyBp"],
                        reason=a["reason"],
                        accepted=a["accepted"],
                    ).model_dump(),
                )
            )
        if ev.name in _PHASE_OF and task_id in self._tasks:
            task = dict(
                self._tasks[task_id], phase=_PHASE_OF[ev.name], block_number=ev.block_number, tx_hash=ev.tx_hash
            )
            self._tasks[task_id] = task
            if ev.name != "RoundOpened" or a["round"] > 1:
                out.append((mqtt.task_topic(task_id), task))
        return out

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Relays forever (reconnecting to the broker with backoff)."""
        import aiomqtt

        follower = LogFollower(self.registry, self.from_block, poll_interval=self.poll_interval)
        chain_id = await self.registry.chain.chain_id()
        backoff = Backoff(0.2, cap=5.0)
        pending: list[tuple[str, dict[str, Any]]] = []
        while True:
            try:
                async with mqtt.client(self.broker_url, identifier=f"fedoracle-relay-{id(self):x}") as client:
                    backoff.reset()
                    self.connects += 1
                    # A restarted broker may have lost the retained state: put it back (idempotent).
                    for topic, text in list(self._retained.items()):
                        await client.publish(topic, text, qos=mqtt.QOS, retain=True)
                    if self.connects > 1:
                        log.info("relay reconnected; republished %d retained topics", len(self._retained))
                    if ready is not None:
                        ready.set()
                    async for batch in follower.batches():
                        for ev in batch.events:
                            if not ev.removed:
                                pending.extend(self.messages(ev, chain_id))
                        while pending:
                            topic, payload = pending[0]
                            text = json.dumps(payload)
                            await client.publish(topic, text, qos=mqtt.QOS, retain=True)
                            self._retained[topic] = text
                            pending.pop(0)
                            self.published += 1
            except aiomqtt.MqttError as exc:
                delay = backoff.next()
                log.warning("relay lost the broker (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
