"""The protocol path: a run config through the whole system (:class:`demo.run.Demo`), compared with the fast path.

The demo runs anvil, the broker, the relay, the oracle and the device fleet as separate
processes; this module reads back what the chain recorded (``VerdictPosted``, ``ModelSubmitted``
and ``GlobalModelUpdated`` events), the fleet's device names (``fleet.json``) and which test
groups served each round (the publisher's vault), then replays the same config on the fast path
with those groups and compares verdict by verdict.

The demo exposes only part of a :class:`~experiments.config.RunConfig`: its fleet and
task seeds are 0, the oracle always gates and aggregates with FedAvg, and the hidden test set has the publisher's
default size. Configs outside that raise ``ValueError`` rather than silently comparing different
things. The two paths agree bit for bit only without DP: the privacy noise comes from the OS's
entropy, in the protocol and on the fast path alike, so with DP they agree in distribution only.
"""

from __future__ import annotations

import glob
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from experiments.config import RunConfig
from fedoracle import aio

DEMO_FIXED = {
    "seed": 0,
    "task_seed": 0,
    "aggregation": "fedavg",
    "attack": "label_flip",
    "test_examples": 4_000,
    "groups_per_round": 2,
}


def demo_config(cfg: RunConfig, out: str | Path, timeout: int = 900) -> Any:
    """The :class:`demo.run.DemoConfig` that runs ``cfg`` through the protocol.

    Raises:
        ValueError: when ``cfg`` sets something the demo cannot (see the module docstring).
    """
    from demo.run import DemoConfig

    bad = {k: getattr(cfg, k) for k, v in DEMO_FIXED.items() if getattr(cfg, k) != v}
    if not cfg.gate:
        bad["variant"] = cfg.variant  # the oracle always gates
    if bad:
        raise ValueError(f"the demo cannot run {bad}: it fixes {DEMO_FIXED}")
    return DemoConfig(
        dataset=cfg.dataset,
        data_path=cfg.data_path,
        architecture=cfg.architecture,
        count=cfg.devices,
        rounds=cfg.rounds,
        malicious=cfg.malicious,
        unreliable=cfg.unreliable,
        flip_rate=cfg.flip_rate,
        emd=cfg.emd,
        epsilon=cfg.epsilon,
        delta=cfg.delta,
        clip=cfg.clip,
        threshold=cfg.initial_threshold,
        samples_per_device=cfg.samples_per_device,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        optimizer=cfg.optimizer,
        dp_scaling=cfg.dp_scaling,
        threshold_margin=cfg.threshold_margin if cfg.threshold_margin is not None else 1.0,
        out=str(out),
        timeout=timeout,
        quiet=True,
        dp=cfg.dp,
    )


def run_protocol(cfg: RunConfig, out: str | Path, timeout: int = 900) -> dict[str, Any]:
    """Runs ``cfg`` through the whole protocol and returns what the chain recorded.

    Returns:
        ``rounds``: per round the threshold each submission was bound to, the global accuracy
        (bp), every verdict (device index, kind, accuracy bp, accepted) and the order of the
        submissions on-chain (the order the oracle averages accepted updates in); ``round_groups``: the
        test groups each round was evaluated on; ``run_dir``; ``report`` (the demo's report).
    """
    from demo.run import Demo
    from demo.services import stop_all
    from fedoracle.hidden import HiddenTestSet
    from fedoracle.learning.runtime import stop_workers
    from fedoracle.procs import stop_children

    demo = Demo(demo_config(cfg, out, timeout))
    try:
        report = aio.run(demo.run())
    finally:
        demo.stop_processes()
        stop_all()
        stop_children()  # the demo's last sweep; it also kills this process's TFF worker, so
        stop_workers()  # drop TFF's context too: the next computation starts a fresh worker
    fleet = json.loads((demo.dir / "fleet.json").read_text())
    index = {d["address"].lower(): (int(d["name"].rsplit("-", 1)[1]), d["kind"]) for d in fleet["devices"]}
    task_id = report["task_id"]
    rounds: dict[int, dict[str, Any]] = {
        r: {"round": r, "thresholds_bp": {}, "verdicts": [], "submission_order": []} for r in range(1, cfg.rounds + 1)
    }
    for ev in sorted(demo.events, key=lambda e: (e.block_number, e.log_index)):
        a = ev.args
        if a.get("taskId") != task_id or ev.removed:
            continue
        if ev.name == "ModelSubmitted":
            rounds[a["round"]]["thresholds_bp"][index[a["device"].lower()][0]] = a["thresholdBp"]
            rounds[a["round"]]["submission_order"].append(index[a["device"].lower()][0])
        elif ev.name == "VerdictPosted":
            i, kind = index[a["device"].lower()]
            rounds[a["round"]]["verdicts"].append(
                {
                    "device": i,
                    "kind": kind,
                    "accuracy_bp": a["accuracyBp"],
                    "reason": a["reason"],
                    "accepted": bool(a["accepted"]),
                }
            )
        elif ev.name == "GlobalModelUpdated":
            rounds[a["round"]]["global_accuracy_bp"] = a["globalAccuracyBp"]
    for rec in rounds.values():
        rec["verdicts"].sort(key=lambda v: v["device"])
    (vault,) = glob.glob(str(demo.dir / "vault" / "0x*"))
    hidden = HiddenTestSet(vault)
    groups = {r: [int(i) for i in hidden.commitment.round_indices(r)] for r in range(1, cfg.rounds + 1)}
    return {
        "rounds": [rounds[r] for r in sorted(rounds)],
        "round_groups": groups,
        "run_dir": str(demo.dir),
        "report": {
            k: report[k] for k in ("verdicts_by_class", "threshold_by_round", "epsilon_spent", "rounds") if k in report
        },
    }


