"""A task's status as the chain tells it: phase, rounds, submissions, verdicts and balances."""

from __future__ import annotations

from typing import Any

from fedoracle.chain import Chain, Phase, Status, TaskRegistry
from fedoracle.defaults import privacy_mode_name
from fedoracle.errors import Reason
from fedoracle.rules import AggregationRule
from fedoracle.units import EPSILON_SCALE, decode_dp, from_bp


async def task_status(rpc_url: str, registry_address: str, task_id: int, from_block: int = 0) -> dict[str, Any]:
    """Collects everything ``fedoracle status`` shows, from views and events."""
    chain = Chain(rpc_url)
    registry = TaskRegistry(chain, registry_address)
    state = await registry.get_known_state(task_id)
    cfg = await registry.get_task(task_id)
    head = await chain.block_number()
    found = await registry.get_events(from_block, head) if from_block <= head else []
    events = [e for e in found if e.args.get("taskId") == task_id]
    submissions: dict[tuple[int, str], dict[str, Any]] = {}
    for ev in events:
        if ev.name == "ModelSubmitted":
            submissions[(ev.args["round"], ev.args["device"])] = {
                "round": ev.args["round"],
                "device": ev.args["device"],
                "payee": ev.args["payee"],
                "model_hash": "0x" + ev.args["modelHash"].hex(),
                "epsilon_spent": ev.args["epsilonSpentMilli"] / EPSILON_SCALE,
                "verdict": None,
            }
        elif ev.name == "VerdictPosted":
            sub = submissions.get((ev.args["round"], ev.args["device"]))
            if sub is not None:
                sub["verdict"] = {
                    "accepted": ev.args["accepted"],
                    "accuracy_bp": ev.args["accuracyBp"],
                    "reason": Reason(ev.args["reason"]).name,
                }
    for sub in submissions.values():
        v = await registry.get_verdict(task_id, sub["round"], sub["device"])
        sub["status"] = v["status"].name.lower()
        sub["claimed"] = v["status"] == Status.CLAIMED
        sub["claimable_wei"] = await registry.claimable(task_id, sub["round"], sub["device"])
    rounds = [dict(round=r, **(await registry.get_round(task_id, r))) for r in range(1, state["round"] + 1)]
    for rec in rounds:
        if not rec["settled"]:  # the contract records a round's count at settlement; until then the chain's events
            rec["submissions"] = sum(1 for (r, _) in submissions if r == rec["round"])
    by_reason: dict[str, int] = {}
    for sub in submissions.values():
        if sub["verdict"] is not None:
            by_reason[sub["verdict"]["reason"]] = by_reason.get(sub["verdict"]["reason"], 0) + 1
    summary = {
        "submissions": len(submissions),
        "accepted": sum(bool(s["verdict"] and s["verdict"]["accepted"]) for s in submissions.values()),
        "rejected": sum(bool(s["verdict"] and not s["verdict"]["accepted"]) for s in submissions.values()),
        "pending": sum(s["verdict"] is None for s in submissions.values()),
        "by_reason": by_reason,
    }
    now = (await chain.w3.eth.get_block("latest"))["timestamp"]
    epsilon, delta, clip = decode_dp(cfg)
    spent: dict[str, float] = {}  # device -> the most it declared spent (its latest submission's figure)
    for sub in submissions.values():
        spent[sub["device"]] = max(spent.get(sub["device"], 0.0), sub["epsilon_spent"])
    return {
        "task_id": task_id,
        "phase": state["phase"].name.lower(),
        "round": state["round"],
        "threshold_bp": state["thresholdBp"],
        "deadline": state["deadline"],
        "deadline_in_s": state["deadline"] - now,
        "deadline_of": DEADLINE_OF.get(state["phase"]),
        "privacy": {
            "epsilon": epsilon,
            "delta": delta,
            "clip": clip,
            "rounds": cfg["maxRounds"],
            "mode": privacy_mode_name(cfg["privacyMode"]),
            "declared_spent": spent,
            "devices_over_budget": sorted(d for d, e in spent.items() if e > epsilon + 1e-3),
        },
        "aggregation": {
            "rule": AggregationRule.from_task(cfg).describe(),
            "loss_margin": from_bp(cfg["lossMarginBp"]),
            "root_set_hash": cfg["rootSetHash"] if int(cfg["rootSetHash"], 16) else None,
        },
        "claim_window_s": cfg["claimWindow"],
        "summary": summary,
        "publisher": cfg["publisher"],
        "oracle": cfg["oracle"],
        "reward_wei": cfg["reward"],
        "allocated_wei": cfg["allocated"],
        "refunded_wei": cfg["refunded"],
        "registry_balance_wei": await chain.balance(registry.address),
        "refundable_wei": await registry.refundable(task_id),
        "oracle_balance_wei": await chain.balance(cfg["oracle"]),
        "global_model": cfg["globalModelHash"],
        "rounds": rounds,
        "submissions": list(submissions.values()),
    }


