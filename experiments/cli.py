"""``fedoracle experiment``: one command per figure, the protocol agreement check, and beyond the paper.

Heavy modules (TensorFlow) load only when a command runs.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from fedoracle.defaults import ARCHITECTURES, DATASETS


def _command() -> str:
    return "fedoracle " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _save(doc: dict, results_dir: str, name: str) -> None:
    """Stamps ``doc`` with the command that made it and writes ``<results_dir>/<name>.json``."""
    doc["command"] = _command()
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    (Path(results_dir) / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True))


def _stem(name: str, mode: str) -> str:
    """A results file's stem for a privacy mode (the paper's ÷D keeps the bare name of its earlier results)."""
    from experiments.config import MODE_SUFFIX

    return "_".join([name, *([MODE_SUFFIX[mode]] if MODE_SUFFIX[mode] else [])])


def _cleanup() -> None:
    from fedoracle.learning.runtime import stop_workers

    stop_workers()


def _echo(line: str) -> None:
    click.echo(line, err=True)


common = [
    click.option("--full", is_flag=True, help="The paper's grid (10 runs, P = 100 / δ panel at P = 100, 5 rounds)."),
    click.option("--runs", type=int, default=None, help="Runs per point [default: 2 reduced, 10 full]."),
    click.option("--data-path", default=None, help="CIFAR-10 archive (cifar-10-python.tar.gz) for --dataset cifar10."),
    click.option("--rounds", type=int, default=None, help="FL rounds per run [default: 3 reduced, 5 full]."),
    click.option("--results", "results_dir", default="results", show_default=True, help="Folder for JSON and CSV."),
    click.option("--figures", "figures_dir", default="docs/results", show_default=True, help="Folder for the PNG."),
    click.option(
        "--limit-minutes",
        type=float,
        default=None,
        help="Start no new run after this many minutes; rerun the same command to resume.",
    ),
    click.option(
        "--model",
        "architecture",
        default="small_cnn",
        show_default=True,
        type=click.Choice(ARCHITECTURES),
        help="alexnet: the paper's AlexNet-style model (dropout makes its training non-deterministic).",
    ),
]


def mode_option(f):
    """``--dp-scaling``: the privacy mode an experiment runs in, with that mode's training."""
    from fedoracle.defaults import DEFAULTS, DP_SCALINGS

    return click.option(
        "--dp-scaling",
        "mode",
        default=DEFAULTS.dp_scaling,
        show_default=True,
        type=click.Choice(DP_SCALINGS),
        help=(
            "Privacy mode: 'record' = record-level DP-SGD at the defaults (ε for each device's whole task, one "
            "record); 'sample' (the paper's ÷D, no formal guarantee) and 'update' (whole-update DP) run with the "
            "paper's training (Adam, 3 epochs, S = 5) and ε per round. Results of 'record' are named *_dpsgd, of "
            "'update' *_update; 'sample' keeps the bare names."
        ),
    )(f)


def _common(f):
    f = mode_option(f)
    for option in reversed(common):
        f = option(f)
    return f


@click.group()
def experiment() -> None:
    """Reproduce the paper's figures (fast path) and check them against the full protocol."""


@experiment.command()
@_common
@click.option(
    "--dataset",
    default="fashion_mnist",
    show_default=True,
    type=click.Choice(DATASETS),
    help="fashion_mnist is the offline stand-in for the paper's CIFAR-10.",
)
@click.option("--devices", type=int, default=None, help="P [default: 10 reduced, 100 full].")
def fig4(
    mode, full, runs, data_path, rounds, results_dir, figures_dir, limit_minutes, architecture, dataset, devices
) -> None:
    """Figure 4 of the paper: accuracy vs λ and vs EMD, with and without the defence."""
    from experiments.config import fig4_grid
    from experiments.runner import run_grid

    grid = fig4_grid(
        full=full,
        runs=runs,
        dataset=dataset,
        data_path=data_path,
        devices=devices,
        rounds=rounds,
        architecture=architecture,
        mode=mode,
    )
    try:
        run_grid(
            grid,
            results_dir=results_dir,
            figures_dir=figures_dir,
            command=_command(),
            log=_echo,
            limit_seconds=None if limit_minutes is None else 60 * limit_minutes,
        )
    finally:
        _cleanup()


@experiment.command()
@_common
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS))
@click.option("--devices", "devices", default=None, help="Comma-separated P values [default: 10,100,200,300].")
@click.option("--delta-devices", type=int, default=None, help="P of the δ panel [default: 10 reduced, 100 full].")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Round-1 accuracy threshold, a fraction in [0, 1] [default: the data set's]; results named *_t<percent>.",
)
@click.option("--no-delta-panel", "no_delta", is_flag=True, help="Run the P panel only.")
def fig5(
    mode,
    full,
    runs,
    data_path,
    rounds,
    results_dir,
    figures_dir,
    limit_minutes,
    architecture,
    dataset,
    devices,
    delta_devices,
    threshold,
    no_delta,
) -> None:
    """Figure 5 of the paper: highest / minimum / average local-model accuracy vs P and vs δ."""
    from experiments.config import fig5_grid
    from experiments.runner import run_grid

    ps = tuple(int(p) for p in devices.split(",")) if devices else None
    grid = fig5_grid(
        full=full,
        runs=runs,
        dataset=dataset,
        data_path=data_path,
        devices=ps,
        rounds=rounds,
        delta_devices=delta_devices,
        architecture=architecture,
        mode=mode,
        threshold=threshold,
        delta_panel=not no_delta,
    )
    try:
        run_grid(
            grid,
            results_dir=results_dir,
            figures_dir=figures_dir,
            command=_command(),
            log=_echo,
            limit_seconds=None if limit_minutes is None else 60 * limit_minutes,
        )
    finally:
        _cleanup()


