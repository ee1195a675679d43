"""``fedoracle demo``: one whole secure-FL task on this machine."""

from __future__ import annotations

import sys

import click


@click.command()
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
    from demo.run import DemoConfig, run_demo

    sys.exit(run_demo(DemoConfig(**options)))
