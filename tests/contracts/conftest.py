"""Fixtures for the FLTaskRegistry suite: accounts by role, a deployed registry, a published task."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `ape test` runs from .venv/bin, where the (non-editable) project is not importable: make the
# checkout's own `fedoracle` package importable for fltask_harness.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from fltask_harness import Params, TaskDriver, make_testset  # noqa: E402


@pytest.fixture(scope="session")
def deployer(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def publisher(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def oracle(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def stranger(accounts):
    return accounts[3]


@pytest.fixture(scope="session")
def devices(accounts):
    return [accounts[i] for i in range(4, 10)]


@pytest.fixture(scope="session")
def payees(accounts):
    return [accounts[i] for i in range(10, 16)]


@pytest.fixture(scope="session")
def registry(project, deployer):
    return deployer.deploy(project.FLTaskRegistry)


@pytest.fixture(scope="session")
def testset():
    return make_testset(num_groups=6, groups_per_round=2)


@pytest.fixture
def params(oracle, testset):
    return Params.for_testset(oracle, testset)


REWARD = 3 * 10**18


@pytest.fixture
def reward():
    return REWARD


@pytest.fixture
def publish(registry, chain, publisher, oracle, testset):
    """A function that publishes a task and returns ``(TaskDriver, receipt)``.

    Call it as ``publish(value=..., sender=..., ts=..., **param_overrides)``.
    """

    def _publish(value=REWARD, sender=None, ts=None, **overrides):
        ts = ts or testset
        p = Params.for_testset(oracle, ts, **overrides)
        receipt = registry.publish(p.as_tuple(), value=value, sender=sender or publisher)
        task_id = registry.taskCount()
        return TaskDriver(registry, chain, sender or publisher, oracle, ts, task_id), receipt

    return _publish


@pytest.fixture
def task(publish):
    """A published 3-round task (6 groups, 2 per round), round 1 open."""
    driver, _ = publish()
    return driver
