"""Click options shared by the role CLIs: the chain, the registry, the key, the blobs, the broker.

The protocol parameters' options take their defaults from :mod:`fedoracle.defaults`. Every role
imports them from here, never from another role's CLI, so that each role can be installed and run
on its own. Standard library and click only (fast ``--help``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from fedoracle.defaults import AGGREGATIONS, ARCHITECTURES, DATASETS, DEFAULTS, DP_SCALINGS, OPTIMIZERS

F = TypeVar("F", bound=Callable[..., Any])


def rpc_option(f: F) -> F:
    """``--rpc-url`` / ``FEDORACLE_RPC_URL``: the chain's JSON-RPC URL."""
    return click.option(
        "--rpc-url",
        envvar="FEDORACLE_RPC_URL",
        default="http://127.0.0.1:8545",
        show_default=True,
        help="Chain JSON-RPC URL [env FEDORACLE_RPC_URL].",
    )(f)


def registry_option(f: F) -> F:
    """``--registry`` / ``FEDORACLE_REGISTRY``: the FLTaskRegistry's address (required)."""
    return click.option(
        "--registry",
        envvar="FEDORACLE_REGISTRY",
        required=True,
        help="FLTaskRegistry address [env FEDORACLE_REGISTRY].",
    )(f)


def from_block_option(f: F) -> F:
    """``--from-block``: the first block a command reads the task's events from."""
    return click.option(
        "--from-block",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="First block to read events from (the task's publish block makes it fast on a long chain).",
    )(f)


def key_option(f: F) -> F:
    """``--key`` / ``FEDORACLE_KEY``: where the signing key comes from (required)."""
    return click.option(
        "--key",
        envvar="FEDORACLE_KEY",
        required=True,
        help="Signing key: 0x<hex>, dev:<n> (dev chains), file:<path> or env:<VAR> [env FEDORACLE_KEY].",
    )(f)


def blobs_option(f: F) -> F:
    """``--blob-store`` / ``FEDORACLE_BLOB_STORE``: a blob store folder or an HTTP blob server."""
    return click.option(
        "--blob-store",
        envvar="FEDORACLE_BLOB_STORE",
        default=".fedoracle/blobs",
        show_default=True,
        help="Blob store folder or URL [env FEDORACLE_BLOB_STORE].",
    )(f)


def broker_option(f: F) -> F:
    """``--broker-url`` / ``FEDORACLE_BROKER_URL``: the MQTT broker."""
    return click.option(
        "--broker-url",
        envvar="FEDORACLE_BROKER_URL",
        default="mqtt://127.0.0.1:1883",
        show_default=True,
        help="MQTT broker URL [env FEDORACLE_BROKER_URL].",
    )(f)


# --- protocol parameters: defaults from fedoracle.defaults, one definition per parameter ----------
#
# A command that takes one of these uses the function below, so every command that shares a
# parameter shares its flag, its default, its range and its help (tests/core/test_defaults.py).

_POSITIVE = click.FloatRange(min=0.0, min_open=True)
_SHARE = click.FloatRange(0.0, 1.0)


