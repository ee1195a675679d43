"""The worker interface between the oracle's listener and whatever evaluates.

The listener only ever calls ``await pool.score(job)``; evaluations run concurrently while the
listener keeps the order of transactions. :class:`InProcessPool` (threads in this process) is the
default; a distributed task queue implements the same two methods.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from oracle.scoring import ScoreJob, Scorer
from oracle.store import Score


class EvaluationPool(Protocol):
    """What the listener needs from evaluation workers."""

    async def score(self, job: ScoreJob) -> Score:
        """Scores one submission (never raises for bad input)."""

    async def close(self) -> None:
        """Releases the workers."""


class InProcessPool:
    """Evaluations on a thread pool of this process (TensorFlow releases the GIL while it computes).

    Args:
        scorer: builds round contexts and scores jobs.
        workers: concurrent evaluations.
    """

    def __init__(self, scorer: Scorer, workers: int = 2) -> None:
        self.scorer = scorer
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oracle-eval")

    async def score(self, job: ScoreJob) -> Score:
        """Scores ``job`` on a pool thread (the event loop keeps running meanwhile)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.scorer.score, job)

    async def close(self) -> None:
        """Stops the threads: queued evaluations are cancelled, the running ones finish first."""
        self._executor.shutdown(wait=True, cancel_futures=True)