@experiment.command()
@click.option(
    "--figure",
    "figures",
    multiple=True,
    type=click.Choice(["fig4", "fig5"]),
    default=("fig4", "fig5"),
    show_default=True,
    help="Which figure's point to run through the protocol.",
)
@click.option("--devices", type=click.IntRange(min=1), default=10, show_default=True, help="Devices P of the run.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="FL rounds of the run.")
@click.option("--out", default="runs/agreement", show_default=True, help="Folder for the protocol runs.")
@click.option("--results", "results_dir", default="results", show_default=True)
@mode_option
def agree(figures, devices, rounds, out, results_dir, mode) -> None:
    """Run one point of each figure through the full protocol (Demo) and compare with the fast path.

    With DP the two paths draw different noise (OS entropy), so they agree in distribution only:
    a second fast-path run of the same config is the yardstick (fast path against itself).
    """
    import math

    from experiments.config import RunConfig, mode_settings
    from experiments.protocol import agreement

    settings = mode_settings(mode)
    fig5_delta = math.exp(-5) if mode != "record" else 1e-5
    points = {
        "fig4": RunConfig(dataset="fashion_mnist", devices=devices, rounds=rounds, flip_rate=0.2, emd=1.5, **settings),
        "fig5": RunConfig(
            dataset="mnist", devices=devices, rounds=rounds, flip_rate=0.2, emd=1.5, delta=fig5_delta, **settings
        ),
    }
    path = Path(results_dir) / f"{_stem('agreement', mode)}.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    try:
        for name in figures:
            _echo(f"{name}: protocol run of {points[name]}")
            res = agreement(points[name], out, log=_echo, noise_baseline=points[name].dp)
            res["protocol"].pop("report", None)
            doc[name] = res
            _echo(
                f"  same verdicts: {res['same_verdicts']}, max candidate diff {res['max_candidate_diff_bp']} bp, "
                f"max global diff {res['max_global_diff_bp']} bp, thresholds bound as assumed: "
                f"{res['thresholds_bound']}"
            )
            Path(results_dir).mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    finally:
        _cleanup()


@experiment.command()
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs (repetitions) per point.")
@click.option("--devices", type=click.IntRange(min=1), default=10, show_default=True, help="Devices P of the run.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="FL rounds of the run.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS))
@click.option("--results", "results_dir", default="results", show_default=True)
@click.option("--figures", "figures_dir", default="docs/results", show_default=True)
@mode_option
def attack(runs, devices, rounds, dataset, results_dir, figures_dir, mode) -> None:
    """Beyond the paper: an adaptive attacker crafting updates that pass the gate, vs median / trimmed mean."""
    from experiments.beyond import attack_grid, run_attacks
    from experiments.plots import bars

    try:
        doc = run_attacks(attack_grid(runs=runs, devices=devices, rounds=rounds, dataset=dataset, mode=mode), log=_echo)
    finally:
        _cleanup()
    from experiments.config import MODE_NAMES

    doc["mode"] = mode
    _save(doc, results_dir, _stem("attack", mode))
    means: dict[str, list[float]] = {}
    for row in doc["cases"]:
        means.setdefault(row["case"], []).append(100 * row["final_accuracy"])
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    bars(
        [(k, sum(v) / len(v)) for k, v in means.items()],
        Path(figures_dir) / f"{_stem('attack', mode)}.png",
        f"Adaptive attacker vs label flipping ({dataset}, P = {devices}, {rounds} rounds)\n"
        f"honest devices: {MODE_NAMES[mode]}, ε = 8, δ = 1e-5",
        "final global accuracy (%)",
    )


@experiment.command()
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Runs (repetitions) per point.")
@click.option("--members", type=int, default=200, show_default=True, help="Training examples of the attacked device.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Local training epochs of the attacked device.",
)
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS))
@click.option("--results", "results_dir", default="results", show_default=True)
def mia(runs, members, epochs, dataset, results_dir) -> None:
    """Beyond the paper: membership-inference advantage of a loss-threshold attack, ε = 8 vs non-DP."""
    from experiments.beyond import membership_inference

    try:
        doc = membership_inference(dataset=dataset, members=members, epochs=epochs, runs=runs, log=_echo)
    finally:
        _cleanup()
    _save(doc, results_dir, "mia")


