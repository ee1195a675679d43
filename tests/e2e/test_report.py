"""The demo's ``accuracy.png``: titled with the run's configuration, and a legend that hides no point."""

from __future__ import annotations

import numpy as np
import pytest

from demo.report import accuracy_figure, write_report


def report(dp: bool = True) -> dict:
    """A report whose points fill the plot: the legend has nowhere inside the axes to go."""
    classes = {"honest": (0.97, 0.99, 0.995), "unreliable": (0.5, 0.3, 0.1), "malicious": (0.0, 0.02, 0.01)}
    return {
        "task_id": 7,
        "config": {
            "dataset": "fashion_mnist",
            "architecture": "small_cnn",
            "count": 20,
            "epsilon": 8.0,
            "delta": 1e-5,
            "dp_scaling": "sample",
            "dp": dp,
        },
        "rounds": [{"round": r, "global_accuracy": g} for r, g in ((1, 0.05), (2, 0.6), (3, 0.98))],
        "candidate_accuracy_by_round_and_class": {
            f"{r}/{kind}": {"mean": means[r - 1]} for kind, means in classes.items() for r in (1, 2, 3)
        },
        "threshold_by_round": {"1": 0.5, "2": 0.55, "3": 0.93},
        "verdicts_by_class": {},
        "rewards_wei_by_class": {},
    }


def test_the_title_names_the_configuration():
    fig = accuracy_figure(report())
    title = fig.axes[0].get_title()
    for part in ("Task 7", "fashion_mnist", "small_cnn", "P = 20", "ε = 8.00 at δ = 1e-05, per device", "over 1 round"):
        assert part in title.replace("\n", " "), title
    assert "no DP" in accuracy_figure(report(dp=False)).axes[0].get_title()
    record = report()
    record["config"] |= {"dp_scaling": "record", "rounds": 3}  # DP-SGD: the ε is the whole task's budget
    title = accuracy_figure(record).axes[0].get_title().replace("\n", " ")
    assert "one record" in title and "over 3 rounds" in title, title


def test_the_legend_hides_no_point():
    fig = accuracy_figure(report())
    fig.canvas.draw()
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent()
    points = np.vstack([ax.transData.transform(line.get_xydata()) for line in ax.get_lines()])
    inside = [tuple(p) for p in points if box.x0 <= p[0] <= box.x1 and box.y0 <= p[1] <= box.y1]
    assert inside == [], f"the legend covers {len(inside)} plotted points"
    # ... and the legend is still on the canvas (not pushed off the saved image)
    canvas = fig.bbox
    assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1


@pytest.mark.parametrize("name", ["accuracy.png", "verdicts.png"])
def test_write_report_writes_both_figures(tmp_path, name):
    write_report(report(), tmp_path)
    assert (tmp_path / name).stat().st_size > 10_000
