"""Experiment configurations: one simulated task (:class:`RunConfig`) and the grids of Fig. 4 and Fig. 5.

Defaults come from :data:`fedoracle.defaults.DEFAULTS`, as the demo's, the publisher's and the
fleet's do, so that a fast-path run and a protocol run of the same config compute the same thing:
small_cnn, record-level DP-SGD (per-example clip 1.0, Poisson batches of 64 expected, 2 local epochs of SGD
with momentum at lr 0.1, ε as each device's whole budget; the paper's ÷D mode is
:data:`fedoracle.defaults.PAPER_DP`),
threshold 0.5/0.4/0.2 (MNIST/Fashion-MNIST/CIFAR-10) in round 1 and the last global accuracy minus
0.05 after, 4,000 hidden test examples in ``rounds × 2`` groups. Two defaults are the paper's
experiment instead of the demo's: P = 10 (the paper's smallest fleet) and λ = 0.2 (its largest
flip rate; the demo flips every label).

The paper's grid (``--full``): P ∈ {10, 100, 200, 300}, λ ∈ {5, 10, 15, 20}%, EMD up to 1.5,
ε = 8, δ ∈ {e^-1, e^-3, e^-5, e^-6}, 10 runs. The reduced grid (default) keeps every value of
the swept axis but runs fewer repetitions and rounds; see :func:`fig4_grid` and :func:`fig5_grid`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from fedoracle.defaults import DEFAULTS, DP_SCALINGS, PAPER_DP, FleetSettings, TaskSettings, TrainingSettings

PAPER_DELTAS = (math.exp(-1), math.exp(-3), math.exp(-5), math.exp(-6))
# Record-level DP-SGD's δ panel: δ is the whole task's, it enters σ's solution, and it must sit far
# below 1/D (5e-4 for the demo's 2,000-example shard; every paper δ is above it, so would allow a
# record to leak outright). The P panel uses DEFAULTS.delta (1e-5).
RECORD_DELTAS = (1e-4, 1e-5, 1e-6, 1e-8)
MODES = DP_SCALINGS  # the privacy modes an experiment can run in (record-level DP-SGD first: the default)
MODE_NAMES = {
    "record": "record-level DP-SGD (ε for the whole task, one record)",
    "sample": "the paper's ÷D (ε per release, no formal guarantee)",
    "update": "whole-update local DP (ε per release, one device's update)",
}
MODE_SUFFIX = {"record": "dpsgd", "sample": "", "update": "update"}  # results file stems (÷D kept its old names)
PAPER_LAMBDAS = (0.05, 0.10, 0.15, 0.20)
PAPER_EMDS = (0.0, 0.5, 1.0, 1.5)
PAPER_DEVICES = (10, 100, 200, 300)
VARIANTS = ("defended", "undefended", "nondp")
TRAIN_SIZE = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def shard_size(dataset: str, devices: int) -> int:
    """Samples per device of a grid point.

    The fleet's rule (:func:`fedoracle.learning.partition.shard_size`) for the data set's
    training-set size.
    """
    from fedoracle.learning.partition import shard_size as fleet_shard_size

    return fleet_shard_size(TRAIN_SIZE[dataset], devices)


def grid_shard(dataset: str, devices: int) -> int | None:
    """``samples_per_device`` as a grid point records it.

    ``None`` where the fleet's rule gives the largest shard, else the shard size (the rule is the
    same; this keeps the recorded configs of earlier results, and so their resume keys, unchanged).
    """
    size = shard_size(dataset, devices)
    return None if size == DEFAULTS.max_shard else size


ATTACKS = ("label_flip", "adaptive")


def mode_settings(mode: str) -> dict[str, object]:
    """The training and privacy settings an experiment runs a privacy mode with.

    ``"record"``: the defaults (record-level DP-SGD: SGD + momentum, per-example clip 1, 2 epochs).
    ``"sample"`` and ``"update"``: the paper's training as this project measured it
    (:data:`fedoracle.defaults.PAPER_DP`: Adam at lr 2e-3, 3 epochs, batch 128, clip S = 5 on the
    update), with ÷D or whole-update sensitivity.

    Raises:
        ValueError: for a mode the protocol does not know.
    """
    if mode not in MODES:
        raise ValueError(f"unknown privacy mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "record":
        return {}
    return {**PAPER_DP, "dp_scaling": mode}


def mode_of(configs: list[RunConfig]) -> str:
    """The one privacy mode of a list of runs (``"mixed"`` when they differ)."""
    modes = {c.dp_scaling for c in configs}
    return modes.pop() if len(modes) == 1 else "mixed"


@dataclass(frozen=True)
class RunConfig(TaskSettings, FleetSettings, TrainingSettings):
    """One simulated task: fleet, task parameters, oracle policy, attack, seeds.

    Attributes:
        dataset: ``"mnist"``, ``"fashion_mnist"`` (the offline CIFAR-10 stand-in) or ``"cifar10"``.
        data_path: CIFAR-10 archive (required for ``cifar10``).
        architecture: ``"small_cnn"`` or ``"alexnet"``.
        devices: P.
        rounds: FL rounds.
        malicious, unreliable: shares of the fleet (the paper's 20% / 20%).
        flip_rate: λ, the share of a malicious device's labels that are flipped.
        emd: EMD of the unreliable devices' label distribution.
        samples_per_device: shard size (``None``: the fleet's rule, ``min(2000, 0.9·N_train // P)``).
        epsilon, delta, clip: the task's local-DP parameters.
        dp_scaling: ``"record"`` (record-level DP-SGD, the default), or the paper's ``"sample"`` (÷D)
            or ``"update"``.
        variant: ``"defended"`` (DP + accuracy gate), ``"undefended"`` (DP, FedAvg of every
            submission) or ``"nondp"`` (accuracy gate, no clipping or noise).
        threshold: round-1 threshold (``None``: per data set, as the demo).
        threshold_margin: later rounds' threshold = last global accuracy − margin (``None``: static).
        aggregation, trim_fraction: the oracle's aggregation rule.
        epochs, batch_size, learning_rate, optimizer: local training.
        test_examples, groups_per_round: the hidden test set's size and split.
        seed: the fleet's seed (kinds, shards, device seeds), as ``devices run --seed``.
        task_seed: the publisher's seed (initial model, test-set sample), as ``TaskPlan.seed``.
        attack: ``"label_flip"`` or ``"adaptive"`` (malicious devices craft updates to pass the gate).
        full_test: also evaluate the final global model on the whole test set.
    """

    data_path: str | None = None
    devices: int = PAPER_DEVICES[0]
    flip_rate: float = PAPER_LAMBDAS[-1]
    variant: str = "defended"
    threshold_margin: float | None = DEFAULTS.threshold_margin
    aggregation: str = DEFAULTS.aggregation
    trim_fraction: float = DEFAULTS.trim_fraction
    seed: int = DEFAULTS.fleet_seed
    task_seed: int = DEFAULTS.task_seed
    attack: str = "label_flip"
    full_test: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; expected one of {', '.join(ATTACKS)}")
        if self.devices < 1 or self.rounds < 1:
            raise ValueError("devices and rounds must be positive")

    @property
    def dp(self) -> bool:
        """Whether devices clip and noise their updates."""
        return self.variant != "nondp"

    @property
    def gate(self) -> bool:
        """Whether the oracle rejects candidates below the threshold."""
        return self.variant != "undefended"

    def key(self) -> str:
        """A stable identifier of the run (every field), to resume a grid."""
        return "|".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))


@dataclass
class Grid:
    """A named list of runs, each tagged with the figure panel and x value it belongs to.

    Attributes:
        name: ``"fig4"`` or ``"fig5"``.
        points: ``(panel, x, config)`` per run.
        reduced: what differs from the paper's grid, in words (empty for ``--full``).
    """

    name: str
    points: list[tuple[str, float, RunConfig]] = field(default_factory=list)
    reduced: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """The privacy mode the grid runs in (:data:`MODES`), ``"mixed"`` if several."""
        return mode_of([c for _, _, c in self.points])


def _runs(base: RunConfig, runs: int) -> list[RunConfig]:
    """``runs`` repetitions: run k uses fleet seed k and publisher seed k (run 0 = the demo's seeds)."""
    return [replace(base, seed=k, task_seed=k) for k in range(runs)]


def fig4_grid(
    *,
    full: bool = False,
    runs: int | None = None,
    dataset: str = "fashion_mnist",
    data_path: str | None = None,
    devices: int | None = None,
    rounds: int | None = None,
    architecture: str = "small_cnn",
    mode: str = DEFAULTS.dp_scaling,
) -> Grid:
    """Fig. 4: accuracy against λ (at EMD 1.5) and against EMD (at λ = 20%), with and without the defence.

    Panel ``lambda``: λ ∈ {5, 10, 15, 20}% plus λ = 100% (beyond the paper: where the gate starts
    to matter). Panel ``emd``: EMD ∈ {0, 0.5, 1.0, 1.5}. Each point runs ``defended`` and
    ``undefended``; the non-DP baseline runs at (λ = 20%, EMD = 1.5).

    Reduced default: 2 runs (paper 10), P = 10 (paper's Fig. 4 P is not stated; 10 is its smallest),
    3 rounds, Fashion-MNIST as the offline CIFAR-10 stand-in. ``--full``: 10 runs, P = 100,
    5 rounds. ``mode``: the privacy mode (:func:`mode_settings`); ε = 8 is each device's whole
    budget in ``"record"``, a release's in the paper's modes.
    """
    runs = runs if runs is not None else (10 if full else 2)
    devices = devices if devices is not None else (100 if full else 10)
    rounds = rounds if rounds is not None else (5 if full else 3)
    base = RunConfig(
        dataset=dataset,
        data_path=data_path,
        devices=devices,
        rounds=rounds,
        samples_per_device=grid_shard(dataset, devices),
        architecture=architecture,
        **mode_settings(mode),  # type: ignore[arg-type]
    )
    grid = Grid("fig4")
    lambdas = (*PAPER_LAMBDAS, 1.0)
    for lam in lambdas:
        for variant in ("defended", "undefended"):
            for cfg in _runs(replace(base, flip_rate=lam, emd=1.5, variant=variant), runs):
                grid.points.append(("lambda", lam, cfg))
    for e in PAPER_EMDS:
        for variant in ("defended", "undefended"):
            for cfg in _runs(replace(base, flip_rate=0.2, emd=e, variant=variant), runs):
                grid.points.append(("emd", e, cfg))
    for cfg in _runs(replace(base, flip_rate=0.2, emd=1.5, variant="nondp"), runs):
        grid.points.append(("nondp", 0.2, cfg))
    if not full:
        grid.reduced = [
            f"{runs} runs per point (paper: 10)",
            f"P = {devices} devices",
            f"{rounds} rounds",
            f"data set {dataset}" + (" (offline stand-in for CIFAR-10)" if dataset == "fashion_mnist" else ""),
            "shard size min(2000, N_train / P) as the fleet",
            f"model {architecture}",
            f"privacy: {MODE_NAMES[mode]}",
        ]
    return grid


def fig5_grid(
    *,
    full: bool = False,
    runs: int | None = None,
    dataset: str = "mnist",
    data_path: str | None = None,
    devices: tuple[int, ...] | None = None,
    rounds: int | None = None,
    delta_devices: int | None = None,
    architecture: str = "small_cnn",
    mode: str = DEFAULTS.dp_scaling,
    threshold: float | None = None,
    delta_panel: bool = True,
) -> Grid:
    """Fig. 5: accuracy against P (at δ = e^-5) and against δ (at ε = 8), defended, with DP.

    Reports the highest, minimum and average local-model (candidate) accuracy per run (the
    paper's threshold is the average, 90.32% at P = 100 on MNIST) and the global accuracy.

    Reduced default: 2 runs (paper 10), 3 rounds, P ∈ {10, 100, 200, 300} with shards of
    :func:`shard_size` samples, the δ panel at P = 10. ``--full``: 10 runs, 5 rounds, δ at P = 100.

    ``mode``: the privacy mode (:func:`mode_settings`). In the paper's modes δ is a release's
    (P panel at δ = e^-5, δ panel over the paper's e^-1 … e^-6, x = −ln δ). In ``"record"`` δ is the
    whole task's and enters the solved noise multiplier: the P panel runs at the default δ = 1e-5
    and the δ panel over :data:`RECORD_DELTAS` (x = −log10 δ), all below 1/D.

    ``threshold``: the round-1 threshold (``None``: the data set's default; small shards need a
    lower one under DP-SGD, see ``fedoracle experiment round1``). ``delta_panel=False`` runs the P
    panel only (with its non-DP baseline).
    """
    runs = runs if runs is not None else (10 if full else 2)
    rounds = rounds if rounds is not None else (5 if full else 3)
    devices = devices if devices is not None else PAPER_DEVICES
    delta_devices = delta_devices if delta_devices is not None else (100 if full else 10)
    base = RunConfig(
        dataset=dataset,
        data_path=data_path,
        rounds=rounds,
        flip_rate=0.2,
        emd=1.5,
        architecture=architecture,
        threshold=threshold,
        **mode_settings(mode),  # type: ignore[arg-type]
    )
    grid = Grid("fig5")
    p_delta = DEFAULTS.delta if mode == "record" else math.exp(-5)
    for p in devices:
        sized = replace(base, devices=p, delta=p_delta, samples_per_device=grid_shard(dataset, p))
        for cfg in _runs(sized, runs):
            grid.points.append(("devices", p, cfg))
    at = replace(base, devices=delta_devices, samples_per_device=grid_shard(dataset, delta_devices))
    for d in (RECORD_DELTAS if mode == "record" else PAPER_DELTAS) if delta_panel else ():
        x = -round(math.log10(d)) if mode == "record" else -round(math.log(d))
        for cfg in _runs(replace(at, delta=d), runs):
            grid.points.append(("delta", x, cfg))
    for cfg in _runs(replace(at, variant="nondp"), runs):
        grid.points.append(("nondp", delta_devices, cfg))
    if not full:
        grid.reduced = [
            f"{runs} runs per point (paper: 10)",
            f"{rounds} rounds",
            f"δ panel at P = {delta_devices}",
            f"data set {dataset}",
            "shard size min(2000, 0.9 N_train / P) (the fleet's N_train / P runs a class dry at P >= 30)",
            f"model {architecture}",
            f"privacy: {MODE_NAMES[mode]}",
            *([f"round-1 threshold {threshold:g}"] if threshold is not None else []),
            *([] if delta_panel else ["no δ panel"]),
        ]
    return grid
