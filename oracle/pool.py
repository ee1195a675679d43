"""The worker interface between the oracle's listener and whatever evaluates.

The listener only ever calls ``await pool.score(job)``; evaluations run concurrently while the
listener keeps the order of transactions. :class:`InProcessPool` (threads in this process) is the
default; a distributed task queue implements the same two methods.
"""

from __future__ import annotations

import asyncio
import functools
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

    Jobs that arrive while every thread is busy wait and then go together, up to ``chunk`` at a
    time, to one :meth:`~oracle.scoring.Scorer.score_many` call: one TFF evaluation for the lot
    instead of one per candidate, with the same scores.

    Args:
        scorer: builds round contexts and scores jobs.
        workers: concurrent evaluations.
        chunk: the most jobs scored in one call.
    """

    def __init__(self, scorer: Scorer, workers: int = 2, chunk: int = 32) -> None:
        self.scorer = scorer
        self.workers = workers
        self.chunk = chunk
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oracle-eval")
        self._waiting: list[tuple[ScoreJob, asyncio.Future[Score]]] = []
        self._busy = 0
        self._closed = False

    async def score(self, job: ScoreJob) -> Score:
        """Scores ``job`` on a pool thread, with whatever other jobs are waiting (the event loop keeps running)."""
        fut: asyncio.Future[Score] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._busy < self.workers and self._waiting:
            batch = [(job, fut) for job, fut in self._waiting[: self.chunk] if not fut.cancelled()]
            del self._waiting[: self.chunk]
            if not batch:
                continue
            self._busy += 1
            done = loop.run_in_executor(self._executor, self.scorer.score_many, [job for job, _ in batch])
            done.add_done_callback(functools.partial(self._finished, batch))

    def _finished(self, batch: list[tuple[ScoreJob, asyncio.Future[Score]]], done: asyncio.Future[list[Score]]) -> None:
        self._busy -= 1
        exc = None if done.cancelled() else done.exception()
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            if done.cancelled():
                fut.cancel()
            elif exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(done.result()[i])
        if not self._closed:
            self._dispatch()

    async def close(self) -> None:
        """Stops the threads: waiting evaluations are cancelled, the running ones finish first."""
        self._closed = True
        for _, fut in self._waiting:
            fut.cancel()
        self._waiting.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)
