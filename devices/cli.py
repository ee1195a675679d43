"""``fedoracle devices``: run a fleet of devices (or one) against any chain, broker and blob store."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import click

from fedoracle import aio
from fedoracle.defaults import DEFAULTS
from fedoracle.options import (
    batch_size_option,
    blobs_option,
    broker_option,
    data_path_option,
    dataset_option,
    dp_scaling_option,
    emd_option,
    epochs_option,
    fleet_seed_option,
    flip_rate_option,
    learning_rate_option,
    malicious_option,
    optimizer_option,
    registry_option,
    rpc_option,
    samples_per_device_option,
    unreliable_option,
)


@click.group()
def cli() -> None:
    """Device clients: train locally with DP, submit, claim."""


@cli.command()
@rpc_option
@registry_option
@broker_option
@blobs_option
@click.option(
    "--count",
    default=DEFAULTS.devices,
    show_default=True,
    type=click.IntRange(min=1),
    help="Devices in this process (P).",
)
@click.option(
    "--first-index",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Index of the first device (for multi-host fleets).",
)
@click.option(
    "--fleet-size",
    default=None,
    type=int,
    help="Devices in the whole fleet when this process runs a slice of it (kinds and shards are drawn "
    "for the whole fleet) [default: first-index + count].",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    type=int,
    help="Join only this task id (repeatable) [default: every task on the registry].",
)
@click.option(
    "--train-workers", default=1, show_default=True, type=click.IntRange(min=1), help="Threads training in parallel."
)
@malicious_option
@unreliable_option
@flip_rate_option
@emd_option
@dataset_option
@data_path_option
@samples_per_device_option
@epochs_option
@batch_size_option
@learning_rate_option
@optimizer_option
@click.option("--no-dp", is_flag=True, help="Submit without clipping and noise (non-DP baseline).")
@dp_scaling_option
@click.option("--pre-evaluate", is_flag=True, help="Skip submitting when local accuracy is below the threshold.")
@click.option(
    "--key-seed",
    envvar="FEDORACLE_KEY_SEED",
    default=DEFAULTS.key_seed,
    show_default=True,
    help="Seed the devices' keys and payees are derived from.",
)
@click.option(
    "--fund-from",
    envvar="FEDORACLE_FUND_FROM",
    default=None,
    help="Key of a faucet account that tops devices up with gas money (dev chains), e.g. dev:0.",
)
@fleet_seed_option
@click.option("--status-file", default=None, help="Write the fleet's state (JSON) here.")
def run(
    rpc_url: str,
    registry: str,
    broker_url: str,
    blob_store: str,
    tasks: tuple[int, ...],
    no_dp: bool,
    fund_from: str | None,
    status_file: str | None,
    **options: Any,
) -> None:
    """Run P devices in this process until interrupted (progress: one log line per device and event)."""
    from devices.client import TrainingConfig
    from devices.fleet import Fleet, FleetConfig, fund
    from fedoracle.blobstore import open_store
    from fedoracle.defaults import fields_of
    from fedoracle.errors import ConfigError

    devices_log = logging.getLogger("devices")
    if devices_log.getEffectiveLevel() > logging.INFO:  # progress at the default level; -vv still shows debug
        devices_log.setLevel(logging.INFO)
    training_options, fleet_options = fields_of(TrainingConfig, options), fields_of(FleetConfig, options)
    training = TrainingConfig(**training_options, dp=not no_dp)
    config = FleetConfig(**fleet_options, tasks=list(tasks) or None, training=training)
    unused = set(options) - set(training_options) - set(fleet_options)
    if unused:  # an option added to the command but to no config: caught by the CLI tests
        raise ConfigError(f"devices run: options no config takes: {sorted(unused)}")

    async def main() -> None:
        fleet = Fleet(config, rpc_url, registry, open_store(blob_store), broker_url, status_file=status_file)
        fleet.build()
        if fund_from:
            await fund(rpc_url, fund_from, [d.address for d in fleet.devices], 10**18)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await fleet.run(stop)

    aio.run(main())

