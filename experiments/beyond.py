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
from typing import Any

import numpy as np

from experiments.config import RunConfig
from fedoracle.defaults import DEFAULTS, PAPER_DP


def attack_grid(
    *, runs: int = 1, devices: int = 10, rounds: int = 3, dataset: str = "mnist"
) -> list[tuple[str, RunConfig]]:
    """The attack cases: label flipping (λ = 100%) and the adaptive attacker, with and without the gate.

    Both attacks run with the gate under FedAvg, median and trimmed mean, and without the gate
    under FedAvg; plus a run without attackers.
    """
    base = RunConfig(dataset=dataset, devices=devices, rounds=rounds, emd=1.5)
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

    Returns:
        Per release kind: advantage, AUC and the released model's test accuracy per run and their
        means, the chance level of the mean advantage and the bound the mode's ε implies.
    """
    from experiments.simulate import dataset as load
    from fedoracle.learning.audit import attack_release, chance_advantage, losses, privacy_bounds
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.privacy import add_noise, noise_std
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
    out: dict[str, Any] = {k: {"advantage": [], "auc": [], "test_accuracy": []} for k in kinds}
    t0 = time.perf_counter()
    for k in range(runs):
        rng = np.random.default_rng(10_000 + k)
        idx = rng.permutation(len(data.y_train))
        mem, non = idx[:members], idx[members : 2 * members]
        g = initial_weights(spec, k)
        common = {"spec": spec, "global_weights": g, "x": data.x_train[mem], "y": data.y_train[mem], "epochs": epochs}
        paper = {"batch_size": 128, "learning_rate": 2e-3, "optimizer": "adam", "seed": k}
        update = device_update(**common, **paper, dp=None)
        for name, dp in kinds.items():
            if dp is None:
                released = update
            elif dp.scaling == "record":
                training = {"batch_size": DEFAULTS.batch_size, "learning_rate": DEFAULTS.learning_rate}
                released = device_update(**common, **training, optimizer="sgd", seed=k, dp=dp)
            else:
                d = members if dp.scaling == "sample" else None
                released = add_noise(update, dp.clip, epsilon, delta, num_samples=d)
            attack = attack_release(
                spec, g, released, (data.x_train[mem], data.y_train[mem]), (data.x_train[non], data.y_train[non])
            )
            _, acc = losses(spec, candidate(g, released), data.x_test[:2000], data.y_test[:2000])
            out[name]["advantage"].append(attack["advantage"])
            out[name]["auc"].append(attack["auc"])
            out[name]["test_accuracy"].append(acc)
            log(
                f"  run {k} {name}: advantage {attack['advantage']:.3f}, AUC {attack['auc']:.3f}, "
                f"test accuracy {100 * acc:.1f}%"
            )
    chance = chance_advantage(members, members, releases=runs)
    for name, dp in kinds.items():
        v = out[name]
        for m in ("advantage", "auc", "test_accuracy"):
            v[f"{m}_mean"] = float(np.mean(v[m]))
        bs = DEFAULTS.batch_size if dp is not None and dp.scaling == "record" else 128
        v["chance_mean_q95"] = chance["mean"]
        v["bound"], v["epsilon_bound"], v["guarantee"] = privacy_bounds(
            dp, num_samples=members, batch_size=bs, epochs=epochs, rounds=1
        )
    return {
        "dataset": dataset,
        "members": members,
        "epochs": epochs,
        "runs": runs,
        "epsilon": epsilon,
        "delta": delta,
        "clip": clip,
        "record_clip": DEFAULTS.clip,
        "noise_std": {
            "÷D": noise_std(clip, epsilon, delta, num_samples=members),
            "whole update": noise_std(clip, epsilon, delta),
        },
        "results": out,
        "seconds": round(time.perf_counter() - t0, 1),
    }


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
