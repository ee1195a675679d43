"""Scoring one submission with the FL core's TFF evaluator.

Scoring fetches the sealed blob, checks its hash, opens it with the round's seal key for the
submitting device, decodes it against the task's spec, and evaluates ``global + update`` on the
round's hidden test groups: :func:`fedoracle.learning.judging.judge_submission`, the one
implementation that ``fedoracle verify`` re-runs from the chain after the round is settled.

Everything a rejection can be is caught here and turned into a :class:`~oracle.store.Score` with
its on-chain reason code; the daemon never sees an exception from bad input. A
:class:`RoundContext` (spec, global weights, evaluator over the round's test data) is built once
per task round and reused for all its submissions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from fedoracle.blobstore import BlobStore
from fedoracle.chain import Submission
from fedoracle.errors import ModelRejected, Reason
from fedoracle.learning.judging import EVALUATOR_ID, LOSS_DETAIL, RoundContext, evaluator_hash
from fedoracle.learning.rounds import score_candidates
from fedoracle.seal import open_update
from oracle.store import Score

log = logging.getLogger(__name__)

__all__ = ["EVALUATOR_ID", "RoundContext", "ScoreJob", "Scorer", "evaluator_hash"]


@dataclass(frozen=True)
class ScoreJob:
    """Everything a worker needs to score one submission, by reference (hashes, no weights)."""

    task_id: int
    round: int
    spec_hash: str
    global_hash: str
    test_root: str
    submission: Submission | None  # None: the job only asks for the round's context
    chain_id: int = 0
    registry: str = ""
    seal_secret: str = ""  # the round's secret seal key (0x-hex): the queue to workers must be private
    loss_margin_bp: int = 0  # the task's loss gate (TaskConfig.lossMarginBp; 0: none)


class Scorer:
    """Scores jobs; builds and caches one :class:`RoundContext` per (task, round). Thread-safe.

    Args:
        blobs: the public blob store (specs, global models, submissions).
        vault: the folder of hidden test sets (:class:`~fedoracle.hidden.HiddenTestSet`).
    """

    def __init__(self, blobs: BlobStore, vault: str) -> None:
        self.blobs = blobs
        self.vault = vault
        self._lock = threading.Lock()
        self._contexts: dict[tuple[int, int, str], RoundContext] = {}

    def context(self, job: ScoreJob) -> RoundContext:
        """The job's round context, built on first use and cached (one round per task at a time).

        Args:
            job: names the task, round, spec, global model and test set.

        Returns:
            The cached or newly built :class:`RoundContext`.
        """
        key = (job.task_id, job.round, job.global_hash)
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                from fedoracle.hidden import HiddenTestSet

                groups = HiddenTestSet.find(self.vault, job.test_root).round_groups(job.round)
                ctx = RoundContext.build(
                    job.task_id, job.round, self.blobs, job.spec_hash, job.global_hash, groups, job.loss_margin_bp
                )
                self._contexts = {k: v for k, v in self._contexts.items() if k[0] != job.task_id}
                self._contexts[key] = ctx
            return ctx

    def score(self, job: ScoreJob) -> Score:
        """Never raises for bad input: every rejection comes back as a Score with its reason."""
        return self.score_many([job])[0]

    def score_many(self, jobs: Sequence[ScoreJob]) -> list[Score]:
        """Scores several jobs; the decodable candidates of each round in one evaluation (:func:`score_candidates`).

        Never raises for bad input: every rejection comes back as a Score with its reason. A
        score's ``seconds`` is its own opening time plus its share of its chunk's evaluation.
        """
        out: list[Score | None] = [None] * len(jobs)
        chunks: dict[int, tuple[RoundContext, list[tuple[int, Submission, list[NDArray[Any]], float]]]] = {}
        for i, job in enumerate(jobs):
            t0 = time.perf_counter()
            sub = job.submission
            if sub is None:
                raise ValueError("a score job needs a submission")
            try:
                ctx = self.context(job)
                _, update = open_update(self.blobs, sub, ctx.spec, job.seal_secret, job.chain_id, job.registry)
                chunks.setdefault(id(ctx), (ctx, []))[1].append((i, sub, update, time.perf_counter() - t0))
            except ModelRejected as exc:
                out[i] = Score(0, int(exc.reason), exc.detail[:300], time.perf_counter() - t0)
            except ValueError as exc:  # malformed hash and the like
                out[i] = Score(0, int(Reason.UNDECODABLE), str(exc)[:300], time.perf_counter() - t0)
        for ctx, items in chunks.values():
            t0 = time.perf_counter()
            verdicts = score_candidates(
                ctx.evaluator, ctx.global_weights, [u for _, _, u, _ in items], [s.threshold_bp for _, s, _, _ in items]
            )
            share = (time.perf_counter() - t0) / len(items)
            for (i, _, _, opened), raw in zip(items, verdicts, strict=True):
                verdict = ctx.gate_loss(raw)
                detail = {Reason.NON_FINITE: "global + update overflows", Reason.LOSS_ABOVE_MARGIN: LOSS_DETAIL}.get(
                    verdict.reason, ""
                )
                out[i] = Score(verdict.accuracy_bp, int(verdict.reason), detail, opened + share)
        done = [score for score in out if score is not None]
        assert len(done) == len(jobs)  # every job got its score above
        return done
