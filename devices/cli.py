"""``fedoracle devices``: run a fleet of devices (or one) against any chain, broker and blob store."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import click

from fedoracle import aio
from fedoracle.defaults import DEFAULTS
from fedoracle.learning.attacks import CRAFTED
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

ATTACK_KINDS = ("label_flip", *CRAFTED)  # what a fleet's malicious devices can do (FleetConfig.attack)


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
    "--attack",
    type=click.Choice(ATTACK_KINDS),
    default="label_flip",
    show_default=True,
    help="What the malicious devices do: flip labels (λ = --flip-rate), or craft updates together "
    "(Fang et al.'s fang_krum / fang_trmean, Shejwalkar & Houmansadr's min_max / min_sum).",
)
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
    training.check_privacy_mode(training.dp)
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


@cli.command()
@rpc_option
@registry_option
@click.argument("task_id", type=click.IntRange(min=1))
@click.option(
    "--key",
    envvar="FEDORACLE_KEY",
    default=None,
    help="One device's key: 0x<hex>, dev:<n>, file:<path> or env:<VAR> [env FEDORACLE_KEY] "
    "[default: the fleet of --key-seed, --first-index, --count].",
)
@click.option(
    "--key-seed",
    envvar="FEDORACLE_KEY_SEED",
    default=DEFAULTS.key_seed,
    show_default=True,
    help="Seed the fleet's keys are derived from, as for devices run [env FEDORACLE_KEY_SEED].",
)
@click.option(
    "--count",
    envvar="FEDORACLE_COUNT",
    default=DEFAULTS.devices,
    show_default=True,
    type=click.IntRange(min=1),
    help="Devices of the fleet, as for devices run [env FEDORACLE_COUNT].",
)
@click.option(
    "--first-index",
    envvar="FEDORACLE_FIRST_INDEX",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Index of the fleet's first device, as for devices run [env FEDORACLE_FIRST_INDEX].",
)
@click.option(
    "--round",
    "rounds",
    multiple=True,
    type=click.IntRange(min=1),
    help="Claim only this round (repeatable), even if nothing looks claimable, to see why "
    "[default: every settled round with something to claim].",
)
@click.option(
    "--sender",
    envvar="FEDORACLE_SENDER",
    default=None,
    help="Key of an account that sends (and pays the gas of) every claim; rewards still go to each "
    "device's payee [env FEDORACLE_SENDER] [default: each device sends its own].",
)
def claim(
    rpc_url: str,
    registry: str,
    task_id: int,
    key: str | None,
    key_seed: str,
    count: int,
    first_index: int,
    rounds: tuple[int, ...],
    sender: str | None,
) -> None:
    """Claim a task's rewards for one device (--key) or a fleet: one line per round paid, or why not.

    Exits 1 when nothing at all was paid.
    """
    from eth_account import Account

    from devices.claims import Claimed, claim_fleet
    from devices.fleet import device_key
    from fedoracle.chain import load_account

    if key is not None:
        named = [(f"device {load_account(key).address}", load_account(key))]
    else:
        named = [
            (f"device-{i}", Account.from_key(device_key(key_seed, i))) for i in range(first_index, first_index + count)
        ]
    names: dict[str, str] = {account.address: name for name, account in named}
    accounts = [account for _, account in named]
    signer = load_account(sender) if sender else None
    results = aio.run(claim_fleet(rpc_url, registry, task_id, accounts, signer, list(rounds) or None))
    paid = 0
    for res in results:
        who = names[res.device]
        if isinstance(res, Claimed):
            paid += res.amount_wei
            click.echo(
                f"{who}: round {res.round}: paid {res.amount_wei} wei ({res.amount_wei / 1e18:.6f} ETH) to {res.payee}"
            )
        else:
            click.echo(f"{who}: round {res.round}: nothing paid: {res.why}")
    if not paid:
        raise click.ClickException(f"nothing was paid for task {task_id}")
    click.echo(f"task {task_id}: {sum(isinstance(r, Claimed) for r in results)} claims, {paid} wei in all")
