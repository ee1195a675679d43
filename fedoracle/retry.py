"""Exponential backoff with a cap: one delay sequence, and the retry loops (async and sync) built on it.

Every retry of the project goes through here: the chain's RPC calls, the HTTP blob store, the oracle's wait for
an unreachable node, its per-task retries and its poll outages, the relay's and the devices' broker reconnects.
A call that only needs retrying uses :func:`retry_async` or :func:`retry_sync`; a loop that does more than retry
one call (a session that resets the delay once it is up, a poll loop) steps a :class:`Backoff` itself.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Called before each wait with the error, the number of the attempt that failed (from 1) and the delay.
RetryHook = Callable[[BaseException, int, float], None]
ErrorTypes = type[BaseException] | tuple[type[BaseException], ...]


class Backoff:
    """Delays that start at ``initial`` and grow by ``factor`` after each step, never past ``cap``.

    ``next()`` returns the delay to wait now and steps the sequence; ``reset()`` starts it over (a connection
    that came back). The sequence without jitter is ``min(initial * factor**k, cap)`` for k = 0, 1, 2, ...

    Args:
        initial: the first delay, in seconds.
        cap: the longest delay before jitter (``math.inf``: none).
        factor: growth per step (at least 1).
        jitter: each delay is stretched by a random factor in ``[1, 1 + jitter)`` (0: none), so clients
            that lost the same server do not all come back at the same instant.
        rng: the jitter's random source (default: the :mod:`random` module).
    """

    def __init__(
        self,
        initial: float,
        cap: float = math.inf,
        *,
        factor: float = 2.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or cap < 0 or factor < 1 or jitter < 0:
            raise ValueError(f"need initial, cap, jitter >= 0 and factor >= 1: {initial}, {cap}, {jitter}, {factor}")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._random = (rng or random).random
        self._current = min(initial, cap)

    @property
    def current(self) -> float:
        """The delay :meth:`next` returns next, before jitter."""
        return self._current

    def next(self) -> float:
        """The delay to wait now (jitter applied); the following one is ``factor`` times longer, up to the cap."""
        delay = self._current
        self._current = min(self._current * self.factor, self.cap)
        if self.jitter:
            delay *= 1 + self.jitter * self._random()
        return delay

    def reset(self) -> None:
        """Starts the sequence over at ``initial``."""
        self._current = min(self.initial, self.cap)

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next()

    def __repr__(self) -> str:
        return f"Backoff({self.initial}, cap={self.cap}, factor={self.factor}, jitter={self.jitter})"


def _delay_after(
    exc: BaseException,
    attempt: int,
    backoff: Backoff,
    attempts: int | None,
    deadline: float | None,
    retry_if: Callable[[BaseException], bool] | None,
    clock: Callable[[], float],
) -> float | None:
    """How long to wait before the next attempt, or ``None`` when ``exc`` is to be raised."""
    if retry_if is not None and not retry_if(exc):
        return None
    if attempts is not None and attempt >= attempts:
        return None
    delay = backoff.next()
    if deadline is not None:
        left = deadline - clock()
        if left <= 0:
            return None
        delay = min(delay, left)
    return delay


def _check_attempts(attempts: int | None) -> None:
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    retry_on: ErrorTypes = Exception,
    retry_if: Callable[[BaseException], bool] | None = None,
    attempts: int | None = None,
    deadline: float | None = None,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    give_up: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Awaits ``call()`` until it returns, waiting out ``backoff`` after each retryable failure.

    Args:
        call: makes and awaits one attempt (a fresh coroutine each time).
        backoff: the delays between attempts (stepped in place: a caller may ``reset()`` it from ``call``).
        retry_on: the errors worth another attempt; any other passes straight through.
        retry_if: a further test of an error of ``retry_on`` (``False``: raised at once).
        attempts: the most calls made (``None``: no limit).
        deadline: a ``clock()`` instant after which no attempt starts; a wait is cut short to it.
        on_retry: called before each wait, e.g. to log it.
        sleep: how to wait (e.g. a wait that a stop event cuts short).
        give_up: asked after each wait; ``True`` raises the last error instead of trying again.
        clock: the clock of ``deadline``.

    Returns:
        What the first successful call returned.

    Raises:
        The last error, once ``attempts`` or ``deadline`` is used up or ``give_up`` says so.
    """
    _check_attempts(attempts)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except retry_on as exc:
            delay = _delay_after(exc, attempt, backoff, attempts, deadline, retry_if, clock)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            last = exc
        await sleep(delay)
        if give_up is not None and give_up():
            raise last


def retry_sync(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    retry_on: ErrorTypes = Exception,
    retry_if: Callable[[BaseException], bool] | None = None,
    attempts: int | None = None,
    deadline: float | None = None,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], object] = time.sleep,
    give_up: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Calls ``call()`` until it returns, waiting out ``backoff`` after each retryable failure.

    The blocking twin of :func:`retry_async`, with the same arguments.
    """
    _check_attempts(attempts)
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except retry_on as exc:
            delay = _delay_after(exc, attempt, backoff, attempts, deadline, retry_if, clock)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            last = exc
        sleep(delay)
        if give_up is not None and give_up():
            raise last
