"""One MQTT-connected device: hears a round open, trains with local DP, submits, claims.

MQTT only wakes the device; the chain decides. On a round message the device checks, against the
contract, that the task is open in that round, that the global model hash matches, and that it
has not submitted yet (so a retained replay or a reconnect never causes a second submission).
Then it fetches the global model (verifying its hash), trains on its shard (``get_global_model``,
``local_model_training``), clips and noises the update (``add_noise``), optionally pre-evaluates
against the announced threshold to save gas, stores the blob and submits (``submit_model_update``).
When a round it was accepted in is settled, it claims its reward to its payee.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fedoracle import mqtt
from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, ChainError, Phase, TaskRegistry
from fedoracle.codec import ModelSpec, decode, encode_with_hash, spec_from_blob

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """How a device trains (the paper's defaults: batch 128, lr 1e-4)."""

    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 1e-4
    optimizer: str = "adam"
    dp: bool = True
    dp_scaling: str = "sample"  # "sample": the paper's sensitivity S/D; "update": S (see privacy.py)
    pre_evaluate: bool = False


@dataclass
class DeviceStats:
    """What a device did, for reports and tests."""

    submitted: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int, str]] = field(default_factory=list)
    claimed_wei: int = 0
    claims: list[tuple[int, int]] = field(default_factory=list)
    verdicts: dict[tuple[int, int], dict] = field(default_factory=dict)
    epsilon_spent: float = 0.0


Trainer = Callable[[ModelSpec, list[np.ndarray], dict[str, Any]], tuple[list[np.ndarray], int, float | None]]
"""``(spec, global_weights, task) -> (noisy_update, num_samples, local_accuracy_or_None)``."""


