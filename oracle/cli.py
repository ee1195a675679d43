"""``fedoracle oracle``: run the oracle daemon, or show what it has done."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from fedoracle import aio
from fedoracle.options import (
    F,
    blobs_option,
    key_option,
    registry_option,
    rpc_option,
    threshold_margin_option,
)

if TYPE_CHECKING:
    from oracle.pool import EvaluationPool
    from oracle.store import Checkpoint


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def queue_option(f: F) -> F:
    """``--queue`` / ``FEDORACLE_QUEUE``: the Redis URL of the evaluation queue (in-process without it)."""
    return click.option(
        "--queue",
        envvar="FEDORACLE_QUEUE",
        default=None,
        help="Redis URL of the evaluation queue (redis://HOST:PORT/0); without it, in-process.",
    )(f)


@click.group()
def cli() -> None:
    """The oracle: scores submissions, posts verdicts, aggregates, finalizes."""


@cli.command()
@rpc_option
@registry_option
@key_option
@blobs_option
@click.option(
    "--vault",
    envvar="FEDORACLE_VAULT",
    default=".fedoracle/vault",
    show_default=True,
    help="Folder of hidden test sets handed over by publishers.",
)
@click.option(
    "--state-dir",
    envvar="FEDORACLE_STATE_DIR",
    default=".fedoracle",
    show_default=True,
    help="Where the checkpoint (sqlite) lives.",
)
@click.option(
    "--confirmations",
    envvar="FEDORACLE_CONFIRMATIONS",
    default=0,
    show_default=True,
    help="Blocks to wait before acting on an event.",
)
@click.option(
    "--workers",
    envvar="FEDORACLE_WORKERS",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Concurrent evaluations.",
)
@click.option("--from-block", default=0, show_default=True, help="First block when there is no checkpoint.")
@click.option(
    "--poll-interval",
    default=0.2,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Seconds between two polls of the chain.",
)
@threshold_margin_option
@click.option("--static-threshold", is_flag=True, help="Keep every round at the task's published threshold.")
@click.option(
    "--log-format",
    envvar="FEDORACLE_LOG_FORMAT",
    default="kv",
    show_default=True,
    type=click.Choice(["text", "kv", "json"]),
    help="Log lines: key=value pairs, JSON objects, or plain.",
)
@queue_option
@click.option(
    "--job-timeout",
    default=120.0,
    show_default=True,
    help="With --queue: seconds before a job without a result is sent again.",
)
def run(
    rpc_url: str,
    registry: str,
    key: str,
    blob_store: str,
    vault: str,
    state_dir: str,
    confirmations: int,
    workers: int,
    from_block: int,
    poll_interval: float,
    threshold_margin: float,
    static_threshold: bool,
    log_format: str,
    queue: str | None,
    job_timeout: float,
) -> None:
    """Run the oracle daemon until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    signal.signal(signal.SIGTERM, _exit_cleanly)  # until the event loop takes over (start-up is slow)
    from fedoracle.blobstore import open_store
    from fedoracle.chain import Chain, load_account
    from oracle.daemon import Oracle, OracleConfig
    from oracle.logs import configure
    from oracle.pool import InProcessPool
    from oracle.scoring import Scorer

    configure(log_format)

    async def main() -> None:
        blobs = open_store(blob_store)
        config = OracleConfig(
            vault=Path(vault),
            state_dir=Path(state_dir),
            confirmations=confirmations,
            poll_interval=poll_interval,
            from_block=from_block,
            threshold_margin=None if static_threshold else threshold_margin,
        )
        pool: EvaluationPool
        if queue:
            from oracle.queue import QueuePool

            pool = QueuePool(queue, job_timeout=job_timeout)
        else:
            pool = InProcessPool(Scorer(blobs, vault), workers=workers)
        oracle = Oracle(Chain(rpc_url, load_account(key)), registry, blobs, pool, config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, oracle.stopped.set)
        try:
            await oracle.run()
        finally:
            await oracle.close()

    aio.run(main())


