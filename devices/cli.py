"""``fedoracle devices``: run a fleet of devices (or one) against any chain, broker and blob store."""

from __future__ import annotations

import asyncio
import signal

import click

from fedoracle.options import blobs_option, broker_option, registry_option, rpc_option


@click.group()
def cli() -> None:
    """Device clients: train locally with DP, submit, claim."""


@cli.command()
@rpc_option
@registry_option
@broker_option
@blobs_option
@click.option("--count", default=10, show_default=True, help="Devices in this process (P).")
@click.option("--first-index", default=0, show_default=True, help="Index of the first device (for multi-host fleets).")
@click.option("--fleet-size", default=None, type=int,
              help="Devices in the whole fleet when this process runs a slice of it (kinds and shards are drawn "
                   "for the whole fleet) [default: first-index + count].")
@click.option("--task", "tasks", multiple=True, type=int,
              help="Join only this task id (repeatable) [default: every task on the registry].")
@click.option("--train-workers", default=1, show_default=True, help="Threads training in parallel.")
@click.option("--malicious", default=0.2, show_default=True, help="Share of label-flipping devices.")
@click.option("--unreliable", default=0.2, show_default=True, help="Share of devices with skewed data.")
@click.option("--flip-rate", default=0.2, show_default=True, help="λ: share of labels a malicious device flips.")
@click.option("--emd", default=1.5, show_default=True, help="EMD of unreliable devices' label distribution.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(["mnist", "fashion_mnist", "cifar10"]))
@click.option("--data-path", default=None, help="CIFAR-10 archive path.")
@click.option("--samples-per-device", default=None, type=int)
@click.option("--epochs", default=1, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", "learning_rate", default=1e-4, show_default=True)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]))
@click.option("--no-dp", is_flag=True, help="Submit without clipping and noise (non-DP baseline).")
@click.option("--dp-scaling", default="sample", show_default=True, type=click.Choice(["sample", "update"]),
              help="Noise sensitivity: 'sample' = S/D (the paper's ÷D), 'update' = S (whole update; much more noise).")
@click.option("--pre-evaluate", is_flag=True, help="Skip submitting when local accuracy is below the threshold.")
@click.option("--key-seed", envvar="FEDORACLE_KEY_SEED", default="fedoracle-fleet", show_default=True,
              help="Seed the devices' keys and payees are derived from.")
@click.option("--fund-from", envvar="FEDORACLE_FUND_FROM", default=None,
              help="Key of a faucet account that tops devices up with gas money (dev chains), e.g. dev:0.")
@click.option("--seed", default=0, show_default=True, help="Seeds data partitioning and training.")
@click.option("--status-file", default=None, help="Write the fleet's state (JSON) here.")
def run(rpc_url, registry, broker_url, blob_store, count, first_index, fleet_size, tasks, train_workers, malicious, unreliable, flip_rate, emd, dataset,
        data_path, samples_per_device, epochs, batch_size, learning_rate, optimizer, no_dp, dp_scaling, pre_evaluate, key_seed,
        fund_from, seed, status_file) -> None:
    """Run P devices in this process until interrupted."""
    from devices.client import TrainingConfig
    from devices.fleet import Fleet, FleetConfig, fund
    from fedoracle.blobstore import open_store

    config = FleetConfig(count=count, malicious=malicious, unreliable=unreliable, flip_rate=flip_rate, emd=emd,
                         dataset=dataset, data_path=data_path, samples_per_device=samples_per_device,
                         key_seed=key_seed, first_index=first_index, seed=seed, fleet_size=fleet_size,
                         tasks=list(tasks) or None, train_workers=train_workers,
                         training=TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                                 optimizer=optimizer, dp=not no_dp, dp_scaling=dp_scaling,
                                                 pre_evaluate=pre_evaluate))

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

    asyncio.run(main())