class Device:
    """A device with its own account, payee, data and behaviour.

    Args:
        account: the device's signing account.
        rpc_url: the chain.
        registry: the registry address.
        blobs: the blob store.
        broker_url: the MQTT broker.
        train: computes the noisy update from the global model (see :data:`Trainer`).
        payee: who receives its rewards (its own address when ``None``).
        executor: where training runs (a shared pool in a fleet).
        name: label for logs.
        kind: honest, malicious or unreliable (for reports; behaviour lives in ``train``).
        tasks: the task ids this device joins (``None``: every task it hears of).
    """

    def __init__(self, account: LocalAccount, rpc_url: str, registry: str, blobs: BlobStore, broker_url: str,
                 train: Trainer, *, payee: str | None = None, executor: Executor | None = None,
                 name: str | None = None, kind: str = "honest", tasks: set[int] | None = None) -> None:
        self.account = account
        self.registry = TaskRegistry(Chain(rpc_url, account), registry)
        self.blobs = blobs
        self.broker_url = broker_url
        self.train = train
        self.payee = payee or account.address
        self.executor = executor
        self.name = name or account.address[:10]
        self.kind = kind
        self.tasks = tasks
        self.stats = DeviceStats()
        self._handled: set[tuple[int, int]] = set()
        self._settled_tasks: set[int] = set()
        self._busy = asyncio.Lock()
        self._claiming = asyncio.Lock()
        self.connected = asyncio.Event()

    @property
    def address(self) -> str:
        return self.account.address

    async def run(self) -> None:
        """Listens forever, reconnecting to the broker with backoff."""
        import aiomqtt

        delay = 0.1
        me = self.address.lower()
        while True:
            try:
                async with mqtt.client(self.broker_url, identifier=f"dev-{me}",
                                       will=(mqtt.presence_topic(me), b"offline")) as client:
                    delay = 0.1
                    await client.publish(mqtt.presence_topic(me), b"online", qos=mqtt.QOS, retain=True)
                    await client.subscribe(mqtt.round_topic("+", "+"), qos=mqtt.QOS)
                    await client.subscribe(mqtt.task_topic("+"), qos=mqtt.QOS)
                    await client.subscribe(mqtt.verdict_topic("+", me), qos=mqtt.QOS)
                    self.connected.set()
                    async for message in client.messages:
                        await self.on_message(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.info("%s lost the broker (%s); reconnecting in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 5.0)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Dispatches one MQTT message (malformed ones are logged and dropped)."""
        if not payload:
            return
        try:
            doc = json.loads(payload)
            if doc.get("registry", "").lower() != self.registry.address.lower():
                return
            if self.tasks is not None and doc.get("task_id") not in self.tasks:
                return
            if "/rounds/" in topic:
                msg = mqtt.RoundMessage.model_validate(doc)
                asyncio.ensure_future(self._guarded(self.handle_round(msg)))
            elif "/verdicts/" in topic:
                v = mqtt.VerdictMessage.model_validate(doc)
                self.stats.verdicts[(v.task_id, v.round)] = {"accepted": v.accepted, "accuracy_bp": v.accuracy_bp,
                                                             "reason": v.reason}
            else:
                task = mqtt.TaskMessage.model_validate(doc)
                if task.phase in ("finalized", "cancelled"):
                    asyncio.ensure_future(self._guarded(self.claim_all(task.task_id)))
        except ValueError as exc:
            log.warning("%s: dropped a malformed message on %s: %s", self.name, topic, exc)

    async def _guarded(self, coro) -> None:
        try:
            await coro
        except ChainError as exc:
            log.warning("%s: %s", self.name, exc)
        except Exception:
            log.exception("%s: unexpected error", self.name)

    async def handle_round(self, msg: mqtt.RoundMessage) -> None:
        """Trains and submits for a round, at most once, after checking the message on-chain."""
        key = (msg.task_id, msg.round)
        async with self._busy:
            if key in self._handled:
                return
            self._handled.add(key)
            if msg.round > 1:
                await self._claim_settled(msg.task_id, msg.round - 1)
            state = await self.registry.get_state(msg.task_id)
            if state["phase"] != Phase.OPEN or state["round"] != msg.round:
                self.stats.skipped.append((*key, "round not open on-chain"))
                return
            task = await self.registry.get_task(msg.task_id)
            if task["globalModelHash"] != msg.global_model_hash:
                self.stats.skipped.append((*key, "global model hash differs from the chain's"))
                return
            if int.from_bytes(await self.registry.get_commitment(*key, self.address), "big"):
                self.stats.skipped.append((*key, "already submitted"))
                return
            spec = spec_from_blob(self.blobs.get(task["modelSpecHash"]), task["modelSpecHash"])
            global_weights = decode(self.blobs.get(msg.global_model_hash, max_bytes=spec.max_bytes), spec,
                                    expected_hash=msg.global_model_hash)
            loop = asyncio.get_running_loop()
            update, num_samples, local_acc = await loop.run_in_executor(
                self.executor, self.train, spec, global_weights, {**task, "thresholdBp": state["thresholdBp"],
                                                                 "taskId": msg.task_id, "round": msg.round})
            if local_acc is not None and local_acc * 10_000 < state["thresholdBp"]:
                # The paper's gas-saving step: a device that cannot pass the announced threshold
                # on its own validation data does not submit.
                self.stats.skipped.append((*key, f"pre-evaluation {local_acc:.4f} below threshold"))
                return
            data, digest = encode_with_hash(update, spec)
            self.blobs.put(data)
            await self.registry.submit(msg.task_id, digest, self.blobs.uri(digest), self.payee, num_samples)
            self.stats.submitted.append(key)
            log.info("%s submitted %s for task %d round %d", self.name, digest[:10], *key)

    async def claim_all(self, task_id: int) -> None:
        """Claims every settled round of a task this device was accepted in."""
        task = await self.registry.get_task(task_id)
        for r in range(1, task["maxRounds"] + 1):
            await self._claim_settled(task_id, r)

    async def _claim_settled(self, task_id: int, round_: int) -> None:
        async with self._claiming:  # one claim at a time: a second would race the first
            if (task_id, round_) in self.stats.claims:
                return
            amount = await self.registry.claimable(task_id, round_, self.address)
            if amount:
                await self.registry.claim(task_id, round_, self.address)
                self.stats.claims.append((task_id, round_))
                self.stats.claimed_wei += amount
                log.info("%s claimed %d wei for task %d round %d", self.name, amount, task_id, round_)
