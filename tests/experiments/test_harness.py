"""The experiment harness on a tiny grid.

The same fleet and task as the protocol builds, metrics, a simulated run, and a grid written to
JSON, CSV and PNG and resumed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from experiments.config import PAPER_DELTAS, Grid, RunConfig, fig4_grid, fig5_grid
from experiments.metrics import candidate_stats, detection

TINY = RunConfig(  # the default privacy mode (record-level DP-SGD); 600 examples x 2 epochs reach the threshold
    dataset="mnist",
    devices=5,
    rounds=2,
    samples_per_device=600,
    epochs=2,
    threshold=0.2,
    flip_rate=1.0,
    emd=1.5,
    test_examples=600,
    full_test=False,
)


@pytest.mark.parametrize("devices", [10, 30])
def test_fleet_is_the_one_make_trainers_builds(mnist, devices):
    """Both sides call the one shard-size rule and get the same shards.

    At P = 30 the rule matters: 0.9·60,000 / 30 = 1,800, not 2,000.
    """
    from devices.fleet import FleetConfig
    from devices.training import make_trainers
    from experiments.simulate import build_fleet

    cfg = replace(TINY, devices=devices, seed=3, flip_rate=0.2, emd=1.0, samples_per_device=None)
    trainers = make_trainers(FleetConfig(count=devices, seed=3, flip_rate=0.2, emd=1.0, dataset="mnist"))
    fleet = build_fleet(cfg, mnist)
    assert [d.kind for d in fleet] == [k for k, _ in trainers]
    assert sorted(d.kind for d in fleet).count("malicious") == round(0.2 * devices)
    assert {len(d.y) for d in fleet} == {min(2_000, 54_000 // devices)}
    for dev, (_, t) in zip(fleet, trainers, strict=True):
        assert dev.seed == t.seed
        assert np.array_equal(dev.x, t.x) and np.array_equal(dev.y, t.y)


def test_task_is_the_one_the_publisher_builds(tmp_path, mnist):
    from experiments.simulate import build_task
    from fedoracle.learning.data import encode_group
    from publisher.publish import TaskPlan, hidden_test_set

    cfg = replace(TINY, task_seed=4, rounds=3)
    task = build_task(cfg, mnist)
    plan = TaskPlan(rounds=3, seed=4, test_examples=600)
    hidden = hidden_test_set(mnist.x_test, mnist.y_test, plan, tmp_path)
    assert [encode_group(x, y) for x, y in task.groups] == [hidden.group_bytes(i) for i in range(6)]
    assert sorted(i for ids in task.round_groups.values() for i in ids) == list(range(6))
    from fedoracle.learning.models import initial_weights

    assert all(np.array_equal(a, b) for a, b in zip(task.initial, initial_weights(task.spec, 4), strict=True))


def test_detection_counts_rejections_as_positives():
    verdicts = (
        [{"kind": "malicious", "accepted": False}] * 2
        + [{"kind": "unreliable", "accepted": False}]
        + [{"kind": "unreliable", "accepted": True}]
        + [{"kind": "honest", "accepted": True}] * 5
        + [{"kind": "honest", "accepted": False}]
    )
    d = detection(verdicts)
    assert d["malicious"] == {"precision": 0.5, "recall": 1.0}
    assert d["unreliable"] == {"precision": 0.25, "recall": 0.5}
    assert d["bad"] == {"precision": 0.75, "recall": 0.75}
    assert d["honest_rejected"] == pytest.approx(1 / 6)
    assert detection([])["malicious"]["precision"] is None
    s = candidate_stats([{"kind": "honest", "accuracy_bp": 9000}, {"kind": "malicious", "accuracy_bp": 100}])
    assert s["all"] == {"max": 0.9, "min": 0.01, "mean": pytest.approx(0.455)} and s["unreliable"] is None


def test_simulated_task_gates_label_flippers_and_is_deterministic_but_its_noise_is_not():
    """The gate and the threshold rule on a tiny task; reproducible without DP, fresh noise with it.

    With DP the noise comes from the OS's entropy (never a seed), so two DP runs of the same
    config differ in their candidates' accuracies while the non-DP run repeats bit for bit.
    """
    from experiments.simulate import simulate

    res = simulate(TINY)
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    assert res["rounds"][0]["threshold_bp"] == 2000
    assert res["rounds"][1]["threshold_bp"] >= 2000  # the dynamic threshold only goes up
    kinds = [v["kind"] for v in res["rounds"][0]["verdicts"]]
    assert kinds.count("malicious") == 1 and kinds.count("unreliable") == 1
    assert res["detection"]["malicious"]["recall"] == 1.0  # every label flipper rejected
    assert res["detection"]["honest_rejected"] == 0.0
    assert 7.9 <= res["epsilon_spent"] <= 8.0  # ε = 8 is the whole task's budget: spent, never exceeded
    assert res["rounds"][1]["global_accuracy_bp"] > res["rounds"][0]["global_accuracy_bp"]
    again = simulate(TINY)
    assert again["rounds"] != res["rounds"]  # fresh noise: the same seeds give other candidates
    assert [v["kind"] for v in again["rounds"][0]["verdicts"]] == kinds  # the same fleet and data
    plain = replace(TINY, rounds=1, variant="nondp")
    assert simulate(plain)["rounds"] == simulate(plain)["rounds"]  # without noise: bit for bit
    open_gate = simulate(replace(TINY, variant="undefended"))
    assert all(v["accepted"] for r in open_gate["rounds"] for v in r["verdicts"])
    assert [v["kind"] for v in open_gate["rounds"][0]["verdicts"]] == kinds


def test_grid_writes_json_csv_png_and_resumes(tmp_path):
    from experiments.runner import run_grid

    grid = Grid("fig4", reduced=["tiny"])
    for variant in ("defended", "undefended"):
        grid.points.append(("lambda", 1.0, replace(TINY, rounds=1, variant=variant)))
    grid.points.append(("nondp", 1.0, replace(TINY, rounds=1, variant="nondp")))
    lines = []
    doc = run_grid(grid, results_dir=tmp_path / "r", figures_dir=tmp_path / "f", log=lines.append)
    assert doc["completed_runs"] == 3
    saved = json.loads((tmp_path / "r" / "fig4_mnist_dpsgd_t20.json").read_text())  # *_dpsgd, threshold 0.2: _t20
    assert {r["config"]["variant"] for r in saved["runs"]} == {"defended", "undefended", "nondp"}
    assert saved["mode"] == "record"
    rows = list(csv.DictReader(open(tmp_path / "r" / "fig4_mnist_dpsgd_t20_runs.csv")))
    assert len(rows) == 3 and float(rows[0]["final_threshold"]) == 0.2 and rows[0]["dp_scaling"] == "record"
    summary = list(csv.DictReader(open(tmp_path / "r" / "fig4_mnist_dpsgd_t20_summary.csv")))
    assert {r["variant"] for r in summary} == {"defended", "undefended", "nondp"}
    assert (tmp_path / "f" / "fig4_mnist_dpsgd_t20.png").stat().st_size > 20_000
    lines.clear()
    run_grid(grid, results_dir=tmp_path / "r", figures_dir=tmp_path / "f", log=lines.append)
    assert lines[0].endswith("3 already done, 0 to run")
    # A config shared by two panels (Fig. 4's λ = 20% / EMD = 1.5 point) runs once and is reported in both.
    grid.points.append(("emd", 1.5, replace(TINY, rounds=1, variant="defended")))
    lines.clear()
    doc = run_grid(grid, results_dir=tmp_path / "r", figures_dir=tmp_path / "f", log=lines.append)
    assert lines == [line for line in lines if not line.startswith("[")]  # nothing simulated
    assert [r["panel"] for r in doc["runs"]] == ["lambda", "lambda", "nondp", "emd"]
    assert doc["runs"][3]["final_accuracy"] == doc["runs"][0]["final_accuracy"]


def test_paper_grids_cover_the_paper_values():
    full4, full5 = fig4_grid(full=True), fig5_grid(full=True, mode="sample")  # the paper's δ axis is its ÷D
    assert {x for p, x, _ in full4.points if p == "lambda"} >= {0.05, 0.10, 0.15, 0.20}
    assert {x for p, x, _ in full4.points if p == "emd"} == {0.0, 0.5, 1.0, 1.5}
    assert {c.seed for _, _, c in full4.points} == set(range(10)) and not full4.reduced
    assert {x for p, x, _ in full5.points if p == "devices"} == {10, 100, 200, 300}
    assert {x for p, x, _ in full5.points if p == "delta"} == {1, 3, 5, 6}
    assert {c.epsilon for _, _, c in full5.points} == {8.0}
    reduced = fig4_grid()
    assert len(reduced.points) < len(full4.points) and reduced.reduced


@pytest.mark.parametrize("mode", ["record", "sample", "update"])
def test_grids_run_in_the_mode_asked_for_and_say_so(mode):
    from experiments.config import MODE_NAMES, RECORD_DELTAS
    from experiments.runner import stem
    from fedoracle.defaults import PAPER_DP

    g4, g5 = fig4_grid(mode=mode, runs=1), fig5_grid(mode=mode, runs=1)
    assert g4.mode == g5.mode == mode and f"privacy: {MODE_NAMES[mode]}" in g4.reduced
    assert {c.dp_scaling for _, _, c in g4.points + g5.points} == {mode}
    assert stem(g4) == {"record": "fig4_dpsgd", "sample": "fig4", "update": "fig4_update"}[mode]
    deltas = {c.delta for p, _, c in g5.points if p == "delta"}
    p_delta = {c.delta for p, _, c in g5.points if p == "devices"}
    if mode == "record":  # δ is the task's, enters σ's solution, and sits below 1/D
        assert deltas == set(RECORD_DELTAS) and p_delta == {1e-5} and max(deltas) < 1 / 2_000
        assert {c.optimizer for _, _, c in g4.points} == {"sgd"}
        assert {x for p, x, _ in g5.points if p == "delta"} == {4, 5, 6, 8}  # −log10 δ
    else:  # the paper's: δ per release, the paper's axis, the paper's training
        assert deltas == set(PAPER_DELTAS) and [*p_delta] == [pytest.approx(np.exp(-5))]
        assert all(getattr(c, k) == PAPER_DP[k] for _, _, c in g4.points for k in ("optimizer", "epochs", "clip"))
    with pytest.raises(ValueError, match="unknown privacy mode"):
        fig4_grid(mode="none")


def test_a_p_panel_with_its_own_round_one_threshold_is_named_apart():
    from experiments.runner import stem

    grid = fig5_grid(runs=1, threshold=0.2, delta_panel=False, devices=(100, 300))
    assert [p for p, _, _ in grid.points] == ["devices", "devices", "nondp"]
    assert {c.initial_threshold for _, _, c in grid.points} == {0.2}
    assert stem(grid) == "fig5_dpsgd_t20" and "round-1 threshold 0.2" in grid.reduced
    assert stem(fig5_grid(runs=1)) == "fig5_dpsgd"  # the default threshold keeps the plain name


@pytest.mark.parametrize("name", ["fig4", "fig5"])
def test_the_paper_mode_resumes_the_results_it_wrote_before_dp_sgd(name):
    """``--dp-scaling sample`` names every run of the committed ÷D results: nothing of them is lost or re-run."""
    from pathlib import Path

    from experiments.runner import stem

    grid = {"fig4": fig4_grid, "fig5": fig5_grid}[name](mode="sample", runs=3)
    assert stem(grid) == name
    saved = json.loads((Path(__file__).parents[2] / "results" / f"{name}.json").read_text())
    assert {r["key"] for r in saved["runs"]} == {c.key() for _, _, c in grid.points}


def test_grid_shards_fit_the_training_set(mnist):
    """The fleet's default shard (N_train // P) runs a class dry at P = 100; the grids' shards do not."""
    from experiments.config import grid_shard
    from fedoracle.learning.partition import fleet_kinds, partition

    with pytest.raises(ValueError, match="samples left"):
        partition(mnist.y_train, fleet_kinds(100, 0), 60_000 // 100, 0, target_emd=1.5, flip_rate=0.2)
    for _, _, cfg in fig5_grid(full=True).points[::10] + fig4_grid(full=True).points[:1]:
        size = cfg.samples_per_device or 2_000
        shards = partition(
            mnist.y_train,
            fleet_kinds(cfg.devices, cfg.seed),
            size,
            cfg.seed,
            target_emd=cfg.emd,
            flip_rate=cfg.flip_rate,
        )
        assert len(shards) == cfg.devices and all(len(s.indices) == size for s in shards)
    assert grid_shard("mnist", 10) is None  # small fleets keep the fleet's (and the demo's) default


def test_membership_advantage_and_demo_limits():
    from experiments.protocol import demo_config
    from fedoracle.learning.audit import advantage

    assert advantage(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == (1.0, 1.0)
    adv, auc = advantage(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    assert adv == 0.0 and auc == pytest.approx(0.5)
    demo_ok = replace(TINY, test_examples=4_000)
    with pytest.raises(ValueError, match=r"cannot run \{'aggregation': 'median'\}"):
        demo_config(replace(demo_ok, aggregation="median"), "out")
    with pytest.raises(ValueError, match=r"cannot run \{'seed': 1\}"):
        demo_config(replace(demo_ok, seed=1), "out")
    with pytest.raises(ValueError, match=r"cannot run \{'test_examples': 600\}"):
        demo_config(TINY, "out")
    assert demo_config(demo_ok, "out").count == 5 and demo_config(demo_ok, "out").threshold == 0.2


def test_the_mia_experiment_reports_advantage_chance_and_bound_per_mode():
    from experiments.beyond import membership_inference

    doc = membership_inference(members=60, epochs=2, runs=1, log=lambda _: None)
    res = doc["results"]
    assert set(res) == {
        "non-DP",
        "ε=8, ÷D (paper)",
        "ε=8, whole update",
        "ε=8, record-level DP-SGD (default)",
        "ε=2, record-level DP-SGD (default)",
    }
    for row in res.values():
        assert 0 <= row["advantage_mean"] <= 1 and 0 < row["chance_mean_q95"] < 1
    assert res["non-DP"]["bound"] is None and res["ε=8, ÷D (paper)"]["bound"] is None  # no formal guarantee
    assert "no formal guarantee" in res["ε=8, ÷D (paper)"]["guarantee"]
    low, high = res["ε=2, record-level DP-SGD (default)"], res["ε=8, record-level DP-SGD (default)"]
    assert 0 < low["bound"] < high["bound"] < high["epsilon_bound"] <= 1
    assert "one record (training example)" in high["guarantee"]
    for row in res.values():  # LiRA beside the loss threshold, at 1% false positives, with its chance level
        assert 0 <= row["lira_advantage_mean"] <= 1 and 0 <= row["lira_tpr_at_fpr_mean"] <= 1
        assert 0 < row["tpr_chance_mean_q95"] < 0.2
    assert 0.01 <= low["tpr_bound"] < high["tpr_bound"] <= 1 and res["ε=8, ÷D (paper)"]["tpr_bound"] is None
