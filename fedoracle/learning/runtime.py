"""TensorFlow Federated's execution context for this process, and the cleanup of its worker processes.

TFF keeps its context stack per thread: a computation called from a thread that never installed a
context fails with "No default context installed". :func:`tff_runtime` creates one synchronous
local C++ context for the whole process and installs it in the calling thread, so computations
can be called from any thread (e.g. an oracle's worker pool); every call shares one worker.

TFF 0.87 runs computations in a C++ ``worker_binary`` child process that it never stops: the
child outlives the interpreter and keeps inherited pipes open (a script piped into another
command then hangs). :func:`tff_runtime` registers :func:`stop_workers` to run at interpreter
exit, and makes TFF start its worker under :mod:`fedoracle.learning.worker_guard`, which ends the
worker when this process dies without running any exit hook (SIGKILL).

TFF's ``ServiceManager.__del__`` (run at exit) does ``os.kill(process.pid, SIGINT)`` on the worker
it started, unconditionally, guarded only by ``isinstance(process, subprocess.Popen)``: once
:func:`stop_workers` (or anyone else, e.g. :func:`fedoracle.procs.stop_children`) has stopped and
reaped that process, the kill raises ``ProcessLookupError`` and Python prints an "Exception
ignored" traceback. The ``Popen`` TFF's factory sees answers that ``isinstance`` with ``False``
once the guard's process has ended, so ``__del__`` skips it.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import GenericAlias, ModuleType
from typing import Any

import psutil

WORKER_NAME = "worker_binary"
GUARD = str(Path(__file__).with_name("worker_guard.py"))

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
            _guard_worker_starts()
            _context = tff.backends.native.create_sync_local_cpp_execution_context()
            _generation += 1
        if not _hook_registered:
            atexit.register(stop_workers)
            _hook_registered = True
        if getattr(_thread, "generation", None) != _generation:
            tff.framework.set_default_context(_context)
            _thread.generation = _generation
    return tff


class GuardedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` of a command run under :mod:`fedoracle.learning.worker_guard`, tied to this process."""

    def __init__(self, args: list[str], *rest: Any, **kwargs: Any) -> None:
        super().__init__([sys.executable, "-I", "-S", GUARD, str(os.getpid()), *args], *rest, **kwargs)


class _EndedIsNotAProcess(type):
    """``isinstance(p, _PopenAsTFFSeesIt)``: ``p`` is a :class:`GuardedPopen` whose process has not ended."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, GuardedPopen) and obj.poll() is None


class _PopenAsTFFSeesIt(metaclass=_EndedIsNotAProcess):
    """``subprocess.Popen`` in TFF's executor factory: makes a :class:`GuardedPopen`, and is what ``__del__`` asks.

    A class of its own, not :class:`GuardedPopen` itself: ``isinstance`` answers ``True`` for an
    object of exactly the class asked about without consulting ``__instancecheck__``.
    """

    __class_getitem__: Any = classmethod(GenericAlias)  # TFF annotates ``-> subprocess.Popen[bytes]``

    def __new__(cls, *args: Any, **kwargs: Any) -> GuardedPopen:  # type: ignore[misc]
        return GuardedPopen(*args, **kwargs)


class _GuardedSubprocess(ModuleType):
    """``subprocess`` as TFF's executor factory sees it: every attribute its own, but ``Popen`` guarded."""

    Popen = _PopenAsTFFSeesIt

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def _guard_worker_starts() -> None:
    """Makes TFF's local C++ executor factory start ``worker_binary`` through :class:`GuardedPopen`."""
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if not isinstance(executor_factory.subprocess, _GuardedSubprocess):
        executor_factory.subprocess = _GuardedSubprocess("subprocess")


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
    """Kills this process's TFF workers, waits for them and their guards; returns how many workers were stopped.

    Only descendants of the current process whose name is ``worker_binary`` are killed; their
    guards (:mod:`fedoracle.learning.worker_guard`) exit with them and are reaped here, so nothing
    of them is left when this returns. The shared context is dropped, so a later
    :func:`tff_runtime` starts afresh.
    """
    global _context
    with _lock:
        workers = worker_processes()
        guards = _guard_processes()
        for proc in workers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(workers + guards, timeout=timeout)
        _context = None
    return len(workers)


def _guard_processes() -> list[psutil.Process]:
    """This process's children that run :mod:`fedoracle.learning.worker_guard`."""
    found = []
    for child in psutil.Process().children():
        try:
            if GUARD in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found
