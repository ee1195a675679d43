"""Fixtures of the oracle tests: their own anvil, a registry, MNIST and two trained updates.

The anvil has many dev accounts; the two really trained model updates are made once for the
whole package.
"""

from __future__ import annotations

import sys

import psutil
import pytest

from demo.services import Anvil
from fedoracle.chain import Chain, TaskRegistry, dev_account
from tests.conftest import run
from tests.oracle.kit import Models

ACCOUNTS = 80


@pytest.fixture(scope="package")
def node():
    """An anvil for the oracle tests only (other suites' tasks never name our oracles)."""
    with Anvil(accounts=ACCOUNTS) as a:
        yield a


@pytest.fixture(scope="package")
def reg(node) -> TaskRegistry:
    """A registry on :func:`node`, seen through the publisher (dev account 0)."""
    return run(TaskRegistry.deploy(Chain(node.rpc_url, dev_account(0))))


@pytest.fixture(scope="package")
def models(mnist) -> Models:
    """small_cnn for MNIST (blob limit: twice its size) plus two updates trained on 1,500 images each."""
    from fedoracle.codec import ModelSpec, encode
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.training import local_train

    base = model_spec("small_cnn", mnist.input_shape, mnist.num_classes)
    init = initial_weights(base, 0)
    spec = ModelSpec(**{**base.model_dump(), "max_bytes": 2 * len(encode(init, base))})
    trained = [
        local_train(
            spec,
            init,
            mnist.x_train[i * 1500 : (i + 1) * 1500],
            mnist.y_train[i * 1500 : (i + 1) * 1500],
            epochs=1,
            batch_size=64,
            learning_rate=2e-3,
            seed=i,
        )
        for i in range(2)
    ]
    return Models(spec, init, trained)


@pytest.fixture(scope="package", autouse=True)
def _no_leftovers():
    """Stops this process's TFF workers at the end, and checks that no oracle process survived."""
    yield
    runtime = sys.modules.get("fedoracle.learning.runtime")
    if runtime is not None:
        runtime.stop_workers()
    left = oracle_processes()
    for p in left:
        p.kill()
    assert not left, f"left behind: {left}"


def oracle_processes() -> list[psutil.Process]:
    """Live ``fedoracle oracle run`` processes started by this test process, and their TFF workers."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name() == "worker_binary" or "oracle" in p.cmdline()[3:5]:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, IndexError):
            continue
    return found