@experiment.command()
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs (repetitions) per point.")
@click.option("--devices", type=click.IntRange(min=1), default=10, show_default=True, help="Devices P of the run.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="FL rounds of the run.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS))
@click.option("--results", "results_dir", default="results", show_default=True)
def noise(runs, devices, rounds, dataset, results_dir) -> None:
    """The paper's worry: honest DP devices rejected by the gate, noise per sample (÷D) vs per update."""
    from experiments.beyond import noise_grid, run_noise

    try:
        doc = run_noise(noise_grid(runs=runs, devices=devices, rounds=rounds, dataset=dataset), log=_echo)
    finally:
        _cleanup()
    _save(doc, results_dir, "noise")


@experiment.command()
@click.option("--quick", is_flag=True, help="A test-sized grid (P = 10, 2 rounds, 3 attacks × 3 defences, MNIST).")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    type=click.Choice(DATASETS),
    default=None,
    help="Data sets [default: mnist and fashion_mnist].",
)
@click.option("--devices", type=click.IntRange(min=5), default=None, help="Devices P [default: 50].")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Rounds before the attack [default: 4].")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Attacked rounds [default: 1].")
@click.option(
    "--samples", type=click.IntRange(min=10), default=None, help="Examples per device [default: the fleet's rule]."
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Local epochs [default: 2].")
@click.option("--no-dp", is_flag=True, help="Without the task's DP (record-level DP-SGD by default).")
@click.option("--results", "results_dir", default="results", show_default=True, help="Folder for JSON and CSV.")
@click.option("--figures", "figures_dir", default="docs/results", show_default=True, help="Folder for the PNG.")
@click.option(
    "--limit-minutes",
    type=float,
    default=None,
    help="Start no new pair after this many minutes; rerun the same command to resume.",
)
def robust(
    quick, datasets, devices, warmup, rounds, samples, epochs, no_dp, results_dir, figures_dir, limit_minutes
) -> None:
    """Poisoning defence: every (attack × defence) pair, 20% attackers, DP in force; table and figure."""
    from dataclasses import replace

    from experiments.robust import RobustGrid, quick_grid, run_grid

    grid = quick_grid() if quick else RobustGrid()
    changes = {
        k: v
        for k, v in {
            "datasets": tuple(datasets) or None,
            "devices": devices,
            "warmup_rounds": warmup,
            "rounds": rounds,
            "samples_per_device": samples,
            "epochs": epochs,
        }.items()
        if v is not None
    }
    if no_dp:
        changes["dp"] = False
    grid = replace(grid, **changes)
    if not quick:
        grid = replace(
            grid,
            reduced=(
                f"{grid.warmup_rounds} rounds without attack shared by every pair, then {grid.rounds} attacked "
                "round(s) per pair; one run per pair; i.i.d. shards, no skewed devices",
            ),
        )
    try:
        run_grid(
            grid,
            results_dir=results_dir,
            figures_dir=figures_dir,
            command=_command(),
            log=_echo,
            limit_seconds=None if limit_minutes is None else 60 * limit_minutes,
            name="robust_quick" if quick else "robust",
        )
    finally:
        _cleanup()


@experiment.command()
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs (repetitions) per point.")
@click.option("--devices", type=click.IntRange(min=1), default=10, show_default=True, help="Devices P of the run.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="FL rounds of the run.")
@click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS))
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0.0, min_open=True),
    default=8.0,
    show_default=True,
    help="ε per device for the whole task (δ = 1e-5), the same for every mode.",
)
@click.option("--results", "results_dir", default="results", show_default=True)
@click.option("--figures", "figures_dir", default="docs/results", show_default=True)
def modes(runs, devices, rounds, dataset, epsilon, results_dir, figures_dir) -> None:
    """The three privacy modes side by side at the same total ε: accuracy, the gate, both membership audits."""
    from experiments.beyond import modes_grid, run_modes
    from experiments.plots import bars

    try:
        doc = run_modes(
            modes_grid(runs=runs, devices=devices, rounds=rounds, dataset=dataset, epsilon=epsilon), log=_echo
        )
    finally:
        _cleanup()
    _save(doc, results_dir, "modes")
    means: dict[str, list[float]] = {}
    for row in doc["cases"]:
        means.setdefault(row["case"], []).append(100 * row["final_accuracy"])
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    bars(
        [(k, sum(v) / len(v)) for k, v in means.items()],
        Path(figures_dir) / "modes.png",
        f"Privacy modes at ε = {epsilon:g} per device for all {rounds} rounds, δ = 1e-5\n"
        f"(÷D: nominal, no formal guarantee; {dataset}, P = {devices})",
        "final global accuracy (%)",
    )


@experiment.command()
@click.option(
    "--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Runs (seeds) at the smallest P."
)
@click.option("--results", "results_dir", default="results", show_default=True)
def round1(runs, results_dir) -> None:
    """What honest devices reach in round 1 under record-level DP-SGD (ε = 8): the round-1 thresholds' data."""
    from experiments.beyond import round_one

    try:
        doc = round_one(runs=runs, log=_echo)
    finally:
        _cleanup()
    _save(doc, results_dir, "round1")
