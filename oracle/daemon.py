"""The oracle daemon: a restart-safe reconciler between the chain and the FL core.

Events wake it; the chain tells it what to do. For every task it serves (``oracle == us`` and
its hidden test set in our vault) it reads the task's on-chain state and takes the next step of
the paper's workflow:

=====================  ==========================================================================
phase on-chain         step
=====================  ==========================================================================
Open                   set the round's seal key if it has none (round 1: ``setSealKey``); score
                       submissions as they arrive (eagerly, off-chain, opening each sealed blob
                       with the round's key for its submitter); close submissions when the
                       round's deadline has passed or it is full (``maxSubmissionsPerRound``)
Closed                 disclose the round's test groups (``disclosure_test_data``); post one
                       verdict per submission that has none (``evaluate_local_model``), copies
                       and near-copies paid as one (:mod:`fedoracle.learning.copies`), sent with
                       consecutive nonces and their receipts collected afterwards; when all
                       are in, aggregate the accepted updates, store and evaluate the new global
                       model and commit it (``aggregate_model_update`` + ``evaluate_model``),
                       disclosing the round's seal secret and keying the next round
AwaitingFinalize       post the final report (``finalize_contract`` + ``post_evaluation``)
=====================  ==========================================================================

Exactly once: every step is conditional on the chain's state (a verdict is posted only if the
contract has none for that submission, and only for a submission whose on-chain commitment
matches the mirrored log), the checkpoint's watermark and event keys move in one sqlite
transaction per block range, and scores are cached. So a crash anywhere, a replayed range or a
reorg (``removed`` logs drop the cached submission) never yields a second verdict or a missed
one: the next reconciliation picks up where the chain stands. A transaction that reverts because
the chain already moved on (``FLTaskVerdictAlreadyPosted`` after a crash between sending and
recording, a round closed by its cap) counts as done. A mirrored submission the chain does not
have (reorged away while the daemon was down) is dropped and the logs are read again.

Nothing a device sends can stop the daemon: bad blobs become rejection verdicts with their
reason; an unexpected error in one task's step is logged and retried with backoff, the other
tasks go on; an RPC outage longer than :class:`~fedoracle.chain.Chain`'s retries is waited out.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from eth_typing import HexStr
from numpy.typing import NDArray

from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, PendingTx, Phase, Status, Submission, TaskRegistry
from fedoracle.codec import encode_with_hash
from fedoracle.commitments import submission_commitment
from fedoracle.defaults import DEFAULTS, privacy_mode_name
from fedoracle.errors import ChainError, ConfigError, ModelRejected, Reason
from fedoracle.follow import Batch, LogFollower
from fedoracle.hashing import normalize_hash
from fedoracle.hidden import HiddenTestSet
from fedoracle.learning.copies import find_copies
from fedoracle.learning.privacy import describe_epsilon
from fedoracle.learning.robust import AggregationRule, aggregate_round
from fedoracle.learning.rounds import is_accepted, next_threshold, verdict_reason
from fedoracle.retry import Backoff, retry_async
from fedoracle.seal import open_update, round_keypair
from fedoracle.units import EPSILON_SCALE, decode_dp
from oracle.faults import crash_point
from oracle.logs import emit
from oracle.pool import EvaluationPool
from oracle.scoring import RoundContext, ScoreJob, Scorer, evaluator_hash
from oracle.store import DROPPED, Checkpoint, Score, StateLock

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Reverts that mean the chain already holds what the transaction was for (or moved past it).
ALREADY_DONE = re.compile(
    r"FLTaskVerdictAlreadyPosted|FLTaskAlreadyDisclosed|FLTaskWrongPhase|FLTaskThresholdNotRaised"
    r"|FLTaskSealKeyAlreadySet"
)


@dataclass
class OracleConfig:
    """How the oracle behaves."""

    vault: Path
    state_dir: Path
    confirmations: int = 0
    poll_interval: float = 0.2
    from_block: int = 0
    threshold_margin: float | None = DEFAULTS.threshold_margin  # round r: global_{r-1} - margin (None: static)
    max_backoff: float = 10.0  # seconds between retries of a failing step or an unreachable node


@dataclass
class TaskView:
    """What the oracle caches about a task it serves."""

    task_id: int
    spec_hash: str
    test_root: str
    max_rounds: int
    rule: AggregationRule = field(default_factory=AggregationRule)  # committed at publish
    loss_margin_bp: int = 0  # the task's loss gate (0: none)
    root_set_hash: str | None = None  # an fltrust task's public root set
    history: list[dict[str, Any]] = field(default_factory=list)


async def _gather(calls: Iterable[Awaitable[_T]], limit: int = 32) -> list[_T]:
    """Awaits chain reads concurrently, at most ``limit`` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[_T]) -> _T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def commitment(sub: Submission) -> str:
    """The contract's commitment of a mirrored submission (:func:`fedoracle.commitments.submission_commitment`)."""
    return "0x" + submission_commitment(sub.model_hash, sub.payee, sub.threshold_bp, sub.num_samples).hex()


