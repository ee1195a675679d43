"""``fedoracle demo``: one whole secure-FL task on this machine.

Every protocol parameter is the shared option of :mod:`fedoracle.options`, so its default is the one
``fedoracle task publish``, ``fedoracle devices run`` and ``fedoracle oracle run`` show.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from fedoracle.defaults import DEFAULTS
from fedoracle.options import (
    batch_size_option,
    clip_option,
    data_path_option,
    dataset_option,
    delta_option,
    dp_scaling_option,
    emd_option,
    epochs_option,
    epsilon_option,
    flip_rate_option,
    learning_rate_option,
    malicious_option,
    model_option,
    optimizer_option,
    rounds_option,
    samples_per_device_option,
    threshold_margin_option,
    threshold_option,
    unreliable_option,
)


@click.command()
@dataset_option
@data_path_option
@model_option
@click.option(
    "--devices",
    "count",
    default=DEFAULTS.devices,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of devices P.",
)
@rounds_option
@malicious_option
@unreliable_option
@flip_rate_option
@emd_option
@epsilon_option
@delta_option
@clip_option
@threshold_option
@threshold_margin_option
@samples_per_device_option
@epochs_option
@batch_size_option
@learning_rate_option
@optimizer_option
@dp_scaling_option
@click.option("--out", default="runs", show_default=True, help="Folder for the run's report and plots.")
@click.option(
    "--timeout", default=900, show_default=True, type=click.IntRange(min=1), help="Give up after this many seconds."
)
def demo(**options: Any) -> None:
    """Run a whole secure-FL task on one machine: anvil, broker, oracle, device fleet, report."""
    from demo.run import DemoConfig, run_demo

    config = DemoConfig(**options)
    config.check_privacy_mode(config.dp)
    sys.exit(run_demo(config))
