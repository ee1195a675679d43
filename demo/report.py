"""The end-of-task report: what the chain recorded, joined with what the fleet knows about itself.

Built from the registry's events and receipts (accuracy per round, verdicts, rewards, gas per
function) and the fleet's status file (which device is honest, malicious or unreliable, and the
ε each one spent). Written as ``report.json`` and two figures: accuracy per round, and verdicts
and rewards by device class.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from eth_utils import function_abi_to_4byte_selector

from fedoracle.chain import ChainEvent, TaskRegistry
from fedoracle.errors import Reason
from fedoracle.units import from_bp

KINDS = ("honest", "unreliable", "malicious")


async def gas_by_function(registry: TaskRegistry, tx_hashes: list[str]) -> dict[str, dict[str, float]]:
    """Gas used per contract function over the given transactions (min / mean / max / count)."""
    selectors = {
        function_abi_to_4byte_selector(f): f["name"] for f in registry.contract.abi if f.get("type") == "function"
    }
    per: dict[str, list[int]] = defaultdict(list)
    w3 = registry.chain.w3
    for h in tx_hashes:
        tx = await w3.eth.get_transaction(h)
        receipt = await w3.eth.get_transaction_receipt(h)
        data = bytes(tx["input"])
        name = "deploy" if tx["to"] is None else selectors.get(data[:4], data[:4].hex())
        per[name].append(int(receipt["gasUsed"]))
    return {k: {"count": len(v), "min": min(v), "mean": sum(v) / len(v), "max": max(v)} for k, v in sorted(per.items())}


def build_report(
    task_id: int,
    events: list[ChainEvent],
    fleet: dict[str, Any],
    gas: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Joins the task's events with the fleet's view of its devices."""
    devices = {d["address"].lower(): d for d in fleet.get("devices", [])}

    def kind_of(addr: str) -> str:
        return str(devices.get(addr.lower(), {}).get("kind", "unknown"))

    payee_kind = {d["payee"].lower(): d["kind"] for d in devices.values()}
    rounds: dict[int, dict[str, Any]] = {}
    verdicts: dict[str, Counter] = {k: Counter() for k in KINDS}
    reasons: Counter = Counter()
    rewards: Counter = Counter()
    per_device: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"accepted": 0, "rejected": 0, "reward_wei": 0, "accuracy_bp": []}
    )
    accuracy: dict[tuple[int, str], list[int]] = defaultdict(list)
    thresholds: dict[int, int] = {}
    for ev in events:
        a = ev.args
        if a.get("taskId") != task_id:
            continue
        if ev.name == "ModelSubmitted":
            rounds.setdefault(a["round"], {"round": a["round"], "submissions": 0})["submissions"] += 1
        elif ev.name == "VerdictPosted":
            kind = kind_of(a["device"])
            verdicts.setdefault(kind, Counter())["accepted" if a["accepted"] else "rejected"] += 1
            reasons[Reason(a["reason"]).name] += 1
            per_device[a["device"].lower()]["accepted" if a["accepted"] else "rejected"] += 1
            per_device[a["device"].lower()]["accuracy_bp"].append(a["accuracyBp"])
            accuracy[(a["round"], kind)].append(a["accuracyBp"])
        elif ev.name == "GlobalModelUpdated":
            r = rounds.setdefault(a["round"], {"round": a["round"], "submissions": 0})
            r.update(
                global_accuracy=from_bp(a["globalAccuracyBp"]),
                accepted=a["acceptedCount"],
                reward_per_accepted_wei=a["rewardPerAccepted"],
                model_hash="0x" + a["modelHash"].hex(),
            )
        elif ev.name == "TaskPublished":
            thresholds[1] = a["thresholdBp"]
        elif ev.name == "RoundOpened" and a["round"] > 1:
            thresholds[a["round"]] = thresholds.get(a["round"] - 1, 0)
        elif ev.name == "ThresholdAnnounced":
            thresholds[a["round"]] = a["thresholdBp"]
        elif ev.name == "RewardClaimed":
            kind = payee_kind.get(a["payee"].lower(), kind_of(a["device"]))
            rewards[kind] += a["amount"]
            per_device[a["device"].lower()]["reward_wei"] += a["amount"]
    eps = [d["epsilon_spent"] for d in devices.values() if d.get("epsilon_spent") is not None]
    report = {
        "task_id": task_id,
        "rounds": [rounds[r] for r in sorted(rounds)],
        "verdicts_by_class": {k: dict(v) for k, v in verdicts.items()},
        "candidate_accuracy_by_round_and_class": {
            f"{r}/{k}": {"min": min(v) / 1e4, "mean": sum(v) / len(v) / 1e4, "max": max(v) / 1e4}
            for (r, k), v in sorted(accuracy.items())
        },
        "rejection_reasons": dict(reasons),
        "threshold_by_round": {str(r): from_bp(bp) for r, bp in sorted(thresholds.items())},
        "rewards_wei_by_class": {k: rewards.get(k, 0) for k in KINDS},
        "devices_by_class": dict(Counter(d["kind"] for d in devices.values())),
        "epsilon_spent": {
            "max": max(eps) if eps else None,
            "min": min(eps) if eps else None,
            "per_device": {a: d.get("epsilon_spent") for a, d in devices.items()},
        },
        "devices": {a: {"kind": kind_of(a), **v} for a, v in per_device.items()},
        "gas": gas,
    }
    if extra:
        report.update(extra)
    return report


