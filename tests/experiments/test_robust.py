"""``fedoracle experiment robust``: the (attack × defence) grid on the fast path, its table and its summary."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from experiments.robust import defences, quick_grid, run_grid, summarise


def _row(attack: str, defence: str, acc: float, honest: float = 0.0) -> dict:
    return {
        "dataset": "mnist",
        "attack": attack,
        "defence": defence,
        "final_accuracy": acc,
        "honest_rejected": honest,
        "malicious_accepted": 0,
        "malicious_submissions": 10,
    }


def test_summary_finds_the_strongest_attack_and_the_best_defence() -> None:
    """Drops are against the gate's no-attack run; the best defence is the one whose worst attack costs least."""
    rows = [
        _row("none", "gate (paper)", 0.90),
        _row("min_max", "gate (paper)", 0.80),
        _row("fang_krum", "gate (paper)", 0.85),
        _row("none", "median", 0.895, honest=0.02),
        _row("min_max", "median", 0.893, honest=0.04),
        _row("fang_krum", "median", 0.889),
    ]
    s = summarise(rows)["mnist"]
    assert s["per_defence"]["gate (paper)"]["strongest_attack"] == "min_max"
    assert s["per_defence"]["gate (paper)"]["drop_pp"] == pytest.approx(10.0)
    assert s["per_defence"]["median"]["strongest_attack"] == "fang_krum"
    assert s["best_defence"] == "median" and s["goal_met"] is False  # 1.1 pp > 1 pp
    rows[-1]["final_accuracy"] = 0.8925
    assert summarise(rows)["mnist"]["goal_met"] is True
    rows[3]["honest_rejected"] = 0.06  # more than 5% honest rejected: the goal is not met
    assert summarise(rows)["mnist"]["goal_met"] is False


def test_defences_cover_every_rule_and_the_loss_margin() -> None:
    """The grid's defences: the paper's gate, the loss margin and each of the five rules."""
    ds = defences(10)
    assert ds[0].name == "gate (paper)" and ds[0].rule.name == "fedavg" and ds[0].loss_margin_bp == 0
    assert {d.rule.name for d in ds} == {"fedavg", "median", "trimmed_mean", "multi_krum", "fltrust"}
    assert any(d.loss_margin_bp > 0 for d in ds)
    assert all(d.rule.param == 10 for d in ds if d.rule.name == "multi_krum")


def test_a_small_grid_runs_writes_its_table_and_resumes(tmp_path) -> None:
    """Every pair gets a row with its accuracy and rejections; the JSON, CSV and figure are written; a rerun resumes."""
    grid = replace(quick_grid(), attacks=("none", "min_max"), defence_names=("Multi-Krum f=2",), samples_per_device=60)
    lines: list[str] = []
    doc = run_grid(grid, results_dir=tmp_path, figures_dir=tmp_path, log=lines.append, name="r")
    assert doc["complete"] and len(doc["rows"]) == 2
    for row in doc["rows"]:
        assert 0.0 <= row["final_accuracy"] <= 1.0
        assert row["malicious_submissions"] == 2 and row["honest_submissions"] == 8
        assert 0.0 <= row["honest_rejected"] <= 1.0
    assert all("selected_malicious" in r["rounds"][-1] for r in doc["rows"])
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["rows"] == doc["rows"] and on_disk["warmup"]["mnist"]["rounds"]
    csv_lines = (tmp_path / "r.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,attack,defence,final_accuracy") and len(csv_lines) == 3
    assert (tmp_path / "r.png").stat().st_size > 0
    again = run_grid(grid, results_dir=tmp_path, figures_dir=None, log=lines.append, name="r")
    assert again["rows"] == doc["rows"]  # nothing re-run
