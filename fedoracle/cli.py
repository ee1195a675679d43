"""The ``fedoracle`` command line: the core's commands plus the roles' plugged-in groups.

``fedoracle oracle ...`` and ``fedoracle devices ...`` come from the ``fedoracle.commands`` entry
points (declared in pyproject.toml), so the core never imports a role. Nothing on the start-up
path imports TensorFlow: commands import what they compute with when they run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from importlib.metadata import entry_points

import click

from fedoracle import __version__


class PluginGroup(click.Group):
    """A click group that adds the role CLIs registered under ``fedoracle.commands``."""

    def _plugins(self) -> dict:
        return {ep.name: ep for ep in entry_points(group="fedoracle.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self._plugins():
            cmd = self._plugins()[name].load()
        return cmd


def setup_logging(verbose: int) -> None:
    """Structured-ish logs: ``time level logger message`` (``-v`` for debug)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s %(message)s", stream=sys.stderr)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FEDORACLE"})
@click.version_option(__version__, prog_name="fedoracle")
@click.option("-v", "--verbose", count=True, help="More logs (-v info, -vv debug).")
def main(verbose: int) -> None:
    """fedoracle: a secure federated-learning marketplace on Ethereum.

    A task contract escrows the reward and commits the hidden test set; devices train with local
    differential privacy and submit model updates; an oracle evaluates them with TensorFlow
    Federated, posts verdicts on-chain, aggregates, and accepted devices claim their reward.
    """
    setup_logging(verbose)


# --- shared options ------------------------------------------------------------------------------

def rpc_option(f):
    return click.option("--rpc-url", envvar="FEDORACLE_RPC_URL", default="http://127.0.0.1:8545",
                        show_default=True, help="Chain JSON-RPC URL.")(f)


def registry_option(f):
    return click.option("--registry", envvar="FEDORACLE_REGISTRY", required=True, help="FLTaskRegistry address.")(f)


def key_option(f):
    return click.option("--key", envvar="FEDORACLE_KEY", required=True,
                        help="Signing key: 0x<hex>, dev:<n> (dev chains), file:<path> or env:<VAR>.")(f)


def blobs_option(f):
    return click.option("--blob-store", envvar="FEDORACLE_BLOB_STORE", default=".fedoracle/blobs",
                        show_default=True, help="Blob store folder or URL.")(f)


def broker_option(f):
    return click.option("--broker-url", envvar="FEDORACLE_BROKER_URL", default="mqtt://127.0.0.1:1883",
                        show_default=True, help="MQTT broker URL.")(f)


# --- core commands -------------------------------------------------------------------------------

@main.command()
@rpc_option
@key_option
def deploy(rpc_url: str, key: str) -> None:
    """Deploy a new FLTaskRegistry and print its address."""
    from fedoracle.chain import Chain, TaskRegistry, load_account

    registry = asyncio.run(TaskRegistry.deploy(Chain(rpc_url, load_account(key))))
    click.echo(registry.address)


@main.group()
def task() -> None:
    """Publisher commands."""


@task.command("publish")
@rpc_option
@registry_option
@key_option
@blobs_option
@click.option("--oracle", required=True, help="The oracle's address.")
@click.option("--vault", default=".fedoracle/vault", show_default=True,
              help="Private folder for the hidden test set (hand it to the oracle).")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(["mnist", "fashion_mnist", "cifar10"]))
@click.option("--model", "architecture", default="small_cnn", show_default=True, type=click.Choice(["small_cnn", "alexnet"]))
@click.option("--rounds", default=3, show_default=True)
@click.option("--threshold", default=0.5, show_default=True, help="Accuracy a local model must reach.")
@click.option("--epsilon", default=8.0, show_default=True)
@click.option("--delta", default=1e-5, show_default=True)
@click.option("--clip", default=5.0, show_default=True, help="L2 clip norm S of an update.")
@click.option("--reward", "reward_eth", default=1.0, show_default=True, help="Reward escrow in ETH.")
@click.option("--round-duration", default=600, show_default=True, help="Seconds a round takes submissions.")
@click.option("--max-submissions", default=0, show_default=True, help="Close a round at this many (0: deadline).")
def task_publish(rpc_url, registry, key, blob_store, oracle, vault, dataset, architecture, rounds, threshold,
                 epsilon, delta, clip, reward_eth, round_duration, max_submissions) -> None:
    """Publish a task: commit the hidden test set, store the initial model, escrow the reward."""
    from fedoracle.blobstore import open_store
    from fedoracle.chain import Chain, TaskRegistry, load_account
    from fedoracle.publisher import TaskPlan, publish_task

    plan = TaskPlan(dataset=dataset, architecture=architecture, rounds=rounds, threshold=threshold,
                    epsilon=epsilon, delta=delta, clip=clip, reward_eth=reward_eth, round_duration=round_duration,
                    max_submissions_per_round=max_submissions)
    reg = TaskRegistry(Chain(rpc_url, load_account(key)), registry)
    published = asyncio.run(publish_task(reg, open_store(blob_store), vault, plan, oracle))
    click.echo(json.dumps({"task_id": published.task_id, "spec_hash": published.spec_hash,
                           "initial_model_hash": published.initial_model_hash,
                           "test_set_root": published.hidden.root, "block": published.block_number}))