@cli.command()
@click.option("--state-dir", envvar="FEDORACLE_STATE_DIR", default=".fedoracle", show_default=True)
@registry_option
@click.option("--task", "task_id", type=int, default=None, help="Only this task id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def log(state_dir: str, registry: str, task_id: int | None, as_json: bool) -> None:
    """Show what this oracle has done: its place in the chain, its scores and its transactions."""
    import json

    from oracle.store import Checkpoint

    path = Path(state_dir) / f"oracle-{registry.lower()}.sqlite"
    if not path.exists():
        raise click.ClickException(f"no checkpoint at {path} (has the oracle run with this --state-dir?)")
    cp = Checkpoint(path)
    try:
        report = oracle_log(cp, task_id)
    finally:
        cp.close()
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        render_log(report)


def oracle_log(cp: Checkpoint, task_id: int | None = None) -> dict[str, Any]:
    """What ``fedoracle oracle log`` shows, from a checkpoint.

    Args:
        cp: the oracle's checkpoint.
        task_id: only this task's scores and transactions, when given.

    Returns:
        The report: the checkpoint's watermark, event counts, scores, transactions, and the
        transactions counted by status and their gas summed by action.
    """
    from fedoracle.errors import Reason

    scores = [
        {
            "task": r[0],
            "round": r[1],
            "device": r[2],
            "model_hash": r[3],
            "accuracy_bp": r[4],
            "reason": Reason(r[5]).name,
            "detail": r[6],
            "seconds": round(r[7], 3),
        }
        for r in cp.scores(task_id)
    ]
    actions = cp.action_rows(task_id=task_id)
    gas: dict[str, int] = {}
    for a in actions:
        gas[a["action"]] = gas.get(a["action"], 0) + a["gas_used"]
    return {
        "next_block": cp.next_block,
        "events_applied": cp.applied_count(),
        "submissions_seen": cp.applied_count("ModelSubmitted"),
        "scores": scores,
        "actions": actions,
        "by_status": {s: sum(a["status"] == s for a in actions) for s in sorted({a["status"] for a in actions})},
        "gas_by_action": gas,
    }


def render_log(report: dict[str, Any]) -> None:
    """Prints an oracle log report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"next block {report['next_block']}, {report['events_applied']} events applied, "
        f"{report['submissions_seen']} submissions seen, transactions by status {report['by_status']}"
    )
    scores = Table("task", "round", "device", "accuracy", "reason", "seconds", title="scores")
    for s in report["scores"]:
        scores.add_row(
            str(s["task"]),
            str(s["round"]),
            s["device"][:12],
            f"{s['accuracy_bp'] / 100:.2f}%",
            s["reason"],
            f"{s['seconds']:.2f}",
        )
    console.print(scores)
    table = Table("task", "round", "action", "subject", "tx", "block", "gas", "status", title="transactions")
    for a in report["actions"]:
        table.add_row(
            str(a["task_id"]),
            str(a["round"]),
            a["action"],
            a["subject"][:14],
            a["tx_hash"][:14],
            str(a["block_number"] or "-"),
            str(a["gas_used"]),
            a["status"],
        )
    console.print(table)


@cli.command()
@click.option("--queue", envvar="FEDORACLE_QUEUE", required=True, help="Redis URL of the evaluation queue.")
@blobs_option
@click.option(
    "--vault",
    envvar="FEDORACLE_VAULT",
    default=".fedoracle/vault",
    show_default=True,
    help="Folder of hidden test sets (a copy of the listener's).",
)
@click.option("--concurrency", default=1, show_default=True, help="Evaluations at once in this process.")
@click.option(
    "--idle-timeout",
    default=60.0,
    show_default=True,
    help="Seconds before a job a dead worker held is claimed by another.",
)
@click.option(
    "--log-format",
    envvar="FEDORACLE_LOG_FORMAT",
    default="kv",
    show_default=True,
    type=click.Choice(["text", "kv", "json"]),
)
def worker(queue: str, blob_store: str, vault: str, concurrency: int, idle_timeout: float, log_format: str) -> None:
    """Run an evaluation worker: scores jobs from the queue until interrupted (any host)."""
    from oracle.logs import configure
    from oracle.queue import run_worker

    configure(log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(
            queue, blob_store, vault, concurrency=concurrency, idle_timeout_ms=int(idle_timeout * 1000), stop=stop
        )

    aio.run(main())
