"""``fedoracle oracle``: run the oracle daemon, or show what it has done."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from fedoracle.cli import blobs_option, key_option, registry_option, rpc_option


@click.group()
def cli() -> None:
    """The oracle: scores submissions, posts verdicts, aggregates, finalizes."""


@cli.command()
@rpc_option
@registry_option
@key_option
@blobs_option
@click.option("--vault", envvar="FEDORACLE_VAULT", default=".fedoracle/vault", show_default=True,
              help="Folder of hidden test sets handed over by publishers.")
@click.option("--state-dir", envvar="FEDORACLE_STATE_DIR", default=".fedoracle", show_default=True,
              help="Where the checkpoint (sqlite) lives.")
@click.option("--confirmations", envvar="FEDORACLE_CONFIRMATIONS", default=0, show_default=True,
              help="Blocks to wait before acting on an event.")
@click.option("--workers", envvar="FEDORACLE_WORKERS", default=2, show_default=True, help="Concurrent evaluations.")
@click.option("--aggregation", default="fedavg", show_default=True,
              type=click.Choice(["fedavg", "median", "trimmed_mean"]))
@click.option("--from-block", default=0, show_default=True, help="First block when there is no checkpoint.")
@click.option("--poll-interval", default=0.2, show_default=True)
@click.option("--threshold-margin", default=None, type=float,
              help="Dynamic threshold: raise each round's threshold to the last global accuracy minus this.")
def run(rpc_url, registry, key, blob_store, vault, state_dir, confirmations, workers, aggregation, from_block,
        poll_interval, threshold_margin) -> None:
    """Run the oracle daemon until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    from fedoracle.blobstore import open_store
    from fedoracle.chain import Chain, load_account
    from oracle.daemon import Oracle, OracleConfig
    from oracle.pool import InProcessPool
    from oracle.scoring import Scorer

    async def main() -> None:
        blobs = open_store(blob_store)
        config = OracleConfig(vault=Path(vault), state_dir=Path(state_dir), confirmations=confirmations,
                              poll_interval=poll_interval, aggregation=aggregation, from_block=from_block,
                              threshold_margin=threshold_margin)
        pool = InProcessPool(Scorer(blobs, vault), workers=workers)
        oracle = Oracle(Chain(rpc_url, load_account(key)), registry, blobs, pool, config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, oracle.stopped.set)
        try:
            await oracle.run()
        finally:
            await oracle.close()

    asyncio.run(main())


@cli.command()
@click.option("--state-dir", envvar="FEDORACLE_STATE_DIR", default=".fedoracle", show_default=True)
@registry_option
def log(state_dir: str, registry: str) -> None:
    """Show the transactions this oracle sent (from its checkpoint)."""
    from rich.console import Console
    from rich.table import Table

    from oracle.store import Checkpoint

    cp = Checkpoint(Path(state_dir) / f"oracle-{registry.lower()}.sqlite")
    table = Table("task", "round", "action", "subject", "tx", "gas")
    for row in cp.actions():
        table.add_row(*(str(c)[:18] for c in row))
    Console().print(f"next block {cp.next_block}, {cp.applied_count()} events applied")
    Console().print(table)
