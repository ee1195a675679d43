"""One source of defaults: every command that shares a protocol parameter shows the same default.

``fedoracle devices run`` with no flags is a device of ``fedoracle demo``; ``fedoracle oracle run``
is its oracle; ``fedoracle task publish`` publishes its task. Compared on what a user sees: the
options' defaults as ``--help`` prints them, and the config objects the commands build.
"""

from __future__ import annotations

import re
from itertools import combinations

import click
import pytest
from click.testing import CliRunner

from fedoracle.cli import main
from fedoracle.defaults import DEFAULTS

COMMANDS = {
    "demo": ["demo"],
    "devices run": ["devices", "run"],
    "task publish": ["task", "publish"],
    "oracle run": ["oracle", "run"],
}
PROTOCOL = {
    "--dataset",
    "--model",
    "--rounds",
    "--threshold",
    "--threshold-margin",
    "--epsilon",
    "--delta",
    "--clip",
    "--malicious",
    "--unreliable",
    "--flip-rate",
    "--emd",
    "--samples-per-device",
    "--epochs",
    "--batch-size",
    "--lr",
    "--optimizer",
    "--dp-scaling",
    "--seed",
    "--aggregation",
    "--trim-fraction",
    "--krum-f",
    "--krum-m",
    "--loss-margin-bp",
    "--claim-window",
    "--data-path",
}


def command(path: list[str]) -> click.Command:
    ctx = click.Context(main)
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, name)
    return cmd


def shown_defaults(path: list[str]) -> dict[str, str]:
    """``{--flag: the default its --help entry shows}`` (``""`` when it shows none)."""
    out = CliRunner().invoke(main, [*path, "--help"]).output
    entries: dict[str, str] = {}
    flag = None
    for line in out.splitlines():  # an option's entry runs until the next option's line
        m = re.match(r"\s{1,4}(?:-\w, )?(--[\w-]+)", line)
        if m:
            flag = m.group(1)
            entries[flag] = line
        elif flag and line.strip():
            entries[flag] += " " + line.strip()
    shown = {}
    for flag, text in entries.items():
        d = re.search(r"\[default:\s+([^;\]]*)", text)
        shown[flag] = d.group(1).strip() if d else ""
    return shown


@pytest.mark.parametrize(("a", "b"), list(combinations(COMMANDS, 2)))
def test_shared_protocol_options_show_the_same_default(a, b):
    left, right = shown_defaults(COMMANDS[a]), shown_defaults(COMMANDS[b])
    shared = set(left) & set(right) & PROTOCOL
    assert {k: left[k] for k in shared} == {k: right[k] for k in shared}


def test_demo_and_fleet_share_every_training_parameter():
    demo, fleet = shown_defaults(COMMANDS["demo"]), shown_defaults(COMMANDS["devices run"])
    training = {
        "--dataset",
        "--malicious",
        "--unreliable",
        "--flip-rate",
        "--emd",
        "--samples-per-device",
        "--epochs",
        "--batch-size",
        "--lr",
        "--data-path",
    }
    assert training <= set(demo) & set(fleet)
    assert fleet["--flip-rate"] == str(DEFAULTS.flip_rate) and fleet["--lr"] == str(DEFAULTS.learning_rate)


@pytest.mark.parametrize("path", list(COMMANDS.values()))
def test_every_protocol_option_names_its_variable(path):
    for param in command(path).params:
        if isinstance(param, click.Option) and param.opts[0] in PROTOCOL:
            assert param.envvar and f"[env {param.envvar}]" in (param.help or ""), param.opts


def test_a_device_of_devices_run_is_a_device_of_the_demo():
    """The config objects behind the flags: a fleet with no flags trains as the demo's devices do."""
    from demo.run import DemoConfig
    from devices.client import TrainingConfig
    from devices.fleet import FleetConfig
    from experiments.config import RunConfig
    from publisher.publish import TaskPlan

    demo, fleet, training, plan = DemoConfig(), FleetConfig(), TrainingConfig(), TaskPlan()
    assert (fleet.count, fleet.malicious, fleet.unreliable, fleet.flip_rate, fleet.emd) == (
        demo.count,
        demo.malicious,
        demo.unreliable,
        demo.flip_rate,
        demo.emd,
    )
    assert (training.epochs, training.batch_size, training.learning_rate) == (
        demo.epochs,
        demo.batch_size,
        demo.learning_rate,
    )
    assert (plan.epsilon, plan.delta, plan.clip, plan.rounds, plan.initial_threshold) == (
        demo.epsilon,
        demo.delta,
        demo.clip,
        demo.rounds,
        DEFAULTS.threshold(demo.dataset),
    )
    run = RunConfig()
    assert (run.epochs, run.learning_rate, run.clip, run.threshold_margin, run.initial_threshold) == (
        demo.epochs,
        demo.learning_rate,
        demo.clip,
        demo.threshold_margin,
        plan.initial_threshold,
    )