@main.command()
@rpc_option
@registry_option
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(rpc_url: str, registry: str, task_id: int, as_json: bool) -> None:
    """Show a task's phase, rounds, submissions, verdicts and balances."""
    from fedoracle.status import render_status, task_status

    report = asyncio.run(task_status(rpc_url, registry, task_id))
    if as_json:
        click.echo(json.dumps(report, indent=1, default=str))
    else:
        render_status(report)


@main.group()
def relay() -> None:
    """The chain→MQTT relay."""


@relay.command("run")
@rpc_option
@registry_option
@broker_option
@click.option("--from-block", default=0, show_default=True, help="Block to start relaying at.")
def relay_run(rpc_url: str, registry: str, broker_url: str, from_block: int) -> None:
    """Republish the registry's lifecycle events on MQTT until interrupted."""
    from fedoracle.relay import Relay

    try:
        asyncio.run(Relay(rpc_url, registry, broker_url, from_block=from_block).run())
    except KeyboardInterrupt:
        pass


@main.group()
def blobs() -> None:
    """The blob server: model bytes by content hash over HTTP, for roles on other hosts."""


@blobs.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all interfaces).")
@click.option("--port", default=8600, show_default=True, help="TCP port (0: any free port, printed on start).")
@click.option("--root", default=".fedoracle/blobs", show_default=True, help="Folder the blobs are kept in.")
@click.option("--max-bytes", default=64 * 1024 * 1024, show_default=True, help="Largest upload accepted (413 above).")
@click.option("--token", envvar="FEDORACLE_BLOB_TOKEN", default=None,
              help="Require 'Authorization: Bearer <token>' on uploads [env FEDORACLE_BLOB_TOKEN].")
def blobs_serve(host: str, port: int, root: str, max_bytes: int, token: str | None) -> None:
    """Serve a blob store folder over HTTP (PUT/GET /blobs/<hash>), verifying every upload's hash."""
    from fedoracle.blobserver import serve

    def announce(url: str) -> None:
        click.echo(f"blob server listening on {url} (root {root}, max {max_bytes} bytes, "
                   f"upload token {'required' if token else 'not required'})")

    serve(root, host=host, port=port, max_bytes=max_bytes, token=token, announce=announce)


@main.command()
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(["mnist", "fashion_mnist", "cifar10"]))
@click.option("--data-path", default=None, help="CIFAR-10 archive (cifar-10-python.tar.gz) for --dataset cifar10.")
@click.option("--model", "architecture", default="small_cnn", show_default=True, type=click.Choice(["small_cnn", "alexnet"]))
@click.option("--devices", "count", default=20, show_default=True, help="Number of devices P.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--malicious", default=0.2, show_default=True, help="Share of label-flipping devices.")
@click.option("--unreliable", default=0.2, show_default=True, help="Share of low-quality (skewed) devices.")
@click.option("--flip-rate", default=1.0, show_default=True,
              help="λ: share of labels a malicious device flips (the paper's 0.05-0.2 mostly pass the accuracy gate).")
@click.option("--emd", default=1.5, show_default=True, help="Earth mover's distance of unreliable devices' data.")
@click.option("--epsilon", default=8.0, show_default=True)
@click.option("--delta", default=1e-5, show_default=True)
@click.option("--clip", default=None, type=float, help="L2 clip norm S [default: 5.0].")
@click.option("--threshold", default=None, type=float, help="Round-1 accuracy threshold [default: per data set].")
@click.option("--threshold-margin", default=0.05, show_default=True,
              help="Later rounds: threshold = last global accuracy minus this.")
@click.option("--samples-per-device", default=None, type=int, help="Training examples per device.")
@click.option("--epochs", default=3, show_default=True, help="Local epochs per round.")
@click.option("--batch-size", default=128, show_default=True, help="Local batch size (the paper's).")
@click.option("--lr", "learning_rate", default=2e-3, show_default=True,
              help="Local learning rate (Adam; the paper's 1e-4 needs many more rounds).")
@click.option("--out", default="runs", show_default=True, help="Folder for the run's report and plots.")
@click.option("--timeout", default=900, show_default=True, help="Give up after this many seconds.")
def demo(**options) -> None:
    """Run a whole secure-FL task on one machine: anvil, broker, oracle, device fleet, report."""
    from fedoracle.demo import DemoConfig, run_demo

    sys.exit(run_demo(DemoConfig(**options)))


# Experiments (Fig. 4 / Fig. 5 reproduction); the group module imports only click at start-up.
from fedoracle.experiments.cli import experiment  # noqa: E402

main.add_command(experiment)

if __name__ == "__main__":
    main()