class Oracle:
    """One oracle account serving every task that names it.

    Args:
        chain: connection with the oracle's signing account.
        registry_address: the registry.
        blobs: the public blob store.
        pool: where evaluations run.
        config: behaviour.
    """

    def __init__(
        self, chain: Chain, registry_address: str, blobs: BlobStore, pool: EvaluationPool, config: OracleConfig
    ) -> None:
        self.registry = TaskRegistry(chain, registry_address)
        self.blobs = blobs
        self.pool = pool
        self.config = config
        state = Path(config.state_dir) / f"oracle-{self.registry.address.lower()}"
        self._lock = StateLock(state.with_suffix(".lock"), "the oracle")  # one oracle per checkpoint
        self.checkpoint = Checkpoint(state.with_suffix(".sqlite"))
        self.tasks: dict[int, TaskView] = {}
        self._unserved: dict[int, str] = {}  # names us, but its test set is not (yet) in the vault
        # In-flight evaluations by (task, round, device, model hash): a submission replaced after a
        # reorg has another hash, so it never inherits the score of the model it replaced.
        self._scoring: dict[tuple[int, int, str, str], asyncio.Future[Score]] = {}
        self._scorer = Scorer(blobs, str(config.vault))
        self._sending: tuple[int, int, str, str] | None = None
        self._signed: str | None = None
        self._retry_at: dict[int, tuple[float, Backoff]] = {}  # task -> (not before, its delays)
        self._rewind_to: int | None = None
        self._caught_up = False
        self._last_rescan: dict[int, float] = {}
        self._chain_id: int | None = None
        chain.on_signed = self._on_signed
        chain.on_sent = self._on_sent
        self.stopped = asyncio.Event()

    @property
    def address(self) -> str:
        """The oracle's account address (checksummed)."""
        return self.registry.chain.address

    @property
    def chain_id(self) -> int:
        """The chain's id (read on the first reconciliation)."""
        if self._chain_id is None:
            raise ConfigError("the oracle reads the chain id on its first reconciliation")
        return self._chain_id

    def seal_keys(self, task_id: int, round_: int) -> tuple[bytes, bytes]:
        """The round's seal key pair ``(secret, public)``, derived from the oracle's signing key."""
        account = self.registry.chain.account
        if account is None:
            raise ConfigError("the oracle needs its signing account to derive its seal keys")
        return round_keypair(bytes(account.key), self.chain_id, self.registry.address, task_id, round_)

    # --- event intake ------------------------------------------------------------------------

    async def _load_served(self) -> None:
        """Rebuilds the set of served tasks from the chain (the checkpoint need not know them)."""
        count = await self.registry.task_count()
        for task_id in range(1, count + 1):
            if task_id not in self.tasks:
                await self._maybe_serve(task_id)

    async def _maybe_serve(self, task_id: int) -> None:
        cfg = await self.registry.get_task(task_id)
        if cfg["oracle"].lower() != self.address.lower():
            return
        root = cfg["testSetRoot"]
        if not (Path(self.config.vault) / root.lower() / "secret.json").exists():
            if task_id not in self._unserved:
                emit(
                    log,
                    "unserved",
                    logging.ERROR,
                    task=task_id,
                    reason="test set not in vault",
                    test_root=root,
                    vault=self.config.vault,
                )
            self._unserved[task_id] = root
            # Key an open round all the same: devices can seal and submit while the test set is
            # still being handed over, and are scored once it arrives.
            state = await self.registry.get_state(task_id)
            if state["phase"] == Phase.OPEN:
                await self._key_round(task_id, state["round"])
            return
        self._unserved.pop(task_id, None)
        if (await self.registry.get_state(task_id))["phase"] in (Phase.FINALIZED, Phase.CANCELLED):
            return
        root_set = cfg["rootSetHash"] if int(cfg["rootSetHash"], 16) else None
        self.tasks[task_id] = TaskView(
            task_id,
            cfg["modelSpecHash"],
            root,
            cfg["maxRounds"],
            rule=AggregationRule.from_task(cfg),
            loss_margin_bp=int(cfg["lossMarginBp"]),
            root_set_hash=root_set,
        )
        emit(log, "serve", task=task_id)

    async def _retry_unserved(self) -> None:
        """Serves a task once its test set shows up in the vault (handed over late)."""
        for task_id, root in list(self._unserved.items()):
            if (Path(self.config.vault) / root.lower() / "secret.json").exists():
                await self._maybe_serve(task_id)

    async def _until_ok(self, what: str, make_call: Callable[[], Awaitable[None]]) -> None:
        def wait(exc: BaseException, attempt: int, delay: float) -> None:
            emit(log, "rpc_wait", logging.WARNING, step=what, error=str(exc)[:200], retry_in=delay)

        if self.stopped.is_set():
            return None
        try:
            return await retry_async(
                make_call,
                backoff=Backoff(0.5, cap=self.config.max_backoff),
                retry_on=ChainError,
                on_retry=wait,
                sleep=self._sleep,
                give_up=self.stopped.is_set,
            )
        except ChainError:  # only once stopped: every other ChainError is retried
            return None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopped.wait(), seconds)
        except TimeoutError:
            pass

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follows the chain and reconciles served tasks until :attr:`stopped` is set."""
        start = self.checkpoint.next_block
        follower = self._follower(self.config.from_block if start is None else start)
        await self._until_ok("recover", self._recover_actions)
        await self._until_ok("load", self._load_served)
        emit(
            log,
            "start",
            oracle=self.address,
            registry=self.registry.address,
            from_block=follower.next_block,
            tasks=",".join(map(str, self.tasks)) or "-",
        )
        if ready is not None:
            ready.set()
        outage = Backoff(0.5, cap=self.config.max_backoff)
        while not self.stopped.is_set():
            try:
                batch = await follower.poll()
                if batch is not None:
                    self._apply(batch)
                    for ev in batch.events:
                        if ev.name == "TaskPublished" and not ev.removed:
                            await self._maybe_serve(ev.args["taskId"])
                await self._retry_unserved()
            except Exception as exc:
                # the node no longer has (a reorg under our feet), ...: the range is read again.
                delay = outage.next()
                emit(
                    log,
                    "rpc_wait",
                    logging.WARNING,
                    step="poll",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in=delay,
                )
                follower = self._follower(self.checkpoint.next_block or self.config.from_block)
                await self._sleep(delay)
                continue
            outage.reset()
            self._caught_up = batch is None
            for task_id in list(self.tasks):
                await self._reconcile_guarded(task_id)
            if self._rewind_to is not None:
                emit(log, "rescan", logging.WARNING, from_block=self._rewind_to)
                self.checkpoint.set("next_block", str(self._rewind_to))
                follower, self._rewind_to = self._follower(self._rewind_to), None
                continue
            if batch is None:
                await self._sleep(self.config.poll_interval)

    def _follower(self, start: int) -> LogFollower:
        return LogFollower(
            self.registry, start, confirmations=self.config.confirmations, poll_interval=self.config.poll_interval
        )

    def _apply(self, batch: Batch) -> None:
        with self.checkpoint.transaction():
            for ev in batch.events:
                self.checkpoint.apply(ev)
            self.checkpoint.set("next_block", str(batch.end + 1))
        removed = [ev for ev in batch.events if ev.removed]
        if removed:
            # Our own transactions may have been in the replaced blocks: ask the node for the nonce.
            self.registry.chain.reset_nonce()
            for ev in removed:
                emit(
                    log,
                    "reorg_removed",
                    logging.WARNING,
                    event=ev.name,
                    block=ev.block_number,
                    tx=ev.tx_hash,
                    task=ev.args.get("taskId"),
                    device=ev.args.get("device"),
                )
        crash_point("after_commit")

    async def _reconcile_guarded(self, task_id: int) -> None:
        """One task's step; a failure is logged and retried later with backoff, never fatal."""
        not_before, backoff = self._retry_at.get(task_id, (0.0, None))
        if time.monotonic() < not_before:
            return
        try:
            await self.reconcile(task_id)
            self._retry_at.pop(task_id, None)
            return
        except ChainError as exc:
            error, trace = str(exc)[:300], False
        except Exception as exc:
            error, trace = f"{type(exc).__name__}: {exc}"[:300], True
        if backoff is None:
            backoff = Backoff(self.config.poll_interval, cap=self.config.max_backoff)
        delay = backoff.next()
        self._retry_at[task_id] = (time.monotonic() + delay, backoff)
        emit(log, "retry", logging.WARNING, task=task_id, error=error, retry_in=round(delay, 2))
        if trace:
            log.debug("task %d step failed", task_id, exc_info=True)

    async def close(self) -> None:
        """Cancels the evaluations in flight, closes the pool and the checkpoint, releases the state lock."""
        for t in self._scoring.values():
            t.cancel()
        await self.pool.close()
        self.checkpoint.close()
        self._lock.release()

    # --- transactions ----------------------------------------------------------------------------

    def _on_signed(self, tx_hash: str) -> None:
        """Write-ahead: record a transaction before it goes to the node (resolved at restart)."""
        if self._sending is not None:
            task_id, round_, action, subject = self._sending
            self.checkpoint.sent_action(task_id, round_, action, subject, tx_hash)
            self._signed = tx_hash

    def _on_sent(self, tx_hash: str) -> None:
        if self._sending is not None:
            crash_point("after_send", self._sending[2])

    async def _recover_actions(self) -> None:
        """Completes the rows a crash left between signing a transaction and recording its receipt.

        A row becomes mined (or reverted) from the receipt, ``dropped`` if the node never got it.
        """
        for tx_hash, action in self.checkpoint.pending_actions():
            await self._resolve(tx_hash, action)

    async def _resolve(self, tx_hash: str, action: str) -> None:
        """Settles the row of a transaction whose outcome we did not see, from the chain."""
        from web3.exceptions import TransactionNotFound

        w3 = self.registry.chain.w3
        try:
            receipt = await self.registry.chain._retry(lambda: w3.eth.get_transaction_receipt(HexStr(tx_hash)))
        except TransactionNotFound:
            try:
                await self.registry.chain._retry(lambda: w3.eth.get_transaction(HexStr(tx_hash)))
                return  # still pending: leave it 'sent'; the chain decides what happens next
            except TransactionNotFound:
                receipt = None
        self.checkpoint.finish_action(tx_hash, receipt)
        emit(
            log,
            "recovered",
            step=action,
            tx=tx_hash,
            status=DROPPED if receipt is None else ("mined" if receipt["status"] == 1 else "reverted"),
        )

    async def _send(
        self,
        task_id: int,
        round_: int,
        action: str,
        subject: str,
        tx: Awaitable[dict[str, Any]],
        **fields: Any,
    ) -> dict[str, Any] | None:
        """Sends one transaction and records it; ``None`` when the chain already holds what it was for.

        Args:
            task_id: the task.
            round_: the round the action belongs to.
            action: the step (``close``, ``disclose``, ``verdict``, ...), for the checkpoint and the log.
            subject: what the action is about (a device, a model hash, ...), for the checkpoint.
            tx: the not yet awaited coroutine that sends the transaction and returns its receipt.
            **fields: extra fields of the log line.

        Returns:
            The receipt, or ``None`` when the transaction reverted because the chain already moved on.

        Raises:
            ChainError: any other failure of the transaction.
        """
        crash_point("before_send", action)
        self._sending, self._signed = (task_id, round_, action, subject), None
        try:
            receipt = await tx
        except ChainError as exc:
            # _on_signed sets it during the await (mypy would keep it narrowed to the None above)
            await self._failed(task_id, round_, action, subject, exc, cast(str | None, self._signed))
            return None
        finally:
            self._sending = None
        return self._mined(task_id, round_, action, subject, receipt, fields)

    async def _send_pipelined(
        self,
        task_id: int,
        round_: int,
        action: str,
        calls: Sequence[tuple[str, Callable[[], Awaitable[PendingTx]], dict[str, Any]]],
    ) -> None:
        """Sends transactions with consecutive nonces, all of them, then collects their receipts in order.

        Each one is written ahead (:meth:`_on_signed`) before the node sees it, exactly as
        :meth:`_send` does, and recorded once its receipt is in; so a crash anywhere leaves only
        ``sent`` rows, which the next start resolves from the chain. One receipt wait for the
        batch instead of one per transaction: N verdicts cost about N sends, not N mining and
        polling round trips.

        Args:
            task_id: the task.
            round_: the round the actions belong to.
            action: the step (``verdict``), for the checkpoint and the log.
            calls: ``(subject, send, log fields)`` per transaction; ``send()`` signs and sends it
                (e.g. :meth:`~fedoracle.chain.TaskRegistry.send_verdict`).

        Raises:
            ChainError: the first failure that does not mean the chain already holds the result,
                after every transaction that was sent has been collected and recorded. Sending
                stops at such a failure (no nonce gap behind it); the rest are retried by the
                next reconciliation.
        """
        sent: list[tuple[str, PendingTx, dict[str, Any]]] = []
        error: ChainError | None = None
        for subject, send, fields in calls:
            crash_point("before_send", action)
            self._sending, self._signed = (task_id, round_, action, subject), None
            try:
                sent.append((subject, await send(), fields))
            except ChainError as exc:
                try:
                    await self._failed(task_id, round_, action, subject, exc, cast(str | None, self._signed))
                except ChainError as failure:
                    error = failure
                    break
            finally:
                self._sending = None
        for subject, pending, fields in sent:
            try:
                receipt = await self.registry.chain.wait(pending)
            except ChainError as exc:
                try:
                    await self._failed(task_id, round_, action, subject, exc, pending.tx_hash)
                except ChainError as failure:
                    error = error or failure
                continue
            self._mined(task_id, round_, action, subject, receipt, fields)
        if error is not None:
            raise error

    async def _failed(
        self, task_id: int, round_: int, action: str, subject: str, exc: ChainError, signed: str | None
    ) -> None:
        """A transaction that failed: its row (if it was signed) settled from the chain.

        Returns normally when the failure means the chain already holds what the transaction was
        for (logged as a ``skip``).

        Raises:
            ChainError: ``exc`` itself, for any other failure.
        """
        if signed is not None:  # signed and recorded, then rejected or reverted
            await self._resolve(signed, action)
        done = ALREADY_DONE.search(str(exc))
        if done is None:
            raise exc
        emit(log, "skip", task=task_id, round=round_, step=action, subject=subject, reason=done.group(0))
        return None

    def _mined(
        self, task_id: int, round_: int, action: str, subject: str, receipt: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Records a mined transaction in the checkpoint and the log; returns its receipt."""
        crash_point("after_receipt", action)
        self.checkpoint.record_action(task_id, round_, action, subject, receipt)
        emit(
            log,
            action,
            task=task_id,
            round=round_,
            subject=subject if action != "verdict" else None,
            tx="0x" + bytes(receipt["transactionHash"]).hex(),
            block=receipt["blockNumber"],
            gas=receipt["gasUsed"],
            **fields,
        )
        return receipt

    # --- the state machine ------------------------------------------------------------------

    async def reconcile(self, task_id: int) -> None:
        """Takes every step the task's on-chain state calls for now."""
        view = self.tasks[task_id]
        await self._read_chain_id()
        state = await self.registry.get_state(task_id)
        phase, round_ = state["phase"], state["round"]
        if phase in (Phase.FINALIZED, Phase.CANCELLED):
            emit(log, "done", task=task_id, phase=phase.name.lower())
            del self.tasks[task_id]
            return
        if phase == Phase.OPEN:
            await self._key_round(task_id, round_)
            await self._follow_threshold(task_id, round_, state["thresholdBp"])
            await self._prefetch(view, round_)
            # A full round takes no more submissions (the contract refuses them): close it at once.
            full = 0 < state["maxSubmissions"] <= state["submissions"]
            if full or time.time() > state["deadline"]:
                await self._send(task_id, round_, "close", "", self.registry.close_submissions(task_id))
            return
        if phase == Phase.CLOSED:
            await self._settle_round(view, round_, state)
        elif phase == Phase.AWAITING_FINALIZE:
            await self._finalize(view, round_)

    async def _read_chain_id(self) -> None:
        if self._chain_id is None:
            self._chain_id = await self.registry.chain.chain_id()

    async def _key_round(self, task_id: int, round_: int) -> None:
        """Sets the open round's seal key when it has none (round 1; later rounds get theirs in aggregate)."""
        await self._read_chain_id()
        _, public = self.seal_keys(task_id, round_)
        on_chain = (await self.registry.get_round(task_id, round_))["sealKey"]
        if int(on_chain, 16) == 0:
            await self._send(
                task_id, round_, "seal_key", "0x" + public.hex(), self.registry.set_seal_key(task_id, public)
            )
        elif on_chain.lower() != "0x" + public.hex():
            # Only this oracle can set it: a different key means a different signing key than the
            # one that set it (devices sealed to a key we cannot open).
            emit(log, "seal_key_mismatch", logging.ERROR, task=task_id, round=round_, on_chain=on_chain)

    async def _follow_threshold(self, task_id: int, round_: int, current_bp: int) -> None:
        """The dynamic threshold: at most ``margin`` below the last global model's accuracy.

        A threshold can only go up, and a submission is judged by the threshold in force when it
        was made, so announcing right after a round opens (before devices have trained) is fair.
        """
        if self.config.threshold_margin is None or round_ < 2:
            return
        previous = await self.registry.get_round(task_id, round_ - 1)
        target = next_threshold(round_, current_bp, previous["globalAccuracyBp"], self.config.threshold_margin)
        if target is not None:
            await self._send(
                task_id,
                round_,
                "threshold",
                str(target),
                self.registry.announce_threshold(task_id, target),
                threshold_bp=target,
            )

    def _job(self, view: TaskView, round_: int, global_hash: str, sub: Submission | None) -> ScoreJob:
        secret, _ = self.seal_keys(view.task_id, round_)
        return ScoreJob(
            view.task_id,
            round_,
            view.spec_hash,
            global_hash,
            view.test_root,
            sub,
            chain_id=self.chain_id,
            registry=self.registry.address,
            seal_secret="0x" + secret.hex(),
            loss_margin_bp=view.loss_margin_bp,
        )

    def _start_scoring(self, view: TaskView, round_: int, global_hash: str, sub: Submission) -> asyncio.Future[Score]:
        """The submission's evaluation: the one in flight, its cached score, or else a new one.

        The one place that starts an evaluation, and it asks the checkpoint first: a caller's list
        of unscored submissions may be stale (read before an await during which an evaluation
        finished and was cached), and must never start a second evaluation of the same model.
        """
        key = (sub.task_id, sub.round, sub.device.lower(), sub.model_hash)
        fut = self._scoring.get(key)
        if fut is not None:
            return fut
        cached = self.checkpoint.score(sub)
        if cached is not None:
            done: asyncio.Future[Score] = asyncio.get_running_loop().create_future()
            done.set_result(cached)
            return done
        fut = asyncio.ensure_future(self.pool.score(self._job(view, round_, global_hash, sub)))
        self._scoring[key] = fut
        fut.add_done_callback(functools.partial(self._scored, key, sub))
        return fut

    def _scored(self, key: tuple[int, int, str, str], sub: Submission, fut: asyncio.Future[Score]) -> None:
        """Caches a finished evaluation (or forgets a failed one, so that it is tried again)."""
        if self._scoring.get(key) is fut:
            del self._scoring[key]
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            emit(
                log,
                "score_failed",
                logging.WARNING,
                task=sub.task_id,
                round=sub.round,
                device=sub.device,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return
        score: Score = fut.result()
        self.checkpoint.save_score(sub, score)
        emit(
            log,
            "score",
            task=sub.task_id,
            round=sub.round,
            device=sub.device,
            model=sub.model_hash,
            accuracy_bp=score.accuracy_bp,
            reason=Reason(score.reason).name,
            detail=score.detail or None,
            seconds=round(score.seconds, 3),
        )
        crash_point("after_score")

    async def _score(self, view: TaskView, round_: int, global_hash: str, sub: Submission) -> Score:
        """The submission's score: cached, or evaluated now (raises if evaluation itself failed)."""
        cached = self.checkpoint.score(sub)
        if cached is not None:
            return cached
        score = await asyncio.shield(self._start_scoring(view, round_, global_hash, sub))
        return self.checkpoint.score(sub) or score

    async def _prefetch(self, view: TaskView, round_: int) -> None:
        """Starts scoring new submissions of the open round in the background."""
        subs = [s for s in self.checkpoint.submissions(view.task_id, round_) if self.checkpoint.score(s) is None]
        if not subs:
            return
        global_hash = (await self.registry.get_task(view.task_id))["globalModelHash"]
        for sub in subs:
            self._start_scoring(view, round_, global_hash, sub)

    def _request_rescan(self, task_id: int, sub: Submission | None, why: str) -> None:
        """Reads the logs again from further back (rate-limited per task): the mirror missed one."""
        now = time.monotonic()
        if sub is None and now - self._last_rescan.get(task_id, -1e9) < 30:
            return
        self._last_rescan[task_id] = now
        block = self.checkpoint.submission_block(sub) if sub is not None else None
        start = self.config.from_block if block is None else max(self.config.from_block, block - 64)
        emit(
            log,
            "mirror_mismatch",
            logging.WARNING,
            task=task_id,
            device=sub.device if sub else None,
            reason=why,
            rescan_from=start,
        )
        if sub is not None:
            self.checkpoint.forget_submission(sub)
        self._rewind_to = start if self._rewind_to is None else min(self._rewind_to, start)

    async def _settle_round(self, view: TaskView, round_: int, state: dict[str, Any]) -> None:
        task_id = view.task_id
        record = await self.registry.get_round(task_id, round_)
        if not record["disclosed"]:
            hidden = HiddenTestSet.find(self.config.vault, view.test_root)
            groups = hidden.commitment.disclosure(round_)
            for data in hidden.round_groups(round_):
                self.blobs.put(data)  # disclosed groups become public, content-addressed
            groups = [
                type(g)(g.index, g.salt, g.group_hash, self.blobs.uri("0x" + g.group_hash.hex()), g.proof)
                for g in groups
            ]
            await self._send(
                task_id,
                round_,
                "disclose",
                f"{len(groups)} groups",
                self.registry.disclose_test_data(task_id, hidden.commitment.seed, groups),
            )
        subs = self.checkpoint.submissions(task_id, round_)
        if len(subs) < state["submissions"]:
            if self._caught_up:  # every log is read and still one is missing: read again
                self._request_rescan(task_id, None, f"{len(subs)} of {state['submissions']} submissions mirrored")
            return  # otherwise some ModelSubmitted logs are not confirmed/read yet
        global_hash = (await self.registry.get_task(task_id))["globalModelHash"]
        for sub in subs:
            if self.checkpoint.score(sub) is None:
                self._start_scoring(view, round_, global_hash, sub)
        # Which submissions still need a verdict, asked of the chain (never of the checkpoint), and
        # whether each is the submission the chain has: reads in parallel, then verdicts pipelined.
        verdicts = await _gather(self.registry.get_verdict(task_id, round_, s.device) for s in subs)
        todo = [s for s, v in zip(subs, verdicts, strict=True) if v["status"] == Status.NONE]
        if todo:
            on_chain = await _gather(self.registry.get_commitment(task_id, round_, s.device) for s in todo)
            for sub, raw in zip(todo, on_chain, strict=True):
                if "0x" + bytes(raw).hex() != commitment(sub):
                    self._request_rescan(
                        task_id,
                        sub,
                        "no such submission on-chain" if not any(raw) else "on-chain commitment differs",
                    )
                    return
            # The copy rule needs every score of the round: evaluations run concurrently.
            scores = [await self._score(view, round_, global_hash, s) for s in subs]
            copies = await asyncio.to_thread(self._copy_rule, view, round_, global_hash, subs, scores)
            by_device = {s.device.lower(): score for s, score in zip(subs, scores, strict=True)}
            ev_hash = evaluator_hash(view.spec_hash)
            calls = []
            for sub in todo:  # verdicts go out in submission order
                score = copies.get(sub.device.lower()) or by_device[sub.device.lower()]
                calls.append(
                    (
                        sub.device,
                        functools.partial(self.registry.send_verdict, sub, score.accuracy_bp, score.reason, ev_hash),
                        {
                            "device": sub.device,
                            "accuracy_bp": score.accuracy_bp,
                            "reason": verdict_reason(score.reason, score.accuracy_bp, sub.threshold_bp).name,
                            "accepted": is_accepted(score.reason, score.accuracy_bp, sub.threshold_bp),
                        },
                    )
                )
            await self._send_pipelined(task_id, round_, "verdict", calls)
        state = await self.registry.get_state(task_id)
        if state["verdicts"] == state["submissions"]:
            await self._aggregate(view, round_, global_hash, subs)

    def _copy_rule(
        self, view: TaskView, round_: int, global_hash: str, subs: list[Submission], scores: list[Score]
    ) -> dict[str, Score]:
        """The copy rule over the round's evaluated submissions: device -> its DUPLICATE / NEAR_DUPLICATE score.

        Deterministic in the chain's order of submissions and their cached scores, so a restart
        posts the same verdicts.
        """
        if not any(score.reason == int(Reason.OK) for score in scores):
            return {}  # nothing was evaluated (e.g. the task's spec is unusable): no copies to find
        ctx = self._scorer.context(self._job(view, round_, global_hash, None))
        secret, _ = self.seal_keys(view.task_id, round_)
        hashes: list[str | None] = []
        updates: list[list[NDArray[Any]] | None] = []
        for sub, score in zip(subs, scores, strict=True):
            if score.reason != int(Reason.OK):
                hashes.append(None)
                updates.append(None)
                continue
            digest, update = open_update(self.blobs, sub, ctx.spec, secret, self.chain_id, self.registry.address)
            hashes.append(digest)
            updates.append(update)
        out: dict[str, Score] = {}
        for sub, copy in zip(subs, find_copies(hashes, updates), strict=True):
            if copy is not None:
                what = (
                    "the same update as"
                    if copy.reason == Reason.DUPLICATE
                    else f"a near-copy (cosine {copy.cosine:.4f}) of"
                )
                out[sub.device.lower()] = Score(
                    0, int(copy.reason), f"{what} {subs[copy.of].device}'s earlier submission"
                )
        return out

    async def _aggregate(self, view: TaskView, round_: int, global_hash: str, subs: list[Submission]) -> None:
        task_id = view.task_id
        accepted = await self._accepted(task_id, round_, subs)
        try:
            ctx = await asyncio.to_thread(self._scorer.context, self._job(view, round_, global_hash, None))
        except ModelRejected as exc:
            if accepted:
                raise
            # The task itself is unusable (e.g. its spec blob is not canonical): every submission
            # was rejected with that reason, the global model stays, its accuracy is unknown (0).
            emit(
                log,
                "aggregate_skipped",
                logging.WARNING,
                task=task_id,
                round=round_,
                reason=exc.reason.name,
                detail=exc.detail[:200],
            )
            await self._send(
                task_id,
                round_,
                "aggregate",
                global_hash,
                self.registry.aggregate(task_id, global_hash, "", 0, **self._seal_rollover(view, round_)),
                accepted=0,
                accuracy_bp=0,
            )
            return
        new_weights, new_hash, data = await asyncio.to_thread(self._aggregate_weights, ctx, accepted)
        if accepted:
            self.blobs.put(data)
        accuracy = await asyncio.to_thread(ctx.accuracy_bp, new_weights)
        view.history.append(
            {
                "round": round_,
                "submissions": len(subs),
                "accepted": len(accepted),
                "global_accuracy_bp": accuracy,
                "model_hash": new_hash,
            }
        )
        await self._send(
            task_id,
            round_,
            "aggregate",
            new_hash,
            self.registry.aggregate(
                task_id, new_hash, self.blobs.uri(new_hash), accuracy, **self._seal_rollover(view, round_)
            ),
            accepted=len(accepted),
            accuracy_bp=accuracy,
        )
        state = await self.registry.get_state(task_id)
        if state["phase"] == Phase.OPEN:  # announce the next round's threshold before devices train
            await self._follow_threshold(task_id, state["round"], state["thresholdBp"])

    async def _accepted(self, task_id: int, round_: int, subs: list[Submission]) -> list[Submission]:
        """The round's accepted submissions, as the chain records them, in one read.

        The round's ``VerdictPosted`` events from its first mirrored submission's block to the
        head come in one ``eth_getLogs``; each submission's verdict is the event naming its device
        and model. Only a submission without such an event (e.g. its verdict moved by a reorg past
        the range) is asked of the contract on its own.
        """
        blocks = [b for b in (self.checkpoint.submission_block(s) for s in subs) if b is not None]
        head = await self.registry.chain.block_number()
        events = await self.registry.verdict_events(task_id, round_, min(blocks, default=self.config.from_block), head)
        posted = {(ev.args["device"].lower(), normalize_hash(ev.args["modelHash"])): ev for ev in events}
        accepted = []
        for sub in subs:
            ev = posted.get((sub.device.lower(), sub.model_hash))
            if ev is not None:
                ok = bool(ev.args["accepted"])
            else:
                ok = (await self.registry.get_verdict(task_id, round_, sub.device))["status"] in (
                    Status.ACCEPTED,
                    Status.CLAIMED,
                )
            if ok:
                accepted.append(sub)
        return accepted

    def _seal_rollover(self, view: TaskView, round_: int) -> dict[str, Any]:
        """``aggregate``'s seal arguments: this round's secret (disclosed), the next round's public key."""
        nxt = self.seal_keys(view.task_id, round_ + 1)[1] if round_ < view.max_rounds else None
        return {"seal_secret": self.seal_keys(view.task_id, round_)[0], "next_seal_key": nxt}

    def _aggregate_weights(
        self, ctx: RoundContext, accepted: list[Submission]
    ) -> tuple[list[NDArray[Any]], str, bytes]:
        if not accepted:
            return ctx.global_weights, ctx.global_hash, b""
        secret, _ = self.seal_keys(ctx.task_id, ctx.round)
        updates = [
            open_update(self.blobs, s, ctx.spec, secret, self.chain_id, self.registry.address)[1] for s in accepted
        ]
        view = self.tasks[ctx.task_id]
        root_set = self.blobs.get(view.root_set_hash) if view.root_set_hash else None
        new = aggregate_round(
            view.rule, ctx.spec, ctx.global_weights, updates, [s.num_samples for s in accepted], root_set
        )
        data, digest = encode_with_hash(new, ctx.spec)
        return new, digest, data

    async def _privacy_report(self, task_id: int) -> dict[str, Any]:
        """The task's declared budget and the ε each device declared spent (its ``ModelSubmitted`` events)."""
        cfg = await self.registry.get_task(task_id)
        epsilon, delta, _ = decode_dp(cfg)
        first = [b for b in (self.checkpoint.submission_block(s) for s in self.checkpoint.submissions(task_id, 1)) if b]
        start = min(first, default=self.config.from_block)
        events = await self.registry.get_events(start, await self.registry.chain.block_number())
        spent: dict[str, float] = {}
        for ev in events:
            if ev.name == "ModelSubmitted" and ev.args["taskId"] == task_id:
                device = ev.args["device"]
                spent[device] = max(spent.get(device, 0.0), ev.args["epsilonSpentMilli"] / EPSILON_SCALE)
        return {
            "budget": describe_epsilon(epsilon, delta, cfg["maxRounds"], privacy_mode_name(cfg["privacyMode"])),
            "epsilon": epsilon,
            "delta": delta,
            "mode": privacy_mode_name(cfg["privacyMode"]),
            "declared_spent": spent,
            "over_budget": sorted(d for d, e in spent.items() if e > epsilon + 1e-3),
        }

    async def _finalize(self, view: TaskView, round_: int) -> None:
        task_id = view.task_id
        rounds = []
        for r in range(1, round_ + 1):
            rec = await self.registry.get_round(task_id, r)
            rounds.append(
                {
                    "round": r,
                    "submissions": rec["submissions"],
                    "accepted": rec["accepted"],
                    "global_accuracy_bp": rec["globalAccuracyBp"],
                    "global_model": rec["globalModelHash"],
                    "reward_per_accepted_wei": rec["rewardPerAccepted"],
                }
            )
        final = rounds[-1]["global_accuracy_bp"] if rounds else 0
        report = json.dumps(
            {
                "task_id": task_id,
                "registry": self.registry.address,
                "oracle": self.address,
                "final_accuracy_bp": final,
                "rounds": rounds,
                "privacy": await self._privacy_report(task_id),
            },
            indent=1,
            sort_keys=True,
        ).encode()
        digest = self.blobs.put(report)
        await self._send(
            task_id,
            round_,
            "finalize",
            digest,
            self.registry.finalize(task_id, final, digest, self.blobs.uri(digest)),
            accuracy_bp=final,
        )
