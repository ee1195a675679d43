"""Oracle evaluations on a distributed task queue: taskiq over Redis streams.

The listener (``fedoracle oracle run --queue redis://...``) stays single: it owns the checkpoint,
the nonce and the order of transactions. It only hands :class:`~oracle.scoring.ScoreJob` s (by
reference: hashes and ids, never weights) to :class:`QueuePool`; any number of worker processes
on any host (``fedoracle oracle worker --queue redis://...``) score them with the same
:class:`~oracle.scoring.Scorer` the in-process pool uses, which fetches the blob, checks its
content hash and the model spec itself before computing.

Exactly once, across workers:

- Jobs travel on a Redis stream with a consumer group (``RedisStreamBroker``); a worker
  acknowledges a job only after its result is saved. A job whose worker died stays
  unacknowledged and is claimed by another worker once it has been idle ``idle_timeout`` ms.
- The listener also re-sends a job whose result has not come back within ``job_timeout``
  seconds (a dead worker, a lost message), up to ``attempts`` times.
- Either way a job may be scored twice; the listener takes the first result for a submission
  and drops the rest, and a verdict is posted only when the chain has none for that submission
  (the contract also refuses a second one). A duplicate or late result never becomes a verdict.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from fedoracle.chain import Submission
from fedoracle.errors import ConfigError, EvaluationFailed
from oracle.scoring import ScoreJob, Scorer
from oracle.store import Score

if TYPE_CHECKING:
    from taskiq import AsyncBroker

log = logging.getLogger(__name__)

QUEUE_NAME = "fedoracle:oracle:scores"
GROUP = "fedoracle-oracle-workers"
TASK_NAME = "fedoracle.oracle.score"


def make_broker(url: str, *, idle_timeout_ms: int = 60_000, result_ttl: int = 3_600, fetch: int = 1) -> AsyncBroker:
    """A taskiq broker on Redis streams with a Redis result backend.

    Args:
        url: ``redis://HOST:PORT/DB``.
        idle_timeout_ms: how long a job may stay unacknowledged before another worker claims it.
        result_ttl: seconds a result is kept in Redis.
        fetch: jobs a worker takes from the stream at once (one each keeps the load spread and a
            dead worker's backlog small).

    Returns:
        The broker with the scoring task registered, not yet started.
    """
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    backend: RedisAsyncResultBackend[dict[str, Any]] = RedisAsyncResultBackend(url, result_ex_time=result_ttl)
    broker = RedisStreamBroker(
        url,
        queue_name=QUEUE_NAME,
        consumer_group_name=GROUP,
        consumer_id="0",
        idle_timeout=idle_timeout_ms,
        unacknowledged_lock_timeout=5.0,
        xread_block=500,
        xread_count=fetch,
    ).with_result_backend(backend)
    broker.register_task(_score_task, task_name=TASK_NAME)
    return broker


_scorer: Scorer | None = None
_DELAY = float(os.environ.get("FEDORACLE_TEST_SCORE_DELAY", "0"))


def _score_task(job: dict[str, Any]) -> dict[str, Any]:
    """The worker side: score one job with this process's scorer (sync: runs in a thread)."""
    if _scorer is None:
        raise ConfigError("this process is not an oracle worker (no scorer configured)")
    started = time.perf_counter()
    sub = job.get("submission")
    log.info("scoring task=%s round=%s device=%s", job["task_id"], job["round"], sub and sub["device"])
    if _DELAY:  # tests widen the window in which a worker can be killed mid-evaluation
        time.sleep(_DELAY)
    score = _scorer.score(ScoreJob(**{**job, "submission": Submission(**sub) if sub else None}))
    log.info(
        "scored task=%s round=%s device=%s reason=%s accuracy_bp=%s in %.2fs",
        job["task_id"],
        job["round"],
        sub and sub["device"],
        score.reason,
        score.accuracy_bp,
        time.perf_counter() - started,
    )
    return dataclasses.asdict(score)


class QueuePool:
    """The listener's side: an :class:`~oracle.pool.EvaluationPool` over the queue.

    Args:
        url: the Redis URL.
        job_timeout: seconds to wait for a result before sending the job again.
        attempts: how many times a job is sent before the pool gives up on it (it is then
            retried at the next reconciliation, never turned into a verdict).
    """

    def __init__(
        self, url: str, *, job_timeout: float = 120.0, attempts: int = 5, idle_timeout_ms: int = 60_000
    ) -> None:
        self.url = url
        self.job_timeout = job_timeout
        self.attempts = attempts
        self.broker = make_broker(url, idle_timeout_ms=idle_timeout_ms)
        task = self.broker.find_task(TASK_NAME)
        if task is None:  # make_broker registers it; only a changed make_broker could lose it
            raise ConfigError(f"the queue broker has no task {TASK_NAME!r}")
        self._task = task
        self._started = False
        self.sent = 0

    async def _start(self) -> None:
        if not self._started:
            await self.broker.startup()
            self._started = True

    async def score(self, job: ScoreJob) -> Score:
        """Sends ``job`` to the workers and waits for its score, sending it again on a timeout.

        Raises:
            RuntimeError: when no worker returned a score in ``attempts`` tries.
        """
        await self._start()
        payload = dataclasses.asdict(job)
        for attempt in range(1, self.attempts + 1):
            handle = await self._task.kiq(payload)
            self.sent += 1
            try:
                result = await handle.wait_result(timeout=self.job_timeout, check_interval=0.05)
            except Exception as exc:  # taskiq raises TaskiqResultTimeoutError on timeout
                log.warning(
                    "job for %s (attempt %d) got no result in %.0fs: %s; sending it again",
                    job.submission and job.submission.device,
                    attempt,
                    self.job_timeout,
                    type(exc).__name__,
                )
                continue
            if result.is_err:
                log.warning("worker failed on a job (attempt %d): %s", attempt, result.error)
                await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            return Score(**result.return_value)
        raise EvaluationFailed(f"no worker scored the job for {job.submission} after {self.attempts} attempts")

    async def close(self) -> None:
        """Shuts the broker's connections down (the workers keep running)."""
        if self._started:
            await self.broker.shutdown()


async def run_worker(
    url: str,
    blob_store: str,
    vault: str,
    *,
    concurrency: int = 1,
    idle_timeout_ms: int = 60_000,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs one worker process until ``stop`` is set: receives jobs, scores, saves, acknowledges."""
    from concurrent.futures import ThreadPoolExecutor

    from taskiq.acks import AcknowledgeType
    from taskiq.receiver import Receiver

    from fedoracle.blobstore import open_store

    global _scorer
    _scorer = Scorer(open_store(blob_store), vault)
    broker = make_broker(url, idle_timeout_ms=idle_timeout_ms, fetch=concurrency)
    broker.is_worker_process = True
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="oracle-worker")
    receiver = Receiver(
        broker,
        executor=executor,
        max_async_tasks=concurrency,
        max_prefetch=0,
        ack_type=AcknowledgeType.WHEN_SAVED,
        propagate_exceptions=True,
    )
    stop = stop or asyncio.Event()
    log.info("oracle worker %d listening on %s (%s)", os.getpid(), url, QUEUE_NAME)
    try:
        await receiver.listen(stop)
    finally:
        await broker.shutdown()
        executor.shutdown(wait=False, cancel_futures=True)