def configuration_line(report: dict[str, Any]) -> str:
    """The run's configuration in a figure title: data set, model, P, then ε with its δ, unit and rounds.

    The ε is the task's configured one (from ``report["config"]``), stated by
    :func:`fedoracle.learning.privacy.describe_epsilon`: per round for the per-update mechanisms,
    for the whole task with record-level DP-SGD.
    """
    from fedoracle.defaults import DEFAULTS
    from fedoracle.learning.privacy import describe_epsilon

    cfg = report.get("config") or {}
    head = f"{cfg.get('dataset', '?')}, {cfg.get('architecture', '?')}, P = {cfg.get('count', '?')}"
    if not cfg.get("dp", True):
        return f"{head}, no DP"
    scaling = cfg.get("dp_scaling", DEFAULTS.dp_scaling)
    rounds = int(cfg.get("rounds", len(report["rounds"]))) if scaling == "record" else 1
    privacy = describe_epsilon(
        float(cfg.get("epsilon", DEFAULTS.epsilon)), float(cfg.get("delta", DEFAULTS.delta)), rounds, scaling
    )
    return head + "\n" + "\n".join(textwrap.wrap(privacy, 95))


def accuracy_figure(report: dict[str, Any]) -> Any:
    """The global model's accuracy per round, each device class's candidates and the threshold.

    Titled with the task and its configuration (:func:`configuration_line`); the legend sits beside
    the axes, where it can hide no point.

    Returns:
        the matplotlib ``Figure`` (the caller saves and closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r for r in report["rounds"] if "global_accuracy" in r]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [100 * r["global_accuracy"] for r in rounds], marker="o", color="#1f77b4", label="global model")
    for kind, color in (("honest", "#2ca02c"), ("unreliable", "#ff7f0e"), ("malicious", "#7f7f7f")):
        means = [report["candidate_accuracy_by_round_and_class"].get(f"{x}/{kind}", {}).get("mean") for x in xs]
        pts = [(x, 100 * m) for x, m in zip(xs, means, strict=True) if m is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), ls=":", marker=".", color=color, label=f"{kind} candidates (mean)")
    th = report.get("threshold_by_round") or {}
    if th:
        rs = sorted(int(r) for r in th)
        ax.step(rs, [100 * th[str(r)] for r in rs], where="mid", ls="--", color="#d62728", lw=1, label="threshold")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Task {report['task_id']}: global accuracy per round\n{configuration_line(report)}", fontsize=8)
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7)
    fig.tight_layout()
    return fig


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Writes ``report.json``, ``accuracy.png`` and ``verdicts.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "accuracy.png", out / "verdicts.png"]
    paths[0].write_text(json.dumps(report, indent=1, default=str))

    fig = accuracy_figure(report)
    fig.savefig(paths[1])
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.6), dpi=120)
    kinds = list(KINDS)
    acc = [report["verdicts_by_class"].get(k, {}).get("accepted", 0) for k in kinds]
    rej = [report["verdicts_by_class"].get(k, {}).get("rejected", 0) for k in kinds]
    ax1.bar(kinds, acc, color="#2ca02c", label="accepted")
    ax1.bar(kinds, rej, bottom=acc, color="#d62728", label="rejected")
    ax1.set_title("verdicts by device class")
    ax1.set_ylabel("submissions")
    ax1.legend()
    eth = [report["rewards_wei_by_class"].get(k, 0) / 1e18 for k in kinds]
    ax2.bar(kinds, eth, color="#9467bd")
    ax2.set_title("rewards paid by class")
    ax2.set_ylabel("ETH")
    fig.tight_layout()
    fig.savefig(paths[2])
    plt.close(fig)
    return paths
