"""Fixtures of the experiment-harness tests: MNIST loaded once, TFF workers stopped at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


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
    """MNIST as the harness loads it (cached per process)."""
    from fedoracle.experiments.simulate import dataset

    return dataset("mnist")
