"""Figures mirroring the paper's Fig. 4 and Fig. 5.

Lines are averages over runs, bands span the lowest to the highest run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from experiments.runner import run_row

COLORS = {"defended": "tab:blue", "undefended": "tab:red", "nondp": "tab:gray"}
PRIVACY = {  # how a figure names its privacy mode, ε's unit and what ε covers
    "record": "record-level DP-SGD, ε = {eps:g} per device for all {rounds} rounds, one record",
    "sample": "the paper's ÷D, ε = {eps:g} per round (no formal guarantee)",
    "update": "whole-update DP, ε = {eps:g} per round, one device's update",
}


def privacy_line(doc: dict[str, Any]) -> str:
    """The figure's privacy mode, ε, its unit, δ and rounds, in words (from its DP runs)."""
    dp = [r["config"] for r in doc["runs"] if r["config"]["variant"] != "nondp"] or [doc["runs"][0]["config"]]
    c = dp[0]
    deltas = sorted({d["delta"] for d in dp})
    delta = f"δ = {deltas[0]:.3g}" if len(deltas) == 1 else "δ as on the axis"
    template = PRIVACY.get(c["dp_scaling"], "{eps:g}")
    return f"{template.format(eps=c['epsilon'], rounds=c['rounds'])}, {delta}"


def _dp_label(doc: dict[str, Any]) -> str:
    c = doc["runs"][0]["config"]
    return {"record": "DP-SGD", "sample": "÷D", "update": "whole-update DP"}.get(c["dp_scaling"], "DP")


def _series(doc: dict[str, Any], panel: str, metric: str, variant: str | None = None) -> tuple[list, list, list, list]:
    """x, mean, min, max of ``metric`` over the runs of one panel (and variant)."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for r in doc["runs"]:
        row = run_row(r)
        if row["panel"] == panel and (variant is None or row["variant"] == variant) and row[metric] is not None:
            by_x[float(row["x"])].append(float(row[metric]))
    xs = sorted(by_x)
    return (xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs])


def _band(ax: Any, xs: list, mean: list, lo: list, hi: list, label: str, color: str, **kw: Any) -> None:
    if not xs:
        return
    ax.plot(xs, [100 * m for m in mean], marker="o", color=color, label=label, **kw)
    ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=color, alpha=0.18, lw=0)


def _nondp(ax: Any, doc: dict[str, Any]) -> None:
    xs, mean, lo, hi = _series(doc, "nondp", "final_accuracy")
    if mean:
        m = sum(mean) / len(mean)
        ax.axhline(100 * m, color=COLORS["nondp"], ls="--", label=f"non-DP, defended ({100 * m:.2f}%)")


def fig4(doc: dict[str, Any], path: Path) -> None:
    """Accuracy against λ and against EMD, with and without the defence; the gate's detection below."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    dataset = doc["runs"][0]["config"]["dataset"]
    for col, (panel, xlabel) in enumerate(
        (("lambda", "λ (share of a malicious device's labels flipped)"), ("emd", "EMD of unreliable devices' labels"))
    ):
        ax = axes[0][col]
        for variant in ("defended", "undefended"):
            _band(
                ax,
                *_series(doc, panel, "final_accuracy", variant),
                label=f"{'with' if variant == 'defended' else 'without'} defence ({_dp_label(doc)})",
                color=COLORS[variant],
            )
        _nondp(ax, doc)
        ax.set_ylabel(f"global accuracy, {dataset} test set (%)")
        ax.set_title(f"({'ab'[col]}) accuracy vs {'λ (EMD = 1.5)' if panel == 'lambda' else 'EMD (λ = 20%)'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1][col]
        for metric, color, label in (
            ("malicious_recall", "tab:purple", "malicious rejected (recall)"),
            ("unreliable_recall", "tab:orange", "unreliable rejected (recall)"),
            ("bad_precision", "tab:green", "rejections that are bad (precision)"),
            ("honest_rejected", "tab:red", f"honest {_dp_label(doc)} rejected"),
        ):
            _band(ax, *_series(doc, panel, metric, "defended"), label=label, color=color)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("defended: share (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    runs = max((r["config"]["seed"] for r in doc["runs"]), default=0) + 1
    fig.suptitle(
        f"Fig. 4 reproduction — {dataset}, P = {doc['runs'][0]['config']['devices']}, "
        f"{doc['runs'][0]['config']['rounds']} rounds, {runs} runs (band: min–max over runs)\n{privacy_line(doc)}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig5(doc: dict[str, Any], path: Path) -> None:
    """Highest, minimum and average local-model accuracy (and the global model's) against P and δ."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    dataset = doc["runs"][0]["config"]["dataset"]
    record = doc["runs"][0]["config"]["dp_scaling"] == "record"
    p_delta = "δ = 1e-5" if record else "δ = e^-5"
    d_axis = "−log10 δ (δ of the whole task)" if record else "−ln δ (δ per round)"
    panels = (("devices", f"number of devices P ({p_delta})"), ("delta", d_axis))
    for ax, (panel, xlabel) in zip(axes, panels, strict=True):
        for metric, color, label in (
            ("cand_max", "tab:green", "highest local model"),
            ("cand_mean", "tab:blue", "average local model (paper's threshold)"),
            ("cand_min", "tab:red", "minimum local model"),
            ("final_accuracy", "black", "global model (whole test set)"),
        ):
            _band(ax, *_series(doc, panel, metric), label=label, color=color)
        if panel == "devices":
            ax.set_xscale("log")
            ax.set_xticks([10, 100, 200, 300], ["10", "100", "200", "300"])
        else:
            _nondp(ax, doc)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"accuracy, {dataset} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    runs = max((r["config"]["seed"] for r in doc["runs"]), default=0) + 1
    fig.suptitle(
        f"Fig. 5 reproduction — {dataset}, last round's candidates, {runs} runs (band: min–max over runs)\n"
        f"{privacy_line(doc)}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars(rows: list[tuple[str, float]], path: Path, title: str, ylabel: str) -> None:
    """A bar chart of labelled values (the beyond-the-paper experiments)."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    ax.bar(range(len(rows)), [v for _, v in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), [k for k, _ in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
