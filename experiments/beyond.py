"""Beyond the paper: the adaptive attacker, and membership inference on a device's released update.

The adaptive attacker against the gate and robust aggregation; membership inference on a device's
released update with and without local DP.

Membership inference is the loss-threshold attack of :mod:`fedoracle.learning.audit` (the one
implementation, also in the demo's report), reported beside its chance level and the bound the
spent ε implies.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from functools import partial
from typing import Any

import numpy as np

from experiments.config import RunConfig, mode_settings
from fedoracle.defaults import DEFAULTS, PAPER_DP


def attack_grid(
    *, runs: int = 1, devices: int = 10, rounds: int = 3, dataset: str = "mnist", mode: str = DEFAULTS.dp_scaling
) -> list[tuple[str, RunConfig]]:
    """The attack cases: label flipping (λ = 100%) and the adaptive attacker, with and without the gate.

    Both attacks run with the gate under FedAvg, median and trimmed mean, and without the gate
    under FedAvg; plus a run without attackers. Honest devices train in privacy mode ``mode``
    (:func:`experiments.config.mode_settings`); the adaptive attacker trains its benign estimate
    with the same schedule, without noise.
    """
    base = RunConfig(dataset=dataset, devices=devices, rounds=rounds, emd=1.5, **mode_settings(mode))  # type: ignore[arg-type]
    out = []
    for k in range(runs):
        seeded = replace(base, seed=k, task_seed=k)
        out.append(("no attackers", replace(seeded, malicious=0.0, flip_rate=0.0)))
        for rule in ("fedavg", "median", "trimmed_mean"):
            out.append((f"label flip 100%, gate, {rule}", replace(seeded, flip_rate=1.0, aggregation=rule)))
            out.append((f"adaptive, gate, {rule}", replace(seeded, attack="adaptive", aggregation=rule)))
        out.append(("label flip 100%, no gate, fedavg", replace(seeded, flip_rate=1.0, variant="undefended")))
        out.append(("adaptive, no gate, fedavg", replace(seeded, attack="adaptive", variant="undefended")))
    return out


def run_attacks(cases: list[tuple[str, RunConfig]], log: Any = print) -> dict[str, Any]:
    """Runs the attack cases on the fast path.

    Returns per case the final accuracy and how many attacker submissions passed the gate.
    """
    from experiments.simulate import simulate

    rows = []
    for name, cfg in cases:
        res = simulate(cfg, keep_verdicts=True)
        mal = [v for r in res["rounds"] for v in r["verdicts"] if v["kind"] == "malicious"]
        rows.append(
            {
                "case": name,
                "config": asdict(cfg),
                "final_accuracy": res["final_accuracy"],
                "malicious_accepted": sum(v["accepted"] for v in mal),
                "malicious_submissions": len(mal),
                "malicious_candidate_bp": [v["accuracy_bp"] for v in mal],
                "thresholds_bp": [r["threshold_bp"] for r in res["rounds"]],
                "global_bp": [r["global_accuracy_bp"] for r in res["rounds"]],
                "honest_rejected": res["detection"]["honest_rejected"],
                "seconds": res["seconds"],
            }
        )
        log(
            f"  {name} seed={cfg.seed}: final {100 * res['final_accuracy']:.2f}%, attackers accepted "
            f"{rows[-1]['malicious_accepted']}/{len(mal)} ({res['seconds']:.0f}s)"
        )
    return {"cases": rows}


def membership_inference(
    *,
    dataset: str = "mnist",
    members: int = 200,
    epochs: int = 20,
    runs: int = 3,
    epsilon: float = DEFAULTS.epsilon,
    delta: float = DEFAULTS.delta,
    clip: float = 5.0,
    record_epsilons: tuple[float, ...] = (2.0,),
    log: Any = print,
) -> dict[str, Any]:
    """The loss-threshold attack (:mod:`fedoracle.learning.audit`) on one device's round-1 release, per privacy mode.

    Each run draws a device shard of ``members`` training examples and as many non-members, and
    releases from the task's initial model after ``epochs`` local epochs (to give the attack the
    overfitting it feeds on): without noise, with the paper's ÷D sensitivity (std σ·S/D), with
    whole-update sensitivity (std σ·S) (the last three from one Adam run at the paper's settings,
    clip ``clip``), and with record-level DP-SGD (the default mode, its own SGD run at the
    defaults' clip, lr and batch) at the same ε as the device's whole budget, and at each of
    ``record_epsilons``.

    Both attacks run on every release: the loss threshold and offline LiRA
    (:func:`fedoracle.learning.audit.lira_release`, 4 shadow updates from the same initial model
    with the kind's own training and mechanism, on training examples that are neither the device's
    nor the non-members).

    Returns:
        Per release kind: advantage, AUC and TPR at 1% FPR of both attacks and the released model's
        test accuracy per run and their means, the chance levels of the mean advantage and TPR, and
        the bounds the mode's ε implies.
    """
    from experiments.simulate import dataset as load
    from fedoracle.learning.audit import (
        LOW_FPR,
        attack_release,
        chance_advantage,
        chance_tpr_at_fpr,
        lira_release,
        losses,
        privacy_bounds,
        shadow_updates,
        tpr_bound_of,
    )
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.privacy import noise_std
    from fedoracle.learning.rounds import DPParams, candidate, device_update

    data = load(dataset)
    spec = model_spec(DEFAULTS.architecture, data.input_shape, data.num_classes)
    kinds: dict[str, DPParams | None] = {
        "non-DP": None,
        f"ε={epsilon:g}, ÷D (paper)": DPParams(epsilon, delta, clip, "sample"),
        f"ε={epsilon:g}, whole update": DPParams(epsilon, delta, clip, "update"),
    }
    for e in sorted({epsilon, *record_epsilons}, reverse=True):
        kinds[f"ε={e:g}, record-level DP-SGD (default)"] = DPParams(e, delta, DEFAULTS.clip, "record", 1)
    metrics = ("advantage", "auc", "test_accuracy", "lira_advantage", "lira_auc", "lira_tpr_at_fpr", "tpr_at_fpr")
    out: dict[str, Any] = {k: {m: [] for m in metrics} for k in kinds}
    t0 = time.perf_counter()
    for k in range(runs):
        rng = np.random.default_rng(10_000 + k)
        idx = rng.permutation(len(data.y_train))
        mem, non = idx[:members], idx[members : 2 * members]
        g = initial_weights(spec, k)
        common = {"spec": spec, "global_weights": g, "x": data.x_train[mem], "y": data.y_train[mem], "epochs": epochs}
        paper = {"batch_size": 128, "learning_rate": 2e-3, "optimizer": "adam", "seed": k}
        update = device_update(**common, **paper, dp=None)
        public = idx[2 * members :]  # LiRA's shadow data: neither the device's examples nor the non-members
        pub = (data.x_train[public], data.y_train[public])
        adam = partial(_mia_release, spec, g, None, epochs=epochs, seed=100, members=members)
        adam_shadows = shadow_updates(*pub, adam, size=members)
        for name, dp in kinds.items():
            mechanism = partial(_mia_release, spec, g, dp, epochs=epochs, seed=k, members=members)
            if dp is not None and dp.scaling == "record":
                released = mechanism(data.x_train[mem], data.y_train[mem], 0)
                shadows = shadow_updates(*pub, mechanism, size=members)
            else:  # the paper's modes noise the one Adam update, the shadows' updates alike
                released = _noised(dp, update, members)
                shadows = [_noised(dp, s, members) for s in adam_shadows]
            sets = ((data.x_train[mem], data.y_train[mem]), (data.x_train[non], data.y_train[non]))
            attack = attack_release(spec, g, released, *sets)
            lira = lira_release(spec, g, released, *sets, shadows)
            _, acc = losses(spec, candidate(g, released), data.x_test[:2000], data.y_test[:2000])
            for m in ("advantage", "auc", "tpr_at_fpr"):
                out[name][m].append(attack[m])
                out[name][f"lira_{m}"].append(lira[m])
            out[name]["test_accuracy"].append(acc)
            log(
                f"  run {k} {name}: loss advantage {attack['advantage']:.3f}, LiRA advantage {lira['advantage']:.3f}, "
                f"LiRA TPR at {LOW_FPR:.0%} FPR {lira['tpr_at_fpr']:.3f}, test accuracy {100 * acc:.1f}%"
            )
    chance = chance_advantage(members, members, releases=runs)
    tpr_chance = chance_tpr_at_fpr(members, members, releases=runs)
    for name, dp in kinds.items():
        v = out[name]
        for m in metrics:
            v[f"{m}_mean"] = float(np.mean(v[m]))
        bs = DEFAULTS.batch_size if dp is not None and dp.scaling == "record" else 128
        v["chance_mean_q95"] = chance["mean"]
        v["tpr_chance_mean_q95"] = tpr_chance["mean"]
        schedule = {"num_samples": members, "batch_size": bs, "epochs": epochs, "rounds": 1}
        v["bound"], v["epsilon_bound"], v["guarantee"] = privacy_bounds(dp, **schedule)
        v["tpr_bound"] = tpr_bound_of(dp, fpr=LOW_FPR, **schedule)
    return {
        "dataset": dataset,
        "members": members,
        "epochs": epochs,
        "runs": runs,
        "epsilon": epsilon,
        "delta": delta,
        "clip": clip,
        "record_clip": DEFAULTS.clip,
        "fpr": LOW_FPR,
        "attacks": {"loss": "loss threshold (Yeom et al. 2018)", "lira": "offline LiRA, 4 shadow updates"},
        "noise_std": {
            "÷D": noise_std(clip, epsilon, delta, num_samples=members),
            "whole update": noise_std(clip, epsilon, delta),
        },
        "results": out,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _mia_release(
    spec: Any, g: Any, dp: Any, x: Any, y: Any, j: int, *, epochs: int, seed: int, members: int
) -> list[np.ndarray]:
    """One ``mia`` release trained from ``g``: record-level DP-SGD at the defaults, or (``dp=None``) Adam unnoised."""
    from fedoracle.learning.rounds import device_update

    if dp is None:
        paper = {"batch_size": 128, "learning_rate": 2e-3, "optimizer": "adam"}
        return device_update(spec, g, x, y, epochs=epochs, **paper, seed=seed + j, dp=None)
    training = {"batch_size": DEFAULTS.batch_size, "learning_rate": DEFAULTS.learning_rate, "optimizer": "sgd"}
    return device_update(spec, g, x, y, epochs=epochs, **training, seed=seed + j, dp=dp)


def _noised(dp: Any, update: list[np.ndarray], members: int) -> list[np.ndarray]:
    """A paper-mode release of an Adam update: unchanged without DP, else clipped and noised (÷D or whole update)."""
    from fedoracle.learning.privacy import add_noise

    if dp is None:
        return update
    return add_noise(update, dp.clip, dp.epsilon, dp.delta, num_samples=members if dp.scaling == "sample" else None)


def noise_grid(
    *,
    runs: int = 1,
    devices: int = 10,
    rounds: int = 3,
    dataset: str = "mnist",
    clips: tuple[float, ...] = (0.03, 0.3, 5.0),
) -> list[tuple[str, RunConfig]]:
    """The paper's worry, measured: honest devices wrongly rejected, per privacy mechanism.

    The paper's ÷D sensitivity (S/D) and whole-update sensitivity (S) at the paper's training
    (:data:`fedoracle.defaults.PAPER_DP`), against record-level DP-SGD (the default, where ε is
    each device's whole budget); the cases use the paper's extreme δ values.
    """
    import math

    base = RunConfig(dataset=dataset, devices=devices, rounds=rounds, flip_rate=1.0, emd=1.5)
    out = []
    for k in range(runs):
        seeded = replace(base, seed=k, task_seed=k)
        for delta in (math.exp(-1), math.exp(-6)):
            at = f"δ=e^-{-round(math.log(delta))}"
            out.append((f"÷D, S=5, {at}", replace(seeded, delta=delta, **PAPER_DP)))
            for clip in clips:
                paper = {**PAPER_DP, "clip": clip, "dp_scaling": "update"}
                out.append((f"whole update, S={clip:g}, {at}", replace(seeded, delta=delta, **paper)))
            out.append((f"record-level DP-SGD, C={DEFAULTS.clip:g}, {at}", replace(seeded, delta=delta)))
    return out


def run_noise(cases: list[tuple[str, RunConfig]], log: Any = print) -> dict[str, Any]:
    """Runs the noise cases; per case the final accuracy, honest rejections and detection."""
    from experiments.simulate import simulate

    rows = []
    for name, cfg in cases:
        res = simulate(cfg, keep_verdicts=False)
        rows.append(
            {
                "case": name,
                "config": asdict(cfg),
                "final_accuracy": res["final_accuracy"],
                "honest_rejected": res["detection"]["honest_rejected"],
                "detection": res["detection"],
                "candidates": res["candidates"],
                "epsilon_spent": res["epsilon_spent"],
                "global_bp": [r["global_accuracy_bp"] for r in res["rounds"]],
                "thresholds_bp": [r["threshold_bp"] for r in res["rounds"]],
                "seconds": res["seconds"],
            }
        )
        log(
            f"  {name} seed={cfg.seed}: final {100 * res['final_accuracy']:.2f}%, honest rejected "
            f"{100 * (res['detection']['honest_rejected'] or 0):.0f}%, malicious rejected "
            f"{100 * (res['detection']['malicious']['recall'] or 0):.0f}% ({res['seconds']:.0f}s)"
        )
    return {"cases": rows}


def per_release_epsilon(total: float, delta: float, rounds: int) -> float:
    """The ε of one Gaussian release such that ``rounds`` of them compose to ``total`` at δ (add/remove).

    ``rounds`` Gaussian mechanisms of multiplier σ compose exactly to one of multiplier σ/√rounds, so
    the release's σ is √rounds times the one-shot σ of (``total``, δ).
    """
    from fedoracle.learning.privacy import gaussian_epsilon, gaussian_sigma

    return gaussian_epsilon(gaussian_sigma(total, delta) * rounds**0.5, delta)


def modes_grid(
    *, runs: int = 1, devices: int = 10, rounds: int = 3, dataset: str = "mnist", epsilon: float = DEFAULTS.epsilon
) -> list[tuple[str, RunConfig]]:
    """The three privacy modes side by side at the same total ε per device, P, rounds and attack mix.

    Each DP mode spends ``epsilon`` (δ = 1e-5) per device over the whole task: record-level DP-SGD
    solves its σ for every step of every round; the paper's modes release once a round at the
    per-release ε whose ``rounds`` releases compose to ``epsilon`` (:func:`per_release_epsilon`;
    one device's update added or removed, and for ÷D only nominally). The paper's modes run both with
    DP-SGD's schedule (SGD + momentum at lr 0.1, batch 64, 2 epochs: only the mechanism differs) and
    with the paper's training (:data:`fedoracle.defaults.PAPER_DP`); clip S = 5 on the update. Plus
    the non-private run of DP-SGD's schedule. 20% label flippers (λ = 100%), 20% skewed (EMD 1.5).
    """
    base = RunConfig(dataset=dataset, devices=devices, rounds=rounds, flip_rate=1.0, emd=1.5, epsilon=epsilon)
    per_release = round(per_release_epsilon(epsilon, base.delta, rounds), 3)
    same = {"clip": PAPER_DP["clip"], "epsilon": per_release}
    out = []
    for k in range(runs):
        seeded = replace(base, seed=k, task_seed=k)
        out += [
            ("non-DP (DP-SGD's schedule)", replace(seeded, variant="nondp")),
            ("record-level DP-SGD", seeded),
            ("÷D (paper), DP-SGD's schedule", replace(seeded, dp_scaling="sample", **same)),
            ("whole update, DP-SGD's schedule", replace(seeded, dp_scaling="update", **same)),
            ("÷D (paper), paper's training", replace(seeded, **{**mode_settings("sample"), "epsilon": per_release})),
            ("whole update, paper's training", replace(seeded, **{**mode_settings("update"), "epsilon": per_release})),
        ]
    return out


def run_modes(cases: list[tuple[str, RunConfig]], log: Any = print) -> dict[str, Any]:
    """Runs the modes' cases on the fast path with both membership-inference audits on every honest release.

    Returns per case: the final accuracy, honest / flipper / skewed rejections, ε spent as the
    system prints it, and the loss-threshold and LiRA audits (advantage, TPR at 1% FPR, their chance
    levels and bounds); for whole-update DP also ε for one record (a replacement of the update).
    """
    from experiments.simulate import simulate
    from fedoracle.learning.privacy import describe_epsilon, dpsgd_epsilon, gaussian_sigma

    rows = []
    for name, cfg in cases:
        res = simulate(cfg, keep_verdicts=False, audit=True, lira=True)
        det = res["detection"]
        eps = res["epsilon_spent"]
        row = {
            "case": name,
            "config": asdict(cfg),
            "final_accuracy": res["final_accuracy"],
            "global_bp": [r["global_accuracy_bp"] for r in res["rounds"]],
            "rejected": det["rejected"],
            "verdicts": det["verdicts"],
            "epsilon_spent": eps,
            "epsilon_printed": None if eps is None else describe_epsilon(eps, cfg.delta, cfg.rounds, cfg.dp_scaling),
            "audit": res.get("audit"),
            "lira": res.get("lira"),
            "seconds": res["seconds"],
        }
        if cfg.dp and cfg.dp_scaling == "update":
            sigma = gaussian_sigma(cfg.epsilon, cfg.delta)
            row["epsilon_replace"] = dpsgd_epsilon(sigma / 2, 1.0, cfg.rounds, cfg.delta)
        rows.append(row)
        lira = row["lira"] or {}
        log(
            f"  {name} seed={cfg.seed}: final {100 * (res['final_accuracy'] or 0):.2f}%, honest rejected "
            f"{det['rejected']['honest']}/{det['verdicts']['honest']}, "
            f"LiRA TPR@1% {lira.get('tpr_at_fpr_mean', 0):.3f} "
            f"(chance {lira.get('tpr_chance_mean_q95', 0):.3f}, bound {lira.get('tpr_bound')}) ({res['seconds']:.0f}s)"
        )
    return {"cases": rows}


def round_one(
    *,
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist"),
    fleets: tuple[int, ...] = (10, 20, 100),
    runs: int = 3,
    log: Any = print,
) -> dict[str, Any]:
    """What honest devices reach in round 1 under the default privacy mode: the data for the round-1 thresholds.

    Each point is round 1 of a task at the defaults (record-level DP-SGD, ε = 8 for the whole
    3-round task at δ = 1e-5, one record; the fleet's shard size for P; 20% label flippers at
    λ = 100%, 20% skewed devices at EMD 1.5), on the fast path with the gate open (every verdict
    kept). ``runs`` seeds at the smallest P, one at the others (their fleets are large).

    Returns:
        Per data set and P: every kind's round-1 candidate accuracies per run (min / mean / max),
        and the threshold the data set's default is set from (:func:`round_one_threshold`).
    """
    from experiments.config import grid_shard
    from experiments.simulate import simulate

    out: dict[str, Any] = {"datasets": {}, "epsilon": DEFAULTS.epsilon, "delta": DEFAULTS.delta}
    for ds in datasets:
        points: dict[str, Any] = {}
        for p in fleets:
            base = RunConfig(
                dataset=ds, devices=p, samples_per_device=grid_shard(ds, p), variant="undefended", flip_rate=1.0
            )
            rows = []
            for k in range(runs if p == min(fleets) else 1):
                res = simulate(replace(base, seed=k, task_seed=k), stop_after=1, keep_verdicts=True)
                by_kind = res["candidates_by_round"][0]
                rows.append({"seed": k, "candidates": by_kind, "seconds": res["seconds"]})
                honest = by_kind["honest"]
                log(
                    f"  {ds} P={p} seed={k}: honest round-1 candidates {100 * honest['min']:.1f}–"
                    f"{100 * honest['max']:.1f}% (mean {100 * honest['mean']:.1f}%), flippers up to "
                    f"{100 * (by_kind['malicious'] or {}).get('max', 0):.1f}% ({res['seconds']:.0f}s)"
                )
            points[str(p)] = {"shard": grid_shard(ds, p) or DEFAULTS.max_shard, "runs": rows}
        smallest = points[str(min(fleets))]["runs"]
        out["datasets"][ds] = {
            "fleets": points,
            "threshold": round_one_threshold([r["candidates"]["honest"]["min"] for r in smallest]),
            "default_before": DEFAULTS.threshold(ds),
        }
    return out


THRESHOLD_STEP = 0.05  # round-1 thresholds are set on a 5-point grid
THRESHOLD_SLACK = 0.05  # ... at least this far below the weakest honest round-1 candidate measured


def round_one_threshold(honest_minima: list[float]) -> float:
    """The round-1 threshold a data set's default is set from.

    The largest multiple of :data:`THRESHOLD_STEP` at least :data:`THRESHOLD_SLACK` below the
    lowest honest round-1 candidate over the measured runs (at the demo's 2,000-example shard):
    room for the run-to-run spread of DP noise, while a label flipper (near 0%) and the initial
    model (about 10%) stay far below it.
    """
    low = min(honest_minima) - THRESHOLD_SLACK
    return max(0.0, round(THRESHOLD_STEP * int(low / THRESHOLD_STEP + 1e-9), 2))
