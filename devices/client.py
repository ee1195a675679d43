"""One MQTT-connected device: hears a round open, trains with local DP, submits, claims.

MQTT only wakes the device; the chain decides. On a round message the device checks, against the
contract, that the task is open in that round, that the global model hash matches, and that it
has not submitted yet (so a retained replay or a reconnect never causes a second submission).
Then it fetches the global model (verifying its hash), trains on its shard (``get_global_model``,
``local_model_training``), clips and noises the update (``add_noise``), optionally pre-evaluates
against the announced threshold to save gas, seals the update to the round's oracle key for its own
address (:mod:`fedoracle.seal`: nobody else can read it before the round is settled, and a copy
submitted by another address does not open), stores the sealed blob and submits its hash
(``submit_model_update``).
When the task ends (finalized or cancelled) it claims every round it was accepted in with one
``claimMany`` (one transfer), so claims never hold up the next round's training. With each
submission it declares the privacy budget it has spent on the task so far (``epsilonSpentMilli``).

Robustness: a message is marked handled only once the chain has confirmed it (so a forged round
message with a wrong global hash cannot shadow the genuine one), malformed payloads and messages
for another registry or chain are logged and dropped, a submission that fails while its round is
still open is retried with backoff, the device announces itself on a retained presence topic
(``online`` on connect, ``offline`` as its last will and on a clean stop), and every action is
logged with the device's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from numpy.typing import NDArray

from fedoracle import mqtt
from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, Phase, TaskRegistry
from fedoracle.codec import ModelSpec, decode, encode, spec_from_blob
from fedoracle.defaults import TrainingSettings
from fedoracle.errors import ChainError, PrivacyBudgetExhausted, PrivacyModeMismatch
from fedoracle.hashing import content_hash
from fedoracle.retry import Backoff
from fedoracle.seal import SealContext, seal
from fedoracle.units import floor_bp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig(TrainingSettings):
    """How a device trains (defaults: :data:`fedoracle.defaults.DEFAULTS`, a device of the demo).

    The optimiser fields are :class:`~fedoracle.defaults.TrainingSettings`'.

    Attributes:
        dp: clip and noise the update (``False``: the non-DP baseline).
        pre_evaluate: skip submitting when the local accuracy is below the threshold.
    """

    dp: bool = True
    pre_evaluate: bool = False


@dataclass
class DeviceStats:
    """What a device did, for reports and tests."""

    submitted: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int, str]] = field(default_factory=list)
    claimed_wei: int = 0
    claims: list[tuple[int, int]] = field(default_factory=list)
    verdicts: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    epsilon_spent: float = 0.0
    connects: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    submit_attempts: dict[tuple[int, int], int] = field(default_factory=dict)
    training: list[tuple[int, int]] = field(default_factory=list)


Trainer = Callable[[ModelSpec, list[NDArray[Any]], dict[str, Any]], tuple[list[NDArray[Any]], int, float | None]]
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
        submit_retries: attempts at a submission that fails while its round is still open.
    """

    def __init__(
        self,
        account: LocalAccount,
        rpc_url: str,
        registry: str,
        blobs: BlobStore,
        broker_url: str,
        train: Trainer,
        *,
        payee: str | None = None,
        executor: Executor | None = None,
        name: str | None = None,
        kind: str = "honest",
        tasks: set[int] | None = None,
        submit_retries: int = 5,
    ) -> None:
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
        self.submit_retries = submit_retries
        self.stats = DeviceStats()
        self._handled: set[tuple[int, int]] = set()
        self._settled_tasks: set[int] = set()
        self._busy = asyncio.Lock()
        self._claiming = asyncio.Lock()
        self._jobs: set[asyncio.Task[None]] = set()
        self._chain_id: int | None = None
        self.connected = asyncio.Event()

    @property
    def address(self) -> str:
        """The device's account address (checksummed)."""
        return self.account.address

    async def run(self) -> None:
        """Listens until cancelled, reconnecting to the broker with backoff.

        Cancelling it also cancels the device's round and claim jobs (a killed device): a
        training call already in a worker thread finishes there, but nothing is submitted.
        """
        import aiomqtt

        backoff = Backoff(0.1, cap=5.0, jitter=1.0)
        me = self.address.lower()
        try:
            while True:
                try:
                    async with mqtt.client(
                        self.broker_url, identifier=f"dev-{me}", will=(mqtt.presence_topic(me), b"offline")
                    ) as client:
                        await client.subscribe(mqtt.round_topic("+", "+"), qos=mqtt.QOS)
                        await client.subscribe(mqtt.task_topic("+"), qos=mqtt.QOS)
                        await client.subscribe(mqtt.verdict_topic("+", me), qos=mqtt.QOS)
                        await client.publish(mqtt.presence_topic(me), b"online", qos=mqtt.QOS, retain=True)
                        backoff.reset()
                        self.stats.connects += 1
                        self.connected.set()
                        log.info("%s connected to %s (connection %d)", self.name, self.broker_url, self.stats.connects)
                        try:
                            async for message in client.messages:
                                await self.on_message(str(message.topic), bytes(message.payload))
                        except asyncio.CancelledError:
                            # A clean stop: say so, as the last will would on a crash.
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(
                                    client.publish(mqtt.presence_topic(me), b"offline", qos=mqtt.QOS, retain=True), 1.0
                                )
                            raise
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    log.info("%s lost the broker (%s); reconnecting in %.1fs", self.name, exc, backoff.current)
                    await asyncio.sleep(backoff.next())
        finally:
            self.connected.clear()
            for job in list(self._jobs):
                job.cancel()
            if self._jobs:
                await asyncio.gather(*self._jobs, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(self._guarded(coro))
        self._jobs.add(job)  # keep a reference (the loop holds only weak ones) and cancel on stop
        job.add_done_callback(self._jobs.discard)

    def _drop(self, topic: str, why: str, level: int = logging.WARNING) -> None:
        self.stats.dropped.append((topic, why))
        log.log(level, "%s: dropped a message on %s: %s", self.name, topic, why)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Dispatches one MQTT message; malformed or foreign ones are logged and dropped."""
        if not payload:
            return  # a cleared retained topic
        if not topic.startswith(mqtt.PREFIX + "/tasks/"):
            return
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
            if self.tasks is not None and doc.get("task_id") not in self.tasks:
                return
            registry = doc.get("registry")
            if not isinstance(registry, str) or registry.lower() != self.registry.address.lower():
                # Several registries may share a broker: not alarming, but not ours.
                self._drop(topic, f"registry {registry!r} is not ours ({self.registry.address})", logging.INFO)
                return
            if "/rounds/" in topic:
                msg = mqtt.RoundMessage.model_validate(doc)
                self._check_topic(topic, mqtt.round_topic(msg.task_id, msg.round))
                if (msg.task_id, msg.round) not in self._handled:
                    self._spawn(self.handle_round(msg))
            elif "/verdicts/" in topic:
                v = mqtt.VerdictMessage.model_validate(doc)
                self._check_topic(topic, mqtt.verdict_topic(v.task_id, v.device))
                if v.device.lower() == self.address.lower():
                    self.stats.verdicts[(v.task_id, v.round)] = {
                        "accepted": v.accepted,
                        "accuracy_bp": v.accuracy_bp,
                        "reason": v.reason,
                    }
                    log.info(
                        "%s: verdict for task %d round %d: %s (%.2f%%)",
                        self.name,
                        v.task_id,
                        v.round,
                        "accepted" if v.accepted else f"rejected (reason {v.reason})",
                        v.accuracy_bp / 100,
                    )
            elif topic.count("/") == 3:  # sfl/v1/tasks/<task>
                task = mqtt.TaskMessage.model_validate(doc)
                self._check_topic(topic, mqtt.task_topic(task.task_id))
                if task.phase in ("finalized", "cancelled"):
                    self._spawn(self.claim_all(task.task_id))
        except ValueError as exc:  # bad JSON, bad UTF-8, schema errors (pydantic's are ValueErrors)
            self._drop(topic, str(exc).splitlines()[0][:200])

    @staticmethod
    def _check_topic(topic: str, expected: str) -> None:
        if topic != expected:
            raise ValueError(f"payload belongs on {expected}")

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ChainError as exc:
            log.warning("%s: %s", self.name, exc)
        except Exception:
            log.exception("%s: unexpected error", self.name)

    async def _catch_up(self, block_number: int, timeout: float = 10.0) -> None:
        """Waits (briefly) until our node has the block a message reports.

        The relay may read a node that is ahead of this device's: without waiting, a genuine
        round message would be judged against stale state and dropped.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.registry.chain.block_number() < block_number:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("%s: our node is still behind block %d", self.name, block_number)
                return
            await asyncio.sleep(0.2)

    async def handle_round(self, msg: mqtt.RoundMessage) -> None:
        """Trains and submits for a round, at most once, after checking the message on-chain.

        The round is marked handled only when the chain confirms the message (or says the round
        is over): a forged message is dropped without shadowing the genuine one, and a retained
        replay or a reconnect finds the round handled (in this process) or the commitment on-chain
        (across restarts).
        """
        key = (msg.task_id, msg.round)
        async with self._busy:
            if key in self._handled:
                return
            if self._chain_id is None:
                self._chain_id = await self.registry.chain.chain_id()
            if msg.chain_id != self._chain_id:
                self._drop(mqtt.round_topic(*key), f"chain id {msg.chain_id} is not ours ({self._chain_id})")
                return
            await self._catch_up(msg.block_number)
            state = await self.registry.get_state(msg.task_id)
            if state["round"] > msg.round or (state["round"] == msg.round and state["phase"] != Phase.OPEN):
                self._handled.add(key)
                self.stats.skipped.append((*key, "round not open on-chain"))
                log.info("%s: task %d round %d is no longer open; skipped", self.name, *key)
                return
            if state["phase"] != Phase.OPEN or state["round"] != msg.round:
                self._drop(
                    mqtt.round_topic(*key),
                    f"round {msg.round} is not open on-chain (chain: round {state['round']}, {state['phase'].name})",
                )
                return
            task = await self.registry.get_task(msg.task_id)
            if task["globalModelHash"] != msg.global_model_hash:
                self._drop(
                    mqtt.round_topic(*key),
                    f"global model {msg.global_model_hash[:10]} differs from the "
                    f"chain's {task['globalModelHash'][:10]}",
                )
                return
            self._handled.add(key)
            if int.from_bytes(await self.registry.get_commitment(*key, self.address), "big"):
                self.stats.skipped.append((*key, "already submitted"))
                log.info("%s: task %d round %d already submitted on-chain; skipped", self.name, *key)
                return
            spec = spec_from_blob(self.blobs.get(task["modelSpecHash"]), task["modelSpecHash"])
            global_weights = decode(
                self.blobs.get(msg.global_model_hash, max_bytes=spec.max_bytes),
                spec,
                expected_hash=msg.global_model_hash,
            )
            log.info("%s: training for task %d round %d from %s", self.name, *key, msg.global_model_hash[:10])
            self.stats.training.append(key)
            loop = asyncio.get_running_loop()
            try:
                update, num_samples, local_acc = await loop.run_in_executor(
                    self.executor,
                    self.train,
                    spec,
                    global_weights,
                    {**task, "thresholdBp": state["thresholdBp"], "taskId": msg.task_id, "round": msg.round},
                )
            except PrivacyModeMismatch as exc:
                self.stats.skipped.append((*key, f"privacy mode: {exc}"))
                log.warning("%s: task %d round %d: not training: %s", self.name, *key, exc)
                return
            except PrivacyBudgetExhausted as exc:
                self.stats.skipped.append((*key, f"privacy budget spent: {exc}"))
                log.warning("%s: task %d round %d: not training: %s", self.name, *key, exc)
                return
            if local_acc is not None and floor_bp(local_acc) < state["thresholdBp"]:
                # The paper's gas-saving step: a device that cannot pass the announced threshold
                # on its own validation data does not submit.
                self.stats.skipped.append((*key, f"pre-evaluation {local_acc:.4f} below threshold"))
                log.info("%s: pre-evaluation %.4f below the threshold; not submitting", self.name, local_acc)
                return
            seal_key = await self._seal_key(key)
            if seal_key is None:
                self.stats.skipped.append((*key, "the round closed before its seal key was set"))
                log.warning("%s: task %d round %d closed before the oracle set its seal key", self.name, *key)
                return
            context = SealContext(msg.chain_id, self.registry.address, msg.task_id, msg.round, self.address)
            sealed = seal(encode(update, spec), seal_key, context)
            digest = content_hash(sealed)
            self.blobs.put(sealed)
            # The contract takes 1..maxSamples: a device with more data than the task's cap declares the cap.
            declared = max(1, min(num_samples, state["maxSamples"]))
            spent = getattr(self.train, "epsilon_spent", None) or 0.0
            if await self._submit(key, digest, declared, state["thresholdBp"], spent):
                self.stats.submitted.append(key)
                log.info("%s: submitted %s for task %d round %d", self.name, digest[:10], *key)

    async def _seal_key(self, key: tuple[int, int], poll: float = 0.5) -> str | None:
        """The round's seal key, waiting while the round is open and the oracle has not set it yet.

        Returns:
            The key (``0x``-hex), or ``None`` once the round is no longer open.
        """
        while True:
            sealed_to = (await self.registry.get_round(*key))["sealKey"]
            if int(sealed_to, 16):
                return str(sealed_to)
            state = await self.registry.get_state(key[0])
            if state["phase"] != Phase.OPEN or state["round"] != key[1]:
                return None
            await asyncio.sleep(poll)

    async def _acceptable_raise(self, key: tuple[int, int], seen_bp: int) -> int | None:
        """The threshold in force if the dynamic rule could have set it (up to the last global accuracy), or None."""
        if key[1] < 2:
            return None  # round 1 has no rule-made raise: the threshold the task published is the bar
        state = await self.registry.get_state(key[0])
        if state["phase"] != Phase.OPEN or state["round"] != key[1] or state["thresholdBp"] <= seen_bp:
            return None
        previous = await self.registry.get_round(key[0], key[1] - 1)
        return int(state["thresholdBp"]) if state["thresholdBp"] <= previous["globalAccuracyBp"] else None

    async def _submit(
        self, key: tuple[int, int], digest: str, num_samples: int, threshold_bp: int, epsilon_spent: float = 0.0
    ) -> bool:
        """Submits, retrying with backoff while the round is still open; ``True`` once on-chain.

        ``threshold_bp`` is the threshold the device trained and pre-evaluated for: the submission
        names it as the highest it accepts, so a raise that lands first (front-run or not) makes
        the call revert rather than bind the device to a bar it never saw. The device then decides
        afresh: a raise the protocol's dynamic rule can make (at most the previous round's global
        accuracy, :func:`fedoracle.learning.rounds.next_threshold`) it accepts and submits against
        once; anything higher (e.g. a front-run ``announceThreshold(10000)``) it refuses.
        ``epsilon_spent`` is the budget declared spent with the submission.
        """
        backoff = Backoff(0.5, cap=5.0, jitter=1.0)
        for attempt in range(1, self.submit_retries + 1):
            self.stats.submit_attempts[key] = attempt
            try:
                await self.registry.submit(
                    key[0],
                    digest,
                    self.blobs.uri(digest),
                    self.payee,
                    num_samples,
                    max_threshold_bp=threshold_bp,
                    epsilon_spent=epsilon_spent,
                )
                return True
            except ChainError as exc:
                if "FLTaskThresholdAboveLimit" in str(exc):
                    raised = await self._acceptable_raise(key, threshold_bp)
                    if raised is not None:
                        log.info(
                            "%s: task %d round %d: threshold raised to %d bp by the dynamic rule; submitting anyway",
                            self.name,
                            *key,
                            raised,
                        )
                        threshold_bp = raised
                        continue
                    self.stats.skipped.append((*key, f"threshold raised above {threshold_bp} bp before the submission"))
                    log.warning(
                        "%s: task %d round %d: threshold raised above %d bp first; not submitting",
                        self.name,
                        *key,
                        threshold_bp,
                    )
                    return False
                log.warning("%s: submit for task %d round %d failed (attempt %d): %s", self.name, *key, attempt, exc)
                self.registry.chain.reset_nonce()
                await asyncio.sleep(backoff.next())
                try:
                    if int.from_bytes(await self.registry.get_commitment(*key, self.address), "big"):
                        return True  # the failed call did land (a lost receipt)
                    state = await self.registry.get_state(key[0])
                except ChainError as exc2:
                    log.warning("%s: cannot read the round's state: %s", self.name, exc2)
                    continue
                if state["phase"] != Phase.OPEN or state["round"] != key[1]:
                    self.stats.skipped.append((*key, f"submit failed and the round closed: {exc}"))
                    log.warning("%s: task %d round %d closed before a submission got through", self.name, *key)
                    return False
        self.stats.skipped.append((*key, "submit failed after retries"))
        return False

    async def claim_all(self, task_id: int) -> None:
        """Claims every settled round of a task this device was accepted in, in one ``claimMany``."""
        from devices.claims import Claimed, claim_task

        async with self._claiming:  # one claim at a time: a second would race the first
            for paid in await claim_task(self.registry, task_id, self.address):
                if isinstance(paid, Claimed) and (task_id, paid.round) not in self.stats.claims:
                    self.stats.claims.append((task_id, paid.round))
                    self.stats.claimed_wei += paid.amount_wei
                    log.info(
                        "%s: claimed %d wei for task %d round %d to %s",
                        self.name,
                        paid.amount_wei,
                        task_id,
                        paid.round,
                        paid.payee,
                    )