def _eth(wei: int) -> str:
    return f"{wei / 1e18:.6f} ETH"


def _verdict_word(verdict: dict[str, Any]) -> str:
    if not verdict:
        return "pending"
    return "accepted" if verdict["accepted"] else "rejected"


DEADLINE_OF = {
    Phase.OPEN: "submissions close",
    Phase.CLOSED: "the evaluation window ends (then anyone may cancel)",
    Phase.AWAITING_FINALIZE: "finalize is due (then anyone may cancel)",
}


def render_status(report: dict[str, Any]) -> None:
    """Prints a status report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]Task {report['task_id']}[/]  phase [cyan]{report['phase']}[/]  round {report['round']}  "
        f"threshold {report['threshold_bp'] / 100:.2f}%"
    )
    left = report["deadline_in_s"]
    if report["deadline_of"]:
        when = f"in {left} s" if left >= 0 else f"{-left} s ago"
        console.print(f"{report['deadline_of']}: {when}")
    console.print(f"oracle {report['oracle']} (balance {_eth(report['oracle_balance_wei'])})")
    p = report["privacy"]
    from fedoracle.learning.privacy import describe_epsilon

    budget = describe_epsilon(p["epsilon"], p["delta"], p["rounds"], p["mode"])
    console.print(f"privacy mode {p['mode']}; budget declared on-chain: {budget} (clip {p['clip']:g})")
    if p["declared_spent"]:
        values = sorted(p["declared_spent"].values())
        over = p["devices_over_budget"]
        console.print(
            f"spent, as {len(values)} devices declare it with their submissions: ε = {values[0]:.2f} to "
            f"{values[-1]:.2f} of {p['epsilon']:g}" + (f"; [red]over budget: {', '.join(over)}[/]" if over else "")
        )
    a = report["aggregation"]
    gate = (
        f"loss gate: candidate loss at most {a['loss_margin']:.0%} above the global model's"
        if a["loss_margin"]
        else "no loss gate"
    )
    console.print(f"aggregation {a['rule']}; {gate}; claims close {report['claim_window_s']} s after the task ends")
    console.print(
        f"reward {_eth(report['reward_wei'])}  allocated {_eth(report['allocated_wei'])}  "
        f"refunded {_eth(report['refunded_wei'])}  refundable {_eth(report['refundable_wei'])}  "
        f"registry balance {_eth(report['registry_balance_wei'])}"
    )
    s = report["summary"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["by_reason"].items())) or "-"
    console.print(
        f"submissions {s['submissions']}: accepted {s['accepted']}, rejected {s['rejected']}, "
        f"awaiting a verdict {s['pending']}  (reasons: {reasons})"
    )
    rounds = Table("round", "submissions", "accepted", "global acc.", "reward / accepted", "settled")
    for r in report["rounds"]:
        rounds.add_row(
            str(r["round"]),
            str(r["submissions"]),
            str(r["accepted"]),
            f"{r['globalAccuracyBp'] / 100:.2f}%",
            _eth(r["rewardPerAccepted"]),
            str(r["settled"]),
        )
    console.print(rounds)
    subs = Table("round", "device", "verdict", "accuracy", "reason", "ε spent", "claimable", "claimed")
    for s in report["submissions"]:
        v = s["verdict"] or {}
        subs.add_row(
            str(s["round"]),
            s["device"],
            _verdict_word(v),
            f"{v['accuracy_bp'] / 100:.2f}%" if v else "-",
            v.get("reason", "-"),
            f"{s['epsilon_spent']:.2f}",
            _eth(s["claimable_wei"]),
            str(s["claimed"]),
        )
    console.print(subs)
