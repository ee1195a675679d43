"""TFF runtime: computations work from any thread, and no worker_binary outlives its process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import psutil

from fedoracle.learning.aggregation import aggregate
from fedoracle.learning.runtime import stop_workers, tff_runtime, worker_processes

_CHILD = """
import json, numpy as np
from fedoracle.learning.aggregation import aggregate
from fedoracle.learning.runtime import worker_processes
aggregate([[np.ones(3, np.float32)]] * 2)
print(json.dumps([p.pid for p in worker_processes()]), flush=True)
"""


def test_workers_are_stopped_at_interpreter_exit() -> None:
    """A script that ran a TFF computation exits with its pipes closed and leaves no worker behind."""
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=True)
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert pids, "the computation should have started a worker"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_computations_run_from_fresh_threads() -> None:
    """A thread that never set a TFF context can still call a computation."""
    results: list[list[np.ndarray]] = []
    thread = threading.Thread(target=lambda: results.append(aggregate([[np.full(2, 3.0, np.float32)]] * 3)))
    thread.start()
    thread.join()
    np.testing.assert_allclose(results[0][0], [3.0, 3.0])


def test_stop_workers_then_run_again() -> None:
    """After stopping the workers a new computation call starts a fresh one."""
    tff_runtime()
    aggregate([[np.ones(2, np.float32)]])
    assert stop_workers() >= 1
    assert not worker_processes()
    np.testing.assert_allclose(aggregate([[np.ones(2, np.float32)]] * 2)[0], [1.0, 1.0])
    assert worker_processes()


_KILLED_CHILD = """
import json, numpy as np
from fedoracle.learning.aggregation import aggregate
from fedoracle.learning.runtime import worker_processes
aggregate([[np.ones(3, np.float32)]] * 2)
print(json.dumps([p.pid for p in worker_processes()]), flush=True)
import time
time.sleep(600)
"""


def test_a_worker_dies_with_the_process_that_started_it() -> None:
    """SIGKILL of a process that ran a TFF computation (no atexit, no goodbye): its worker_binary exits too.

    The worker is started in a thread that has ended by then, as the oracle's evaluation pool does.
    """
    code = _KILLED_CHILD.replace(
        "aggregate([[np.ones(3, np.float32)]] * 2)",
        "import threading\n"
        "t = threading.Thread(target=aggregate, args=([[np.ones(3, np.float32)]] * 2,))\n"
        "t.start(); t.join()",
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert pids, "the computation should have started a worker"
        workers = [psutil.Process(pid) for pid in pids]
    finally:
        proc.kill()
        proc.wait(60)
    gone, alive = psutil.wait_procs(workers, timeout=20)
    for p in alive:  # clean up before failing: the test must not leave the worker it is about
        p.kill()
    assert alive == [], f"worker_binary outlived its SIGKILLed parent: {[p.pid for p in alive]}"


_STOP_THEN_EXIT = """
import numpy as np
from fedoracle.learning.aggregation import aggregate
from fedoracle.learning.runtime import stop_workers
aggregate([[np.ones(3, np.float32)]] * 2)
stop_workers()  # as the oracle's shutdown does; TFF's ServiceManager.__del__ runs later, at exit
aggregate([[np.ones(3, np.float32)]] * 2)
from fedoracle.procs import stop_children
stop_children()  # the demo's (and the test session's) sweep: kills and reaps every child, the worker's too
stop_workers()
aggregate([[np.ones(3, np.float32)]] * 2)  # a fresh context: the old one (and its ServiceManager) is dropped
"""


def test_exit_after_stopped_workers_prints_no_traceback() -> None:
    """TFF's ``ServiceManager.__del__`` must not raise ProcessLookupError for a worker already stopped."""
    done = subprocess.run([sys.executable, "-c", _STOP_THEN_EXIT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]