def compare(protocol: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """Verdict-by-verdict comparison of a protocol run and a fast-path run of the same config.

    Returns:
        ``same_verdicts`` (every device accepted/rejected alike in every round),
        ``max_candidate_diff_bp`` and ``max_global_diff_bp`` (largest accuracy differences),
        ``thresholds_bound`` (whether every submission was bound to the threshold the fast path
        assumed) and the per-round detail.
    """
    detail, same, cand_diff, glob_diff, bound_ok = [], True, 0, 0, True
    all_diffs: list[int] = []
    submissions = agreeing = 0
    for p, f in zip(protocol["rounds"], fast["rounds"], strict=True):
        pv = {v["device"]: v for v in p["verdicts"]}
        fv = {v["device"]: v for v in f["verdicts"]}
        mismatched = sorted(i for i in fv if i not in pv or pv[i]["accepted"] != fv[i]["accepted"])
        same &= not mismatched and set(pv) == set(fv)
        submissions += len(fv)
        agreeing += len(fv) - len(mismatched)
        diffs = [abs(pv[i]["accuracy_bp"] - fv[i]["accuracy_bp"]) for i in fv if i in pv]
        all_diffs += diffs
        cand_diff = max([cand_diff, *diffs])
        g = abs(p.get("global_accuracy_bp", -(10**6)) - f["global_accuracy_bp"])
        glob_diff = max(glob_diff, g)
        thresholds = set(p["thresholds_bp"].values())
        bound_ok &= thresholds == {f["threshold_bp"]}
        detail.append(
            {
                "round": p["round"],
                "mismatched_devices": mismatched,
                "max_candidate_diff_bp": max(diffs or [0]),
                "protocol_global_bp": p.get("global_accuracy_bp"),
                "fast_global_bp": f["global_accuracy_bp"],
                "protocol_thresholds_bp": sorted(thresholds),
                "fast_threshold_bp": f["threshold_bp"],
            }
        )
    return {
        "same_verdicts": bool(same),
        "agreeing_verdicts": agreeing,
        "submissions": submissions,
        "mean_candidate_diff_bp": float(sum(all_diffs) / len(all_diffs)) if all_diffs else 0.0,
        "max_candidate_diff_bp": cand_diff,
        "max_global_diff_bp": glob_diff,
        "thresholds_bound": bool(bound_ok),
        "rounds": detail,
    }


def as_protocol(fast: dict[str, Any]) -> dict[str, Any]:
    """A fast-path run in the shape :func:`run_protocol` returns (to compare two fast-path runs)."""
    return {
        "rounds": [
            {
                "round": r["round"],
                "thresholds_bp": {v["device"]: r["threshold_bp"] for v in r["verdicts"]},
                "verdicts": r["verdicts"],
                "global_accuracy_bp": r["global_accuracy_bp"],
            }
            for r in fast["rounds"]
        ]
    }


def agreement(
    cfg: RunConfig, out: str | Path, timeout: int = 900, log: Any = None, *, noise_baseline: bool = False
) -> dict[str, Any]:
    """Runs ``cfg`` through the protocol and then the fast path, and compares the two.

    The fast path uses the same test groups, and averages the accepted updates in the protocol's
    submission order. With DP the two draw different noise and can agree in distribution only;
    ``noise_baseline`` runs the fast path a second time and compares it with the first (the
    result's ``noise_baseline``): how far two runs differ by their noise alone.
    """
    import time

    t0 = time.perf_counter()
    proto = run_protocol(cfg, out, timeout)
    t1 = time.perf_counter()
    if log:
        log(f"  protocol run: {t1 - t0:.0f}s ({proto['run_dir']})")
    from experiments.simulate import simulate

    order = {rec["round"]: rec["submission_order"] for rec in proto["rounds"]}
    fast = simulate(replace(cfg, full_test=True), round_groups=proto["round_groups"], submission_order=order)
    t2 = time.perf_counter()
    result = compare(proto, fast)
    if noise_baseline:
        again = simulate(replace(cfg, full_test=True), round_groups=proto["round_groups"], submission_order=order)
        baseline = compare(as_protocol(again), fast)
        result["noise_baseline"] = {k: v for k, v in baseline.items() if k != "rounds"}
        result["noise_baseline"]["final_accuracy"] = [fast["final_accuracy"], again["final_accuracy"]]
    result.update(
        config=asdict(cfg),
        protocol_seconds=round(t1 - t0, 1),
        fast_seconds=round(t2 - t1, 1),
        protocol=proto,
        fast={k: fast[k] for k in ("rounds", "final_accuracy", "detection", "epsilon_spent")},
    )
    return result
