"""Runs a grid on the fast path, and writes the results as JSON and CSV and the figures as PNG.

It saves after every run, so a cut-off grid keeps what it did and resumes.

Files, for a grid named ``fig4`` (``fig4_<dataset>`` when the data set is not the figure's default,
then ``_dpsgd`` for record-level DP-SGD and ``_update`` for whole-update DP; the paper's ÷D mode
keeps the bare name its earlier results were written under): ``results/fig4.json`` (every run's
summary and the grid's description), ``results/fig4_runs.csv`` (one row per run),
``results/fig4_summary.csv`` (highest / minimum / average over runs per point) and
``docs/results/fig4.png``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments.config import MODE_SUFFIX, Grid, RunConfig
from experiments.metrics import summarize

DEFAULT_DATASET = {"fig4": "fashion_mnist", "fig5": "mnist"}


def stem(grid: Grid) -> str:
    """File name stem of a grid's results."""
    datasets = {cfg.dataset for _, _, cfg in grid.points}
    ds = datasets.pop() if len(datasets) == 1 else "mixed"
    name = grid.name if DEFAULT_DATASET.get(grid.name) == ds else f"{grid.name}_{ds}"
    models = sorted({cfg.architecture for _, _, cfg in grid.points} - {"small_cnn"})
    mode = MODE_SUFFIX.get(grid.mode, grid.mode)
    thresholds = sorted({f"t{round(100 * c.threshold)}" for _, _, c in grid.points if c.threshold is not None})
    return "_".join([name, *models, *([mode] if mode else []), *thresholds])


def run_summary(panel: str, x: float, cfg: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    """What a grid keeps of one run: everything but per-device verdicts."""
    return {
        "panel": panel,
        "x": x,
        "key": cfg.key(),
        "config": result["config"],
        "final_accuracy": result["final_accuracy"],
        "global_accuracy": result["global_accuracy"],
        "final_threshold": result["final_threshold"],
        "epsilon_spent": result["epsilon_spent"],
        "detection": result["detection"],
        "candidates": result["candidates"],
        "rounds": [{k: v for k, v in r.items() if k != "verdicts"} for r in result["rounds"]],
        "seconds": result["seconds"],
    }


def run_grid(
    grid: Grid,
    *,
    results_dir: str | Path = "results",
    figures_dir: str | Path = "docs/results",
    command: str = "",
    log: Any = print,
    limit_seconds: float | None = None,
) -> dict[str, Any]:
    """Runs every point of ``grid`` not already in its results file, then writes CSV and figures.

    Args:
        grid: the runs.
        results_dir: where the JSON and CSV go.
        figures_dir: where the PNG goes.
        command: the command line that regenerates the grid (recorded in the JSON).
        log: ``callable(str)`` for progress.
        limit_seconds: stop starting new runs after this long (what ran is kept; rerun to resume).

    Returns:
        The results document (as written to JSON).
    """
    from experiments.simulate import simulate

    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem(grid)}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    by_key = {r["key"]: r for r in previous.get("runs", [])}  # a config shared by two panels runs once
    doc = {
        "figure": grid.name,
        "mode": grid.mode,
        "command": command,
        "reduced": grid.reduced,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "planned_runs": len(grid.points),
        "distinct_runs": len({c.key() for _, _, c in grid.points}),
        "wall_seconds": previous.get("wall_seconds", 0),
        "runs": [],
    }
    t0 = time.perf_counter()
    todo = [(p, x, c) for p, x, c in grid.points if c.key() not in by_key]
    distinct = len({c.key() for _, _, c in todo})
    log(
        f"{grid.name}: {doc['distinct_runs']} distinct runs, {doc['distinct_runs'] - distinct} already done, "
        f"{distinct} to run"
    )
    n = 0
    for panel, x, cfg in grid.points:
        summary = by_key.get(cfg.key())
        if summary is None:
            if limit_seconds is not None and time.perf_counter() - t0 > limit_seconds:
                continue  # past the time limit: leave it for the next invocation
            n += 1
            result = simulate(cfg, keep_verdicts=False)
            summary = by_key[cfg.key()] = run_summary(panel, x, cfg, result)
            doc["wall_seconds"] = round(doc["wall_seconds"] + result["seconds"], 1)
            log(
                f"[{n}/{distinct}] {panel}={x} {cfg.variant} P={cfg.devices} seed={cfg.seed}: "
                f"final {100 * (result['final_accuracy'] or 0):.2f}%, honest rejected "
                f"{result['detection']['honest_rejected'] or 0:.2f}, {result['seconds']:.0f}s"
            )
        doc["runs"].append({**summary, "panel": panel, "x": x})
        doc["completed_runs"] = len(doc["runs"])
        placed = {r["key"] for r in doc["runs"]}  # keep finished runs not yet placed, should this be cut off
        _write_json(path, {**doc, "runs": doc["runs"] + [r for k, r in by_key.items() if k not in placed]})
    if len(doc["runs"]) < len(grid.points):
        log(
            f"time limit reached: {len(grid.points) - len(doc['runs'])} grid points left "
            "(rerun the same command to resume)"
        )
    doc["completed_runs"] = len(doc["runs"])
    _write_json(path, doc)
    write_csv(doc, results_dir / f"{stem(grid)}_runs.csv", results_dir / f"{stem(grid)}_summary.csv")
    if doc["runs"]:
        from experiments import plots

        figures_dir.mkdir(parents=True, exist_ok=True)
        getattr(plots, grid.name)(doc, figures_dir / f"{stem(grid)}.png")
    return doc


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


