"""The oracle daemon: a restart-safe reconciler between the chain and the FL core.

Events wake it; the chain tells it what to do. For every task it serves (``oracle == us`` and
its hidden test set in our vault) it reads the task's on-chain state and takes the next step of
the paper's workflow:

=====================  ==========================================================================
phase on-chain         step
=====================  ==========================================================================
Open                   score submissions as they arrive (eagerly, off-chain); close submissions
                       when the round's deadline has passed
Closed                 disclose the round's test groups (``disclosure_test_data``); post one
                       verdict per submission that has none (``evaluate_local_model``); when all
                       are in, aggregate the accepted updates, store and evaluate the new global
                       model and commit it (``aggregate_model_update`` + ``evaluate_model``)
AwaitingFinalize       post the final report (``finalize_contract`` + ``post_evaluation``)
=====================  ==========================================================================

Exactly once: every step is conditional on the chain's state (a verdict is posted only if the
contract has none for that submission), the checkpoint's watermark and event keys move in one
sqlite transaction per block range, and scores are cached. So a crash anywhere, a replayed
range or a reorg (``removed`` logs drop the cached submission) never yields a second verdict or
a missed one: the next reconciliation picks up where the chain stands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, ChainError, Phase, Status, Submission, TaskRegistry
from fedoracle.codec import decode, encode_with_hash
from fedoracle.errors import ConfigError, Reason
from fedoracle.follow import LogFollower
from fedoracle.hidden import HiddenTestSet
from oracle.pool import EvaluationPool
from oracle.scoring import RoundContext, ScoreJob, Scorer
from oracle.store import Checkpoint, Score

log = logging.getLogger(__name__)


@dataclass
class OracleConfig:
    """How the oracle behaves."""

    vault: Path
    state_dir: Path
    confirmations: int = 0
    poll_interval: float = 0.2
    aggregation: str = "fedavg"  # fedavg | median | trimmed_mean
    trim_fraction: float = 0.2
    from_block: int = 0
    threshold_margin: float | None = None  # raise round r's threshold to global_{r-1} - margin


@dataclass
class TaskView:
    """What the oracle caches about a task it serves."""

    task_id: int
    spec_hash: str
    test_root: str
    max_rounds: int
    history: list[dict] = field(default_factory=list)


class Oracle:
    """One oracle account serving every task that names it.

    Args:
        chain: connection with the oracle's signing account.
        registry_address: the registry.
        blobs: the public blob store.
        pool: where evaluations run.
        config: behaviour.
    """

    def __init__(self, chain: Chain, registry_address: str, blobs: BlobStore, pool: EvaluationPool,
                 config: OracleConfig) -> None:
        self.registry = TaskRegistry(chain, registry_address)
        self.blobs = blobs
        self.pool = pool
        self.config = config
        self.checkpoint = Checkpoint(Path(config.state_dir) / f"oracle-{self.registry.address.lower()}.sqlite")
        self.tasks: dict[int, TaskView] = {}
        self._scoring: dict[tuple[int, int, str], asyncio.Task] = {}
        self._scorer = Scorer(blobs, str(config.vault))
        self.stopped = asyncio.Event()

    @property
    def address(self) -> str:
        return self.registry.chain.address

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
        try:
            HiddenTestSet.find(self.config.vault, cfg["testSetRoot"])
        except ConfigError:
            log.error("task %d names us as oracle but its test set %s is not in %s", task_id,
                      cfg["testSetRoot"], self.config.vault)
            return
        self.tasks[task_id] = TaskView(task_id, cfg["modelSpecHash"], cfg["testSetRoot"], cfg["maxRounds"])
        log.info("serving task %d", task_id)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follows the chain and reconciles served tasks until :attr:`stopped` is set."""
        start = self.checkpoint.next_block
        follower = LogFollower(self.registry, self.config.from_block if start is None else start,
                               confirmations=self.config.confirmations, poll_interval=self.config.poll_interval)
        await self._load_served()
        if ready is not None:
            ready.set()
        while not self.stopped.is_set():
            batch = await follower.poll()
            if batch is not None:
                with self.checkpoint.transaction():
                    for ev in batch.events:
                        self.checkpoint.apply(ev)
                    self.checkpoint.set("next_block", str(batch.end + 1))
                for ev in batch.events:
                    if ev.name == "TaskPublished" and not ev.removed:
                        await self._maybe_serve(ev.args["taskId"])
            for task_id in list(self.tasks):
                try:
                    await self.reconcile(task_id)
                except ChainError as exc:
                    log.warning("task %d: %s (will retry)", task_id, exc)
            if batch is None:
                try:
                    await asyncio.wait_for(self.stopped.wait(), self.config.poll_interval)
                except asyncio.TimeoutError:
                    pass

    async def close(self) -> None:
        for t in self._scoring.values():
            t.cancel()
        await self.pool.close()
        self.checkpoint.close()

    # --- the state machine ------------------------------------------------------------------

    async def reconcile(self, task_id: int) -> None:
        """Takes every step the task's on-chain state calls for now."""
        view = self.tasks[task_id]
        state = await self.registry.get_state(task_id)
        phase, round_ = state["phase"], state["round"]
        if phase in (Phase.FINALIZED, Phase.CANCELLED):
            log.info("task %d is %s; no longer served", task_id, phase.name.lower())
            del self.tasks[task_id]
            return
        if phase == Phase.OPEN:
            await self._follow_threshold(task_id, round_, state["thresholdBp"])
            await self._prefetch(view, round_)
            if time.time() > state["deadline"]:
                await self._send(task_id, round_, "close", "", self.registry.close_submissions(task_id))
            return
        if phase == Phase.CLOSED:
            await self._settle_round(view, round_, state)
        elif phase == Phase.AWAITING_FINALIZE:
            await self._finalize(view, round_)

    async def _follow_threshold(self, task_id: int, round_: int, current_bp: int) -> None:
        """The dynamic threshold: at most ``margin`` below the last global model's accuracy.

        A threshold can only go up, and a submission is judged by the threshold in force when it
        was made, so announcing right after a round opens (before devices have trained) is fair.
        """
        if self.config.threshold_margin is None or round_ < 2:
            return
        previous = await self.registry.get_round(task_id, round_ - 1)
        target = previous["globalAccuracyBp"] - round(self.config.threshold_margin * 10_000)
        if target > current_bp:
            await self._send(task_id, round_, "threshold", str(target),
                             self.registry.announce_threshold(task_id, min(target, 10_000)))

    async def _send(self, task_id: int, round_: int, action: str, subject: str, tx) -> dict | None:
        receipt = await tx
        self.checkpoint.record_action(task_id, round_, action, subject, receipt)
        log.info("task %d round %d: %s %s (gas %d)", task_id, round_, action, subject, receipt["gasUsed"])
        return receipt

    def _job(self, view: TaskView, round_: int, global_hash: str, sub: Submission | None) -> ScoreJob:
        return ScoreJob(view.task_id, round_, view.spec_hash, global_hash, view.test_root, sub)

    async def _score(self, view: TaskView, round_: int, global_hash: str, sub: Submission) -> Score:
        cached = self.checkpoint.score(sub)
        if cached is not None:
            return cached
        key = (sub.task_id, sub.round, sub.device.lower())
        task = self._scoring.get(key)
        if task is None:
            task = asyncio.ensure_future(self.pool.score(self._job(view, round_, global_hash, sub)))
            self._scoring[key] = task
        score = await asyncio.shield(task)
        self._scoring.pop(key, None)
        self.checkpoint.save_score(sub, score)
        if score.reason != Reason.OK:
            log.info("task %d round %d: %s rejected: %s %s", sub.task_id, sub.round, sub.device,
                     Reason(score.reason).name, score.detail)
        return score

    async def _prefetch(self, view: TaskView, round_: int) -> None:
        """Starts scoring new submissions of the open round in the background."""
        subs = self.checkpoint.submissions(view.task_id, round_)
        if not subs:
            return
        global_hash = (await self.registry.get_task(view.task_id))["globalModelHash"]
        for sub in subs:
            key = (sub.task_id, sub.round, sub.device.lower())
            if key not in self._scoring and self.checkpoint.score(sub) is None:
                self._scoring[key] = asyncio.ensure_future(self.pool.score(self._job(view, round_, global_hash, sub)))

    async def _settle_round(self, view: TaskView, round_: int, state: dict) -> None:
        task_id = view.task_id
        record = await self.registry.get_round(task_id, round_)
        if not record["disclosed"]:
            hidden = HiddenTestSet.find(self.config.vault, view.test_root)
            groups = hidden.commitment.disclosure(round_)
            for g, data in zip(groups, hidden.round_groups(round_)):
                self.blobs.put(data)  # disclosed groups become public, content-addressed
            groups = [type(g)(g.index, g.salt, g.group_hash, self.blobs.uri("0x" + g.group_hash.hex()), g.proof)
                      for g in groups]
            await self._send(task_id, round_, "disclose", f"{len(groups)} groups",
                             self.registry.disclose_test_data(task_id, hidden.commitment.seed, groups))
        subs = self.checkpoint.submissions(task_id, round_)
        if len(subs) < state["submissions"]:
            return  # some ModelSubmitted logs are not confirmed/read yet; the next batch brings them
        global_hash = (await self.registry.get_task(task_id))["globalModelHash"]
        scores = await asyncio.gather(*(self._score(view, round_, global_hash, s) for s in subs))
        for sub, score in zip(subs, scores):
            verdict = await self.registry.get_verdict(task_id, round_, sub.device)
            if verdict["status"] != Status.NONE:
                continue
            ctx_hash = self._scorer.context(self._job(view, round_, global_hash, sub)).evaluator_hash
            await self._send(task_id, round_, "verdict", sub.device,
                             self.registry.post_verdict(sub, score.accuracy_bp, score.reason, ctx_hash))
        state = await self.registry.get_state(task_id)
        if state["verdicts"] == state["submissions"]:
            await self._aggregate(view, round_, global_hash, subs)

    async def _aggregate(self, view: TaskView, round_: int, global_hash: str, subs: list[Submission]) -> None:
        task_id = view.task_id
        accepted = []
        for sub in subs:
            v = await self.registry.get_verdict(task_id, round_, sub.device)
            if v["status"] in (Status.ACCEPTED, Status.CLAIMED):
                accepted.append(sub)
        ctx = self._scorer.context(self._job(view, round_, global_hash, None))
        new_weights, new_hash, data = await asyncio.to_thread(self._aggregate_weights, ctx, accepted)
        if accepted:
            self.blobs.put(data)
        accuracy = await asyncio.to_thread(ctx.accuracy_bp, new_weights)
        view.history.append({"round": round_, "submissions": len(subs), "accepted": len(accepted),
                             "global_accuracy_bp": accuracy, "model_hash": new_hash})
        await self._send(task_id, round_, "aggregate", new_hash,
                         self.registry.aggregate(task_id, new_hash, self.blobs.uri(new_hash), accuracy))
        state = await self.registry.get_state(task_id)
        if state["phase"] == Phase.OPEN:  # announce the next round's threshold before devices train
            await self._follow_threshold(task_id, state["round"], state["thresholdBp"])

    def _aggregate_weights(self, ctx: RoundContext, accepted: list[Submission]):
        if not accepted:
            return ctx.global_weights, ctx.global_hash, b""
        from fedoracle.learning.aggregation import aggregate

        updates = [decode(self.blobs.get(s.model_hash), ctx.spec, expected_hash=s.model_hash) for s in accepted]
        samples = [s.num_samples for s in accepted]
        weights = samples if all(n > 0 for n in samples) else None
        mean = aggregate(updates, weights=weights, rule=self.config.aggregation,
                         trim_fraction=self.config.trim_fraction)
        new = [np.asarray(g + m, dtype=g.dtype) for g, m in zip(ctx.global_weights, mean)]
        data, digest = encode_with_hash(new, ctx.spec)
        return new, digest, data

    async def _finalize(self, view: TaskView, round_: int) -> None:
        task_id = view.task_id
        rounds = []
        for r in range(1, round_ + 1):
            rec = await self.registry.get_round(task_id, r)
            rounds.append({"round": r, "submissions": rec["submissions"], "accepted": rec["accepted"],
                           "global_accuracy_bp": rec["globalAccuracyBp"], "global_model": rec["globalModelHash"],
                           "reward_per_accepted_wei": rec["rewardPerAccepted"]})
        final = rounds[-1]["global_accuracy_bp"] if rounds else 0
        report = json.dumps({"task_id": task_id, "registry": self.registry.address, "oracle": self.address,
                             "final_accuracy_bp": final, "rounds": rounds}, indent=1, sort_keys=True).encode()
        digest = self.blobs.put(report)
        await self._send(task_id, round_, "finalize", digest,
                         self.registry.finalize(task_id, final, digest, self.blobs.uri(digest)))
