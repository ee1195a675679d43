"""Process-group teardown: a real group whose members ignore SIGTERM is killed; a dead one is fine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from fedoracle.procs import stop_process_group, stop_process_groups

# A child that ignores SIGTERM says "ready" once it does; its parent (the group leader) says the child's pid.
CHILD = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
)


def leader(*, ignore_term: bool) -> tuple[subprocess.Popen, int]:
    """Starts a group leader with one SIGTERM-ignoring child; returns it and the child's pid, both ready."""
    code = (
        f"import signal, subprocess, sys, time\n"
        f"{'signal.signal(signal.SIGTERM, signal.SIG_IGN)' if ignore_term else ''}\n"
        f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}])\n"
        f"print(child.pid, flush=True)\n"
        f"time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]  # the pid and "ready", either order
    assert "ready" in lines, lines
    child = int(next(line for line in lines if line != "ready"))
    return proc, child


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gone(pid)


def test_a_child_that_ignores_sigterm_is_killed_once_its_leader_has_exited():
    proc, child = leader(ignore_term=False)
    try:
        started = time.monotonic()
        code = stop_process_group(proc, timeout=10)
        assert time.monotonic() - started < 5  # the leader went at once: no waiting out the timeout
        assert code == -signal.SIGTERM
        assert wait_gone(child)
    finally:
        proc.stdout.close()


def test_a_leader_that_ignores_sigterm_is_killed_after_the_timeout():
    proc, child = leader(ignore_term=True)
    try:
        started = time.monotonic()
        assert stop_process_group(proc, timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - started >= 0.5
        assert wait_gone(child)
    finally:
        proc.stdout.close()


def test_several_groups_share_one_timeout():
    pairs = [leader(ignore_term=True) for _ in range(3)]
    try:
        started = time.monotonic()
        stop_process_groups([p for p, _ in pairs], timeout=1.0)
        assert time.monotonic() - started < 2.5  # one timeout for all, not one each
        assert [p.returncode for p, _ in pairs] == [-signal.SIGKILL] * 3
        assert all(wait_gone(child) for _, child in pairs)
    finally:
        for p, _ in pairs:
            p.stdout.close()


def test_sigkill_first_is_the_fault_tests_no_goodbye():
    proc, child = leader(ignore_term=True)
    try:
        assert stop_process_group(proc, timeout=10, sig=signal.SIGKILL) == -signal.SIGKILL
        assert wait_gone(child)
    finally:
        proc.stdout.close()


@pytest.mark.parametrize("reaped", [True, False])
def test_an_already_dead_process_is_fine(reaped):
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    if reaped:
        proc.wait(30)
    else:
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped
            time.sleep(0.01)
    assert stop_process_group(proc, timeout=1) == 0
    assert stop_process_group(proc, timeout=1) == 0  # twice is fine too


def test_a_process_without_a_group_of_its_own_is_still_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    assert stop_process_group(proc, timeout=10) == -signal.SIGTERM