RUN_COLUMNS = (
    "panel",
    "x",
    "variant",
    "dataset",
    "devices",
    "rounds",
    "flip_rate",
    "emd",
    "epsilon",
    "delta",
    "dp_scaling",
    "aggregation",
    "attack",
    "seed",
    "final_accuracy",
    "global_accuracy",
    "final_threshold",
    "cand_max",
    "cand_min",
    "cand_mean",
    "honest_cand_mean",
    "malicious_precision",
    "malicious_recall",
    "unreliable_precision",
    "unreliable_recall",
    "bad_precision",
    "bad_recall",
    "honest_rejected",
    "epsilon_spent",
    "seconds",
)


def run_row(r: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a run summary."""
    c, d, cand = r["config"], r["detection"], r["candidates"]
    return {
        "panel": r["panel"],
        "x": r["x"],
        **{
            k: c[k]
            for k in (
                "variant",
                "dataset",
                "devices",
                "rounds",
                "flip_rate",
                "emd",
                "epsilon",
                "delta",
                "dp_scaling",
                "aggregation",
                "attack",
                "seed",
            )
        },
        "final_accuracy": r["final_accuracy"],
        "global_accuracy": r["global_accuracy"],
        "final_threshold": r["final_threshold"],
        "cand_max": (cand["all"] or {}).get("max"),
        "cand_min": (cand["all"] or {}).get("min"),
        "cand_mean": (cand["all"] or {}).get("mean"),
        "honest_cand_mean": (cand["honest"] or {}).get("mean"),
        **{f"{k}_{m}": d[k][m] for k in ("malicious", "unreliable", "bad") for m in ("precision", "recall")},
        "honest_rejected": d["honest_rejected"],
        "epsilon_spent": r["epsilon_spent"],
        "seconds": r["seconds"],
    }


SUMMARY_METRICS = (
    "final_accuracy",
    "global_accuracy",
    "final_threshold",
    "cand_max",
    "cand_min",
    "cand_mean",
    "malicious_recall",
    "unreliable_recall",
    "bad_precision",
    "honest_rejected",
    "epsilon_spent",
)


def summary_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Highest / minimum / average over runs of each metric, per (panel, x, variant, aggregation, attack)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in doc["runs"]:
        row = run_row(r)
        groups[(row["panel"], row["x"], row["variant"], row["aggregation"], row["attack"])].append(row)
    out = []
    for (panel, x, variant, aggregation, attack), rows in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        entry: dict[str, Any] = {
            "panel": panel,
            "x": x,
            "variant": variant,
            "aggregation": aggregation,
            "attack": attack,
            "runs": len(rows),
        }
        for m in SUMMARY_METRICS:
            s = summarize([row[m] for row in rows])
            entry.update({f"{m}_mean": s["mean"], f"{m}_min": s["min"], f"{m}_max": s["max"]})
        out.append(entry)
    return out


def write_csv(doc: dict[str, Any], runs_path: Path, summary_path: Path) -> None:
    """Writes the per-run and per-point CSV files."""
    with open(runs_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        for r in doc["runs"]:
            w.writerow(_fmt(run_row(r)))
    rows = summary_rows(doc)
    with open(summary_path, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for row in rows:
                w.writerow(_fmt(row))


def _fmt(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()}
