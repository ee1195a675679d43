"""Runs TFF's ``worker_binary`` as its child and ends it when the process that started the guard dies.

TFF 0.87 starts its C++ ``worker_binary`` with a bare ``subprocess.Popen`` and stops it only from a
``__del__`` (``executor_factory.local_cpp_executor_factory``): a process killed with SIGKILL (or
that dies any other way without running finalizers) leaves the worker running for good.
:mod:`fedoracle.learning.runtime` therefore starts every worker through this script::

    python -I -S worker_guard.py PARENT_PID WORKER_BINARY [ARGS...]

The guard starts the worker, passes SIGINT/SIGTERM/SIGHUP on to it, exits with its exit code, and
every 0.2 s checks that ``PARENT_PID`` is still its parent; once it is not (the parent died and the
guard was re-parented), it SIGKILLs the worker and exits. The worker also gets
``PR_SET_PDEATHSIG(SIGKILL)``, so it dies with the guard if the guard itself is killed. (That
signal alone is not enough in the parent: Linux sends it when the *thread* that started the child
ends, and TFF starts its worker from whichever thread first runs a computation, e.g. a pool thread.)

Standard library only, run isolated (``-I -S``): it starts in milliseconds and needs nothing of the
project's environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
POLL_S = 0.2


def _die_with_the_guard() -> None:  # pragma: no cover - runs in the forked child, before exec
    """In the worker, before exec: SIGKILL when the guard (this single-threaded parent) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: list[str]) -> int:
    """Runs the worker ``argv[1:]`` until it exits or process ``argv[0]`` stops being the guard's parent."""
    parent, command = int(argv[0]), argv[1:]
    worker = subprocess.Popen(command, preexec_fn=_die_with_the_guard)  # the guard has no threads: preexec_fn is safe

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            worker.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            code = worker.wait(POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() == parent:
                continue
            worker.kill()  # the parent is gone: nobody will ever stop this worker
            worker.wait()
            return 1
        return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
