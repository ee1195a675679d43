"""``fedoracle deploy`` and ``fedoracle task ...``: the publisher's commands."""

from __future__ import annotations

import asyncio
import json

import click

from fedoracle.defaults import DEFAULTS
from fedoracle.options import (
    blobs_option,
    clip_option,
    dataset_option,
    delta_option,
    epsilon_option,
    key_option,
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

    registry = asyncio.run(TaskRegistry.deploy(Chain(rpc_url, load_account(key))))
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
    default=DEFAULTS.max_submissions,
    show_default=True,
    type=click.IntRange(min=0),
    help="Close a round at this many submissions (0: only the deadline).",
)
def task_publish(
    rpc_url,
    registry,
    key,
    blob_store,
    oracle,
    vault,
    dataset,
    architecture,
    rounds,
    threshold,
    epsilon,
    delta,
    clip,
    reward_eth,
    round_duration,
    max_submissions,
) -> None:
    """Publish a task: commit the hidden test set, store the initial model, escrow the reward."""
    from fedoracle.blobstore import open_store
    from fedoracle.chain import Chain, TaskRegistry, load_account
    from publisher.publish import TaskPlan, publish_task

    plan = TaskPlan(
        dataset=dataset,
        architecture=architecture,
        rounds=rounds,
        threshold=threshold,
        epsilon=epsilon,
        delta=delta,
        clip=clip,
        reward_eth=reward_eth,
        round_duration=round_duration,
        max_submissions_per_round=max_submissions,
    )
    reg = TaskRegistry(Chain(rpc_url, load_account(key)), registry)
    published = asyncio.run(publish_task(reg, open_store(blob_store), vault, plan, oracle))
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