def _protocol_option(*decls: str, env: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    """A protocol parameter's option: ``[env FEDORACLE_<env>]`` and the default shown in ``--help``."""
    kwargs.setdefault("show_default", True)
    return click.option(*decls, envvar=f"FEDORACLE_{env}", help=f"{help} [env FEDORACLE_{env}]", **kwargs)


def dataset_option(f: F) -> F:
    """``--dataset``: the task's data set."""
    return _protocol_option(
        "--dataset",
        env="DATASET",
        default=DEFAULTS.dataset,
        type=click.Choice(DATASETS),
        help="Data set (cifar10 needs --data-path).",
    )(f)


def data_path_option(f: F) -> F:
    """``--data-path``: the CIFAR-10 archive."""
    return _protocol_option(
        "--data-path",
        env="DATA_PATH",
        default=None,
        show_default=False,
        help="CIFAR-10 archive (cifar-10-python.tar.gz), for --dataset cifar10.",
    )(f)


def model_option(f: F) -> F:
    """``--model``: the task's architecture."""
    return _protocol_option(
        "--model",
        "architecture",
        env="MODEL",
        default=DEFAULTS.architecture,
        type=click.Choice(ARCHITECTURES),
        help="Model architecture.",
    )(f)


def rounds_option(f: F) -> F:
    """``--rounds``: FL rounds of a task."""
    return _protocol_option(
        "--rounds", env="ROUNDS", default=DEFAULTS.rounds, type=click.IntRange(1, 1000), help="FL rounds of the task."
    )(f)


def threshold_option(f: F) -> F:
    """``--threshold``: the round-1 accuracy threshold (default per data set)."""
    per_set = ", ".join(f"{k} {v}" for k, v in DEFAULTS.thresholds.items())
    return _protocol_option(
        "--threshold",
        env="THRESHOLD",
        default=None,
        type=_SHARE,
        show_default=False,
        help=f"Round-1 accuracy threshold, a fraction in [0, 1] [default: {per_set}].",
    )(f)


def threshold_margin_option(f: F) -> F:
    """``--threshold-margin``: the dynamic threshold's margin below the last global accuracy."""
    return _protocol_option(
        "--threshold-margin",
        env="THRESHOLD_MARGIN",
        default=DEFAULTS.threshold_margin,
        type=_SHARE,
        help="From round 2, threshold = last global accuracy minus this "
        "(a fraction; 0 keeps it at the global accuracy).",
    )(f)


def epsilon_option(f: F) -> F:
    """``--epsilon``: each device's privacy budget ε."""
    return _protocol_option(
        "--epsilon",
        env="EPSILON",
        default=DEFAULTS.epsilon,
        type=_POSITIVE,
        help="Local DP: each device's whole budget ε over the task, one record added or removed (> 0; with "
        "the paper's --dp-scaling sample/update: ε of one update in one round).",
    )(f)


def delta_option(f: F) -> F:
    """``--delta``: the budget's δ."""
    return _protocol_option(
        "--delta",
        env="DELTA",
        default=DEFAULTS.delta,
        type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
        help="Local DP: the budget's δ, in (0, 1) (the paper's modes: per update and round).",
    )(f)


def clip_option(f: F) -> F:
    """``--clip``: the L2 clip norm (of one example's gradient, or of an update in the paper's modes)."""
    return _protocol_option(
        "--clip",
        env="CLIP",
        default=DEFAULTS.clip,
        type=_POSITIVE,
        help="L2 clip norm (> 0): C of one example's gradient (record), S of an update (the paper's modes).",
    )(f)


def malicious_option(f: F) -> F:
    """``--malicious``: share of label-flipping devices."""
    return _protocol_option(
        "--malicious",
        env="MALICIOUS",
        default=DEFAULTS.malicious,
        type=_SHARE,
        help="Share of the fleet that flips labels, in [0, 1].",
    )(f)


def unreliable_option(f: F) -> F:
    """``--unreliable``: share of devices with skewed data."""
    return _protocol_option(
        "--unreliable",
        env="UNRELIABLE",
        default=DEFAULTS.unreliable,
        type=_SHARE,
        help="Share of the fleet with label-skewed data, in [0, 1].",
    )(f)


def flip_rate_option(f: F) -> F:
    """``--flip-rate``: λ, the share of a malicious device's labels it flips."""
    return _protocol_option(
        "--flip-rate",
        env="FLIP_RATE",
        default=DEFAULTS.flip_rate,
        type=_SHARE,
        help="λ: share of a malicious device's labels that are flipped, in [0, 1] "
        "(the paper's 0.05-0.2 mostly pass the accuracy gate).",
    )(f)


def emd_option(f: F) -> F:
    """``--emd``: the EMD of an unreliable device's labels."""
    return _protocol_option(
        "--emd",
        env="EMD",
        default=DEFAULTS.emd,
        type=click.FloatRange(0.0, 2.0),
        help="Earth mover's distance of an unreliable device's label distribution, in [0, 2].",
    )(f)


def samples_per_device_option(f: F) -> F:
    """``--samples-per-device``: training examples per device."""
    return _protocol_option(
        "--samples-per-device",
        env="SAMPLES_PER_DEVICE",
        default=None,
        type=click.IntRange(min=1),
        show_default=False,
        help=f"Training examples per device [default: min({DEFAULTS.max_shard}, "
        f"{DEFAULTS.shard_share:g} × training set / fleet size)].",
    )(f)


def epochs_option(f: F) -> F:
    """``--epochs``: local epochs per round."""
    return _protocol_option(
        "--epochs", env="EPOCHS", default=DEFAULTS.epochs, type=click.IntRange(min=1), help="Local epochs per round."
    )(f)


def batch_size_option(f: F) -> F:
    """``--batch-size``: local batch size."""
    return _protocol_option(
        "--batch-size",
        env="BATCH_SIZE",
        default=DEFAULTS.batch_size,
        type=click.IntRange(min=1),
        help="Local batch size, in examples (the paper's).",
    )(f)


def learning_rate_option(f: F) -> F:
    """``--lr``: the local learning rate."""
    return _protocol_option(
        "--lr",
        "learning_rate",
        env="LR",
        default=DEFAULTS.learning_rate,
        type=_POSITIVE,
        help="Local learning rate (the paper's 1e-4 needs many more rounds).",
    )(f)


def optimizer_option(f: F) -> F:
    """``--optimizer``: the local optimiser."""
    return _protocol_option(
        "--optimizer",
        env="OPTIMIZER",
        default=DEFAULTS.optimizer,
        type=click.Choice(OPTIMIZERS),
        help="Local optimiser.",
    )(f)


def dp_scaling_option(f: F) -> F:
    """``--dp-scaling``: the noise's sensitivity."""
    return _protocol_option(
        "--dp-scaling",
        env="DP_SCALING",
        default=DEFAULTS.dp_scaling,
        type=click.Choice(DP_SCALINGS),
        help=(
            "Privacy mechanism: 'record' = record-level DP-SGD (the task's ε, δ is the whole budget; needs "
            "--optimizer sgd), 'sample' = the paper's ÷D (no formal guarantee), 'update' = whole-update noise S."
        ),
    )(f)


def fleet_seed_option(f: F) -> F:
    """``--seed``: the fleet's seed."""
    return _protocol_option(
        "--seed",
        env="SEED",
        default=DEFAULTS.fleet_seed,
        type=click.IntRange(min=0),
        help="Seeds the fleet's kinds, shards, training order and (for now) DP noise; see issue 17.",
    )(f)


def aggregation_option(f: F) -> F:
    """``--aggregation``, ``--trim-fraction``, ``--krum-f``, ``--krum-m``: the task's aggregation rule (publisher)."""
    f = _protocol_option(
        "--krum-m",
        env="KRUM_M",
        default=DEFAULTS.krum_m,
        type=click.IntRange(min=0, max=2**16 - 1),
        help="Multi-Krum: submissions averaged, m (0: n − f).",
    )(f)
    f = _protocol_option(
        "--krum-f",
        env="KRUM_F",
        default=DEFAULTS.krum_f,
        type=click.IntRange(min=0, max=2**16 - 1),
        help="Multi-Krum: malicious devices assumed, f.",
    )(f)
    f = _protocol_option(
        "--trim-fraction",
        env="TRIM_FRACTION",
        default=DEFAULTS.trim_fraction,
        type=click.FloatRange(min=0.0, max=0.5, min_open=True, max_open=True),
        help="Trimmed mean: share trimmed at each end, β (a fraction, 0 < β < 0.5).",
    )(f)
    return _protocol_option(
        "--aggregation",
        env="AGGREGATION",
        default=DEFAULTS.aggregation,
        type=click.Choice(AGGREGATIONS),
        help="How the task's accepted updates are combined; committed on-chain at publish.",
    )(f)


def loss_margin_option(f: F) -> F:
    """``--loss-margin-bp``: the task's loss gate (publisher)."""
    return _protocol_option(
        "--loss-margin-bp",
        env="LOSS_MARGIN_BP",
        default=DEFAULTS.loss_margin_bp,
        type=click.IntRange(min=0, max=10_000),
        help="Loss gate, basis points (0: off): reject a candidate whose test loss exceeds the global model's by more.",
    )(f)


def claim_window_option(f: F) -> F:
    """``--claim-window``: seconds for claims after the task ends (publisher)."""
    return _protocol_option(
        "--claim-window",
        env="CLAIM_WINDOW",
        default=DEFAULTS.claim_window,
        type=click.IntRange(min=1, max=2**32 - 1),
        help="Seconds after the task ends during which rewards can be claimed; then unclaimed shares go back.",
    )(f)
