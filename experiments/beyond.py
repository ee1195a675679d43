"""Beyond the paper: the adaptive attacker, and membership inference on a device's released update.

The adaptive attacker against the gate and robust aggregation; membership inference on a device's
released update with and without local DP.

Membership inference is the loss-threshold attack of Yeom et al. (CSF 2018): whoever sees a
device's update Δ (the oracle, or anyone once the blob is public) forms ``global + Δ`` and guesses
"member" for an example whose loss is below a threshold. The attack's advantage is
``max_t (TPR(t) − FPR(t))`` over the device's own training examples (members) and as many
examples it never saw (non-members); 0 means the release tells nothing, 1 everything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from experiments.config import RunConfig


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


def advantage(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> tuple[float, float]:
    """The loss-threshold attack's advantage ``max_t TPR − FPR`` and its AUC.

    Args:
        member_loss: per-example loss on the device's training examples.
        nonmember_loss: per-example loss on examples it never saw.
    """
    members, others = np.sort(member_loss), np.sort(nonmember_loss)
    thresholds = np.unique(np.concatenate([members, others]))  # guess "member" when loss <= t (ties together)
    tpr = np.concatenate([[0.0], np.searchsorted(members, thresholds, side="right") / len(members)])
    fpr = np.concatenate([[0.0], np.searchsorted(others, thresholds, side="right") / len(others)])
    auc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    return float(np.max(tpr - fpr)), auc


def _losses(spec: Any, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    import tensorflow as tf

    from fedoracle.learning.models import build_spec_model

    model = build_spec_model(spec)
    model.set_weights(weights)
    logits = model.predict(x, batch_size=1000, verbose=0)
    loss = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).numpy()
    return loss, float(np.mean(np.argmax(logits, axis=1) == y))


def membership_inference(
    *,
    dataset: str = "mnist",
    members: int = 200,
    epochs: int = 20,
    runs: int = 3,
    epsilon: float = 8.0,
    delta: float = 1e-5,
    clip: float = 5.0,
    learning_rate: float = 2e-3,
    log: Any = print,
) -> dict[str, Any]:
    """The loss-threshold attack on one device's round-1 release, non-DP against ε = 8.

    Each run draws a device shard of ``members`` training examples and as many non-members, trains
    from the task's initial model (``device_update`` with the fleet's settings but ``epochs`` local
    epochs, to give the attack the overfitting it feeds on) and releases Δ without noise, with
    the paper's ÷D sensitivity (std σ·S/D) and with whole-update sensitivity (std σ·S).

    Returns:
        Per release kind: the advantage, AUC and the released model's test accuracy per run, and their means.
    """
    from experiments.simulate import dataset as load
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.privacy import add_noise, noise_std
    from fedoracle.learning.rounds import candidate, device_update

    data = load(dataset)
    spec = model_spec("small_cnn", data.input_shape, data.num_classes)
    kinds = {"non-DP": None, "ε=8, ÷D (paper)": members, "ε=8, whole update": 0}
    out: dict[str, Any] = {k: {"advantage": [], "auc": [], "test_accuracy": []} for k in kinds}
    t0 = time.perf_counter()
    for k in range(runs):
        rng = np.random.default_rng(10_000 + k)
        idx = rng.permutation(len(data.y_train))
        mem, non = idx[:members], idx[members : 2 * members]
        g = initial_weights(spec, k)
        update = device_update(
            spec,
            g,
            data.x_train[mem],
            data.y_train[mem],
            epochs=epochs,
            batch_size=128,
            learning_rate=learning_rate,
            optimizer="adam",
            seed=k,
            dp=None,
        )
        for name, d in kinds.items():
            if d is None:
                released = update
            else:
                released = add_noise(update, clip, epsilon, delta, num_samples=d or None)
            model = candidate(g, released)
            lm, _ = _losses(spec, model, data.x_train[mem], data.y_train[mem])
            ln, _ = _losses(spec, model, data.x_train[non], data.y_train[non])
            _, acc = _losses(spec, model, data.x_test[:2000], data.y_test[:2000])
            adv, auc = advantage(lm, ln)
            out[name]["advantage"].append(adv)
            out[name]["auc"].append(auc)
            out[name]["test_accuracy"].append(acc)
            log(f"  run {k} {name}: advantage {adv:.3f}, AUC {auc:.3f}, test accuracy {100 * acc:.1f}%")
    for v in out.values():
        for m in ("advantage", "auc", "test_accuracy"):
            v[f"{m}_mean"] = float(np.mean(v[m]))
    return {
        "dataset": dataset,
        "members": members,
        "epochs": epochs,
        "runs": runs,
        "epsilon": epsilon,
        "delta": delta,
        "clip": clip,
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
    """The paper's worry, measured: honest devices wrongly rejected when the noise is calibrated to S, not S/D.

    S is the sensitivity of the whole update, S/D the paper's; the cases use the extreme δ values.
    """
    import math

    base = RunConfig(dataset=dataset, devices=devices, rounds=rounds, flip_rate=1.0, emd=1.5)
    out = []
    for k in range(runs):
        seeded = replace(base, seed=k, task_seed=k)
        for delta in (math.exp(-1), math.exp(-6)):
            out.append((f"÷D, S=5, δ=e^-{-round(math.log(delta))}", replace(seeded, delta=delta)))
            for clip in clips:
                out.append(
                    (
                        f"whole update, S={clip:g}, δ=e^-{-round(math.log(delta))}",
                        replace(seeded, delta=delta, clip=clip, dp_scaling="update"),
                    )
                )
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
