"""``fedoracle deploy`` and ``fedoracle task ...``: the publisher's commands."""

from __future__ import annotations

import json
from typing import Any

import click

from fedoracle import aio
from fedoracle.defaults import DEFAULTS
from fedoracle.options import (
    aggregation_option,
    blobs_option,
    claim_window_option,
    clip_option,
    dataset_option,
    delta_option,
    dp_scaling_option,
    epsilon_option,
    key_option,
    loss_margin_option,
    model_option,
    registry_option,
    rounds_option,
    rpc_option,
    threshold_option,
)


@click.command()
@rpc_option
@key_option
def deploy(rpc_url: str, key: str) -> None:
    """Deploy a new FLTaskRegistry and print its address."""
    from fedoracle.chain import Chain, TaskRegistry, load_account

    registry = aio.run(TaskRegistry.deploy(Chain(rpc_url, load_account(key))))
    click.echo(registry.address)


@click.group()
def task() -> None:
    """Publisher commands."""


@task.command("publish")
@rpc_option
@registry_option
@key_option
@blobs_option
@click.option("--oracle", required=True, help="The oracle's address.")
@click.option(
    "--vault",
    default=".fedoracle/vault",
    show_default=True,
    help="Private folder for the hidden test set (hand it to the oracle).",
)
@dataset_option
@model_option
@rounds_option
@threshold_option
@epsilon_option
@delta_option
@clip_option
@dp_scaling_option
@aggregation_option
@loss_margin_option
@claim_window_option
@click.option(
    "--reward",
    "reward_eth",
    default=DEFAULTS.reward_eth,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Reward escrowed, in ETH (> 0).",
)
@click.option(
    "--round-duration",
    default=DEFAULTS.round_duration,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds a round takes submissions.",
)
@click.option(
    "--max-submissions",
    "max_submissions_per_round",
    default=DEFAULTS.max_submissions,
    show_default=True,
    type=click.IntRange(min=0),
    help="Close a round at this many submissions (0: only the deadline).",
)
@click.option(
    "--max-samples",
    "max_samples_per_device",
    default=DEFAULTS.max_samples_per_device,
    show_default=True,
    type=click.IntRange(min=1, max=2**32 - 1),
    help="The most local samples (the FedAvg weight) a submission may declare; the contract refuses more.",
)
def task_publish(
    rpc_url: str, registry: str, key: str, blob_store: str, oracle: str, vault: str, **options: Any
) -> None:
    """Publish a task: commit the hidden test set, store the initial model, escrow the reward."""
    from fedoracle.blobstore import open_store
    from fedoracle.chain import Chain, TaskRegistry, load_account
    from publisher.publish import TaskPlan, publish_task

    plan = TaskPlan(**options)
    reg = TaskRegistry(Chain(rpc_url, load_account(key)), registry)
    published = aio.run(publish_task(reg, open_store(blob_store), vault, plan, oracle))
    click.echo(
        json.dumps(
            {
                "task_id": published.task_id,
                "spec_hash": published.spec_hash,
                "initial_model_hash": published.initial_model_hash,
                "test_set_root": published.hidden.root,
                "block": published.block_number,
            }
        )
    )


def _manage(rpc_url: str, registry: str, key: str) -> Any:
    from fedoracle.chain import Chain, TaskRegistry, load_account

    return TaskRegistry(Chain(rpc_url, load_account(key)), registry)


@task.command("cancel")
@rpc_option
@registry_option
@key_option
@click.argument("task_id", type=click.IntRange(min=1))
def task_cancel(rpc_url: str, registry: str, key: str, task_id: int) -> None:
    """Cancel a task (the publisher before its end, anyone past a deadline); settled rounds stay claimable."""

    async def go() -> dict[str, Any]:
        from fedoracle.hashing import normalize_hash

        reg = _manage(rpc_url, registry, key)
        receipt = await reg.cancel(task_id)
        return {
            "task_id": task_id,
            "cancelled": True,
            "refundable_wei": await reg.refundable(task_id),
            "tx": normalize_hash(receipt["transactionHash"]),
        }

    click.echo(json.dumps(aio.run(go())))


@task.command("refund")
@rpc_option
@registry_option
@key_option
@click.argument("task_id", type=click.IntRange(min=1))
def task_refund(rpc_url: str, registry: str, key: str, task_id: int) -> None:
    """Pay the publisher what a finalized or cancelled task did not allocate (rejected rounds, rounding dust)."""

    async def go() -> dict[str, Any]:
        from fedoracle.hashing import normalize_hash

        reg = _manage(rpc_url, registry, key)
        amount = await reg.refundable(task_id)
        receipt = await reg.refund(task_id)
        return {"task_id": task_id, "refunded_wei": amount, "tx": normalize_hash(receipt["transactionHash"])}

    click.echo(json.dumps(aio.run(go())))
