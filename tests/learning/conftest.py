"""Fixtures and markers of the federated-learning tests: shared data sets and TFF worker cleanup."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Registers the ``slow`` marker (deselect with ``-m "not slow"``)."""
    config.addinivalue_line("markers", "slow: takes more than about a minute on two CPU cores")


@pytest.fixture(scope="session", autouse=True)
def _stop_tff_workers() -> Iterator[None]:
    """Stops the TFF worker processes this session started, so none outlives the tests."""
    yield
    runtime = sys.modules.get("fedoracle.learning.runtime")
    if runtime is not None:
        runtime.stop_workers()
        assert not runtime.worker_processes()


@pytest.fixture(scope="session")
def mnist():  # noqa: ANN201 - returns fedoracle.learning.data.Dataset
    """The full MNIST data set (60k/10k), loaded once."""
    from fedoracle.learning.data import load_dataset

    return load_dataset("mnist")
