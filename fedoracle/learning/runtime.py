"""TensorFlow Federated's execution context for this process, and the cleanup of its worker processes.

TFF keeps its context stack per thread: a computation called from a thread that never installed a
context fails with "No default context installed". :func:`tff_runtime` creates one synchronous
local C++ context for the whole process and installs it in the calling thread, so computations
can be called from any thread (e.g. an oracle's worker pool); every call shares one worker.

TFF 0.87 runs computations in a C++ ``worker_binary`` child process that it never stops: the
child outlives the interpreter and keeps inherited pipes open (a script piped into another
command then hangs). :func:`tff_runtime` registers :func:`stop_workers` to run at interpreter
exit.
"""

from __future__ import annotations

import atexit
import threading
from types import ModuleType
from typing import Any

import psutil

WORKER_NAME = "worker_binary"

_lock = threading.Lock()
_thread = threading.local()
_context: Any = None
_generation = 0
_hook_registered = False


def tff_runtime() -> ModuleType:
    """Imports TFF, makes sure this thread runs computations in the shared context, and returns TFF.

    Cheap after the first call in a thread; call it before invoking a computation. After
    :func:`stop_workers` the next call creates a fresh context (TFF then starts a new worker on
    first use).
    """
    global _context, _generation, _hook_registered
    import tensorflow_federated as tff

    with _lock:
        if _context is None:
            _context = tff.backends.native.create_sync_local_cpp_execution_context()
            _generation += 1
        if not _hook_registered:
            atexit.register(stop_workers)
            _hook_registered = True
        if getattr(_thread, "generation", None) != _generation:
            tff.framework.set_default_context(_context)
            _thread.generation = _generation
    return tff


def worker_processes() -> list[psutil.Process]:
    """The ``worker_binary`` processes that descend from this process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == WORKER_NAME:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def stop_workers(timeout: float = 5.0) -> int:
    """Kills this process's TFF workers and waits for them; returns how many were stopped.

    Only descendants of the current process whose name is ``worker_binary`` are touched. The
    shared context is dropped, so a later :func:`tff_runtime` starts afresh.
    """
    global _context
    with _lock:
        workers = worker_processes()
        for proc in workers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(workers, timeout=timeout)
        _context = None
    return len(workers)
