"""The backoff helper: the delay sequence (property tests), and the async and sync retry loops."""

from __future__ import annotations

import asyncio
import math
import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedoracle.retry import Backoff, retry_async, retry_sync

initials = st.floats(min_value=0.001, max_value=10.0)
caps = st.floats(min_value=0.001, max_value=100.0)
factors = st.floats(min_value=1.0, max_value=4.0)


@given(initials, caps, factors, st.integers(min_value=1, max_value=60))
def test_delays_never_pass_the_cap_and_grow_until_they_reach_it(initial, cap, factor, n):
    backoff = Backoff(initial, cap, factor=factor)
    delays = [backoff.next() for _ in range(n)]
    assert delays[0] == min(initial, cap)
    assert all(d <= cap for d in delays)
    assert all(a <= b for a, b in pairwise(delays))  # monotone
    for a, b in pairwise(delays):  # each step grows by the factor, until the cap holds it
        assert b == min(a * factor, cap)
    if delays[-1] == cap:
        assert delays[delays.index(cap) :] == [cap] * (n - delays.index(cap))  # at the cap it stays


@given(initials, caps, st.floats(min_value=0.0, max_value=2.0), st.integers(min_value=0, max_value=2**32))
def test_jitter_stretches_each_delay_within_its_bound(initial, cap, jitter, seed):
    plain = Backoff(initial, cap)
    jittered = Backoff(initial, cap, jitter=jitter, rng=random.Random(seed))
    for _ in range(20):
        nominal = jittered.current
        assert nominal == plain.current
        d, base = jittered.next(), plain.next()
        assert base <= d <= base * (1 + jitter)


def test_the_known_sequences_and_reset():
    b = Backoff(0.2, cap=5.0)
    assert [b.next() for _ in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    b.reset()
    assert b.next() == 0.2
    unbounded = Backoff(0.25)
    assert [unbounded.next() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert unbounded.cap == math.inf
    zero = Backoff(0.0)
    assert [zero.next() for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("args", [(-1.0, 1.0), (1.0, -1.0)])
def test_bad_parameters_are_refused(args):
    with pytest.raises(ValueError):
        Backoff(*args)
    with pytest.raises(ValueError):
        Backoff(1.0, factor=0.5)
    with pytest.raises(ValueError):
        retry_sync(lambda: 1, backoff=Backoff(1.0), attempts=0)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``; counts its calls."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or OSError("down")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"

    async def call_async(self) -> str:
        await asyncio.sleep(0)
        return self()


class Waits:
    """A sleep that only records (and a clock that it moves)."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self(seconds)

    def clock(self) -> float:
        return self.now


@given(st.integers(min_value=0, max_value=12), st.integers(min_value=1, max_value=12))
def test_sync_retries_wait_out_the_backoff_and_stop_at_the_limit(failures, attempts):
    flaky, waits, hooked = Flaky(failures), Waits(), []
    expected = Backoff(0.1, cap=1.0)

    def call():
        return retry_sync(
            flaky,
            backoff=Backoff(0.1, cap=1.0),
            retry_on=OSError,
            attempts=attempts,
            sleep=waits,
            on_retry=lambda exc, n, delay: hooked.append((n, delay)),
        )

    if failures < attempts:
        assert call() == "ok"
        assert flaky.calls == failures + 1
    else:
        with pytest.raises(OSError, match="down"):
            call()
        assert flaky.calls == attempts  # no call past the limit, and no wait after the last one
    assert waits.slept == [expected.next() for _ in waits.slept]
    assert hooked == [(n + 1, d) for n, d in enumerate(waits.slept)]


@given(st.integers(min_value=0, max_value=12), st.integers(min_value=1, max_value=12))
def test_async_retries_behave_the_same(failures, attempts):
    flaky, waits = Flaky(failures), Waits()

    async def go():
        return await retry_async(
            flaky.call_async,
            backoff=Backoff(0.1, cap=1.0),
            retry_on=OSError,
            attempts=attempts,
            sleep=waits.async_sleep,
        )

    if failures < attempts:
        assert asyncio.run(go()) == "ok"
        assert flaky.calls == failures + 1
    else:
        with pytest.raises(OSError, match="down"):
            asyncio.run(go())
        assert flaky.calls == attempts
    expected = Backoff(0.1, cap=1.0)
    assert waits.slept == [expected.next() for _ in waits.slept]


def test_errors_not_worth_a_retry_pass_straight_through():
    waits = Waits()
    flaky = Flaky(3, KeyError("bug"))
    with pytest.raises(KeyError):
        retry_sync(flaky, backoff=Backoff(0.1), retry_on=OSError, sleep=waits)
    assert (flaky.calls, waits.slept) == (1, [])

    refused = Flaky(3, OSError("refused for good"))
    with pytest.raises(OSError):
        retry_sync(
            refused, backoff=Backoff(0.1), retry_on=OSError, retry_if=lambda e: "good" not in str(e), sleep=waits
        )
    assert (refused.calls, waits.slept) == (1, [])

    async def go():
        flaky = Flaky(3, KeyError("bug"))
        with pytest.raises(KeyError):
            await retry_async(flaky.call_async, backoff=Backoff(0.1), retry_on=OSError, sleep=waits.async_sleep)
        return flaky.calls

    assert asyncio.run(go()) == 1 and waits.slept == []


def test_no_limit_retries_until_it_works():
    flaky, waits = Flaky(40), Waits()
    assert retry_sync(flaky, backoff=Backoff(0.5, cap=10.0), retry_on=OSError, sleep=waits) == "ok"
    assert flaky.calls == 41 and max(waits.slept) == 10.0


def test_a_deadline_cuts_the_last_wait_short_and_then_gives_up():
    flaky, waits = Flaky(100), Waits()
    with pytest.raises(OSError):
        retry_sync(flaky, backoff=Backoff(1.0), retry_on=OSError, deadline=10.0, sleep=waits, clock=waits.clock)
    assert waits.slept == [1.0, 2.0, 4.0, 3.0]  # the fourth wait ends at the deadline
    assert flaky.calls == 5  # one last call at the deadline, none after it


def test_give_up_is_asked_after_each_wait():
    """The oracle's case: a stop event cuts a wait short, and then nothing is called again."""
    flaky, waits = Flaky(100), Waits()
    stopped = asyncio.Event()

    async def stopping_sleep(seconds: float) -> None:
        waits(seconds)
        if len(waits.slept) == 3:
            stopped.set()

    async def go():
        await retry_async(
            flaky.call_async, backoff=Backoff(0.5), retry_on=OSError, sleep=stopping_sleep, give_up=stopped.is_set
        )

    with pytest.raises(OSError):
        asyncio.run(go())
    assert (flaky.calls, waits.slept) == (3, [0.5, 1.0, 2.0])


def test_the_caller_may_reset_the_backoff_from_inside_the_call():
    """The reconnect case: a session that came up starts the delays over when it is lost again."""
    backoff, waits, calls = Backoff(0.2, cap=5.0), Waits(), []

    def session():
        calls.append(len(calls))
        if len(calls) == 4:
            backoff.reset()  # connected this time, then lost
        if len(calls) < 6:
            raise ConnectionError("lost")
        return "done"

    assert retry_sync(session, backoff=backoff, retry_on=ConnectionError, sleep=waits) == "done"
    assert waits.slept == pytest.approx([0.2, 0.4, 0.8, 0.2, 0.4])
