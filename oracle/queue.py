"""Oracle evaluations on a distributed task queue: taskiq over Redis streams.

The listener (``fedoracle oracle run --queue redis://...``) stays single: it owns the checkpoint,
the nonce and the order of transactions. It only hands :class:`~oracle.scoring.ScoreJob` s (by
reference: hashes and ids, never weights) to :class:`QueuePool`; any number of worker processes
on any host (``fedoracle oracle worker --queue redis://...``) score them with the same
:class:`~oracle.scoring.Scorer` the in-process pool uses, which fetches the blob, checks its
content hash and the model spec itself before computing. As in the in-process pool, jobs that
arrive while ``in_flight`` messages are out wait and then travel together, up to ``chunk`` in one
message, which a worker scores with one :meth:`~oracle.scoring.Scorer.score_many` call (one TFF
evaluation for the chunk's candidates instead of one per job, with the same scores).

Exactly once, across workers:

- Messages (one job or a chunk) travel on a Redis stream with a consumer group
  (``RedisStreamBroker``); a worker acknowledges a message only after its result is saved. A job whose worker died stays
  unacknowledged and is claimed by another worker once it has been idle ``idle_timeout`` ms.
- The listener also re-sends a message whose result has not come back within ``job_timeout``
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


def _score_task(jobs: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """The worker side: scores one job, or a chunk in one call, with this process's scorer (sync: in a thread)."""
    if _scorer is None:
        raise ConfigError("this process is not an oracle worker (no scorer configured)")
    chunk = jobs if isinstance(jobs, list) else [jobs]
    started = time.perf_counter()
    for job in chunk:
        sub = job.get("submission")
        log.info("scoring task=%s round=%s device=%s", job["task_id"], job["round"], sub and sub["device"])
    if _DELAY:  # tests widen the window in which a worker can be killed mid-evaluation
        time.sleep(_DELAY)
    scores = _scorer.score_many(
        [
            ScoreJob(**{**job, "submission": Submission(**job["submission"]) if job.get("submission") else None})
            for job in chunk
        ]
    )
    for job, score in zip(chunk, scores, strict=True):
        sub = job.get("submission")
        log.info(
            "scored task=%s round=%s device=%s reason=%s accuracy_bp=%s in %.2fs (chunk of %d)",
            job["task_id"],
            job["round"],
            sub and sub["device"],
            score.reason,
            score.accuracy_bp,
            time.perf_counter() - started,
            len(chunk),
        )
    out = [dataclasses.asdict(score) for score in scores]
    return out if isinstance(jobs, list) else out[0]


class QueuePool:
    """The listener's side: an :class:`~oracle.pool.EvaluationPool` over the queue.

    Args:
        url: the Redis URL.
        job_timeout: seconds to wait for a message's result before sending it again.
        attempts: how many times a message is sent before the pool gives up on its jobs (they are
            then retried at the next reconciliation, never turned into a verdict).
        in_flight: messages out at once; a job arriving while that many are out waits.
        chunk: the most waiting jobs sent together in one message (1: one job per message).
    """

    def __init__(
        self,
        url: str,
        *,
        job_timeout: float = 120.0,
        attempts: int = 5,
        idle_timeout_ms: int = 60_000,
        in_flight: int = 4,
        chunk: int = 16,
    ) -> None:
        if in_flight < 1 or chunk < 1:
            raise ConfigError(f"in_flight and chunk must be positive, got {in_flight} and {chunk}")
        self.url = url
        self.job_timeout = job_timeout
        self.attempts = attempts
        self.in_flight = in_flight
        self.chunk = chunk
        self.broker = make_broker(url, idle_timeout_ms=idle_timeout_ms)
        task = self.broker.find_task(TASK_NAME)
        if task is None:  # make_broker registers it; only a changed make_broker could lose it
            raise ConfigError(f"the queue broker has no task {TASK_NAME!r}")
        self._task = task
        self._started = False
        self._waiting: list[tuple[ScoreJob, asyncio.Future[Score]]] = []
        self._busy = 0
        self._sends: set[asyncio.Task[None]] = set()
        self.sent = 0

    async def _start(self) -> None:
        if not self._started:
            await self.broker.startup()
            self._started = True

    async def score(self, job: ScoreJob) -> Score:
        """Sends ``job`` to the workers (with whatever other jobs are waiting) and waits for its score.

        Raises:
            EvaluationFailed: when no worker returned a score in ``attempts`` tries.
        """
        await self._start()
        fut: asyncio.Future[Score] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        while self._busy < self.in_flight and self._waiting:
            batch = [(job, fut) for job, fut in self._waiting[: self.chunk] if not fut.cancelled()]
            del self._waiting[: self.chunk]
            if not batch:
                continue
            self._busy += 1
            send = asyncio.create_task(self._send(batch))
            self._sends.add(send)
            send.add_done_callback(self._sent)

    def _sent(self, send: asyncio.Task[None]) -> None:
        self._sends.discard(send)
        self._busy -= 1
        self._dispatch()

    async def _send(self, batch: list[tuple[ScoreJob, asyncio.Future[Score]]]) -> None:
        try:
            scores = await self._scores([job for job, _ in batch])
        except BaseException as exc:  # the jobs' waiters get the failure, cancellation included
            for _, fut in batch:
                if fut.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), score in zip(batch, scores, strict=True):
            if not fut.done():
                fut.set_result(score)

    async def _scores(self, jobs: list[ScoreJob]) -> list[Score]:
        single = len(jobs) == 1  # one job travels as before (a worker of an older release takes it too)
        payload: Any = dataclasses.asdict(jobs[0]) if single else [dataclasses.asdict(job) for job in jobs]
        for attempt in range(1, self.attempts + 1):
            handle = await self._task.kiq(payload)
            self.sent += 1
            try:
                result = await handle.wait_result(timeout=self.job_timeout, check_interval=0.05)
            except Exception as exc:  # taskiq raises TaskiqResultTimeoutError on timeout
                log.warning(
                    "message of %d job(s) for %s (attempt %d) got no result in %.0fs: %s; sending it again",
                    len(jobs),
                    jobs[0].submission and jobs[0].submission.device,
                    attempt,
                    self.job_timeout,
                    type(exc).__name__,
                )
                continue
            if result.is_err:
                log.warning("worker failed on a message (attempt %d): %s", attempt, result.error)
                await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            value = result.return_value
            return [Score(**value)] if single else [Score(**v) for v in value]
        raise EvaluationFailed(
            f"no worker scored the message for {jobs[0].submission} (+{len(jobs) - 1} more) "
            f"after {self.attempts} attempts"
        )

    async def close(self) -> None:
        """Stops the messages still out and shuts the broker's connections down (the workers keep running)."""
        for send in list(self._sends):
            send.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
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
