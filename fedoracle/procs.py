"""Stopping every child process a run started, whatever started it.

The services module stops anvil and the broker, and ``fedoracle.learning.runtime`` stops TFF's
``worker_binary``; this is the last sweep the demo and the test session make at exit.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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


def _name(p) -> str:
    try:
        return p.name()
    except Exception:  # noqa: BLE001 - gone or inaccessible
        return ""
