"""Stopping the child processes a run leaves behind (TFF's ``worker_binary`` above all).

TensorFlow Federated's local runtime starts a ``worker_binary`` child that is not stopped at
exit and keeps inherited pipes open (a piped script then hangs). Everything that starts TFF
registers :func:`stop_children` at exit; the services module stops anvil and the broker.
"""

from __future__ import annotations

import atexit
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


def stop_tff_workers() -> None:
    """Stops TFF's ``worker_binary`` children of this process."""
    stopped = stop_children(("worker_binary",))
    if stopped:
        log.debug("stopped %d TFF worker(s)", len(stopped))


def register_tff_cleanup() -> None:
    """Registers :func:`stop_tff_workers` to run at interpreter exit (idempotent)."""
    if not getattr(register_tff_cleanup, "_done", False):
        atexit.register(stop_tff_workers)
        register_tff_cleanup._done = True  # type: ignore[attr-defined]
