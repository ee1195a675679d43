"""Stopping child processes: one process group (or several at once), and every child a run started.

:func:`stop_process_group` is how a process started in its own session (``start_new_session=True``)
is stopped: the demo's services and role processes, and the tests' role subprocesses.
:func:`stop_children` is the last sweep the demo and the test session make at exit, whatever
started the children (``fedoracle.learning.runtime`` stops TFF's ``worker_binary`` itself).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)


def stop_process_group(proc: subprocess.Popen[Any], timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
    """Stops the process group that ``proc`` leads: ``sig``, then SIGKILL after ``timeout``; reaps ``proc``.

    A process (or group) that is already gone is fine. See :func:`stop_process_groups`.

    Returns:
        ``proc``'s exit code (negative: the signal that ended it), ``None`` if it could not be reaped.
    """
    stop_process_groups([proc], timeout, sig)
    return proc.returncode


def stop_process_groups(
    procs: Iterable[subprocess.Popen[Any]], timeout: float = 5.0, sig: int = signal.SIGTERM
) -> None:
    """Stops the process groups that ``procs`` lead, all at once and within one ``timeout``.

    Each group gets ``sig`` (also one whose leader has exited: its children may not have); the leaders
    get ``timeout`` seconds, together, to exit; then every group that still has a member (a child that
    ignores ``sig``, a leader that hangs) gets SIGKILL, and the leaders are reaped.

    Args:
        procs: processes started with ``start_new_session=True`` (each leads its own group).
        timeout: seconds to wait after ``sig`` before SIGKILL.
        sig: the first signal (SIGKILL for a fault test's "no goodbye").
    """
    procs = list(procs)
    for p in procs:
        _signal_group(p, sig)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _signal_group(p, signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("process %d outlived SIGKILL by %.1fs", p.pid, timeout)


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
        return
    except (ProcessLookupError, PermissionError):  # gone (or, its id reused, not ours)
        pass
    if proc.poll() is None:  # alive but leads no group (not started in a session of its own)
        proc.send_signal(sig)


def stop_children(names: tuple[str, ...] | None = None, timeout: float = 3.0) -> list[str]:
    """Terminates (then kills) descendants of this process; returns what was stopped.

    Args:
        names: only processes with these names (``None``: every descendant).
        timeout: seconds to wait after SIGTERM before SIGKILL.
    """
    import psutil

    procs = [p for p in psutil.Process().children(recursive=True) if names is None or _name(p) in names]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return [f"{p.pid}" for p in procs]


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except Exception:
        return ""
