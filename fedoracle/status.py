"""A task's status as the chain tells it: phase, rounds, submissions, verdicts and balances."""

from __future__ import annotations

from typing import Any

from fedoracle.chain import Chain, Status, TaskRegistry
from fedoracle.errors import Reason


async def task_status(rpc_url: str, registry_address: str, task_id: int, from_block: int = 0) -> dict[str, Any]:
    """Collects everything ``fedoracle status`` shows, from views and events."""
    chain = Chain(rpc_url)
    registry = TaskRegistry(chain, registry_address)
    cfg = await registry.get_task(task_id)
    state = await registry.get_state(task_id)
    head = await chain.block_number()
    events = [e for e in await registry.get_events(from_block, head) if e.args.get("taskId") == task_id]
    submissions: dict[tuple[int, str], dict[str, Any]] = {}
    for ev in events:
        if ev.name == "ModelSubmitted":
            submissions[(ev.args["round"], ev.args["device"])] = {
                "round": ev.args["round"], "device": ev.args["device"], "payee": ev.args["payee"],
                "model_hash": "0x" + ev.args["modelHash"].hex(), "verdict": None}
        elif ev.name == "VerdictPosted":
            sub = submissions.get((ev.args["round"], ev.args["device"]))
            if sub is not None:
                sub["verdict"] = {"accepted": ev.args["accepted"], "accuracy_bp": ev.args["accuracyBp"],
                                  "reason": Reason(ev.args["reason"]).name}
    for sub in submissions.values():
        v = await registry.get_verdict(task_id, sub["round"], sub["device"])
        sub["claimed"] = v["status"] == Status.CLAIMED
    rounds = [dict(round=r, **(await registry.get_round(task_id, r))) for r in range(1, state["round"] + 1)]
    return {
        "task_id": task_id,
        "phase": state["phase"].name.lower(),
        "round": state["round"],
        "threshold_bp": state["thresholdBp"],
        "deadline": state["deadline"],
        "publisher": cfg["publisher"],
        "oracle": cfg["oracle"],
        "reward_wei": cfg["reward"],
        "allocated_wei": cfg["allocated"],
        "refunded_wei": cfg["refunded"],
        "registry_balance_wei": await chain.balance(registry.address),
        "global_model": cfg["globalModelHash"],
        "rounds": rounds,
        "submissions": list(submissions.values()),
    }


def render_status(report: dict[str, Any]) -> None:
    """Prints a status report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    eth = lambda wei: f"{wei / 1e18:.6f} ETH"  # noqa: E731
    console.print(f"[bold]Task {report['task_id']}[/]  phase [cyan]{report['phase']}[/]  round {report['round']}  "
                  f"threshold {report['threshold_bp'] / 100:.2f}%")
    console.print(f"reward {eth(report['reward_wei'])}  allocated {eth(report['allocated_wei'])}  "
                  f"refunded {eth(report['refunded_wei'])}  registry balance {eth(report['registry_balance_wei'])}")
    rounds = Table("round", "submissions", "accepted", "global acc.", "reward / accepted", "settled")
    for r in report["rounds"]:
        rounds.add_row(str(r["round"]), str(r["submissions"]), str(r["accepted"]),
                       f"{r['globalAccuracyBp'] / 100:.2f}%", eth(r["rewardPerAccepted"]), str(r["settled"]))
    console.print(rounds)
    subs = Table("round", "device", "verdict", "accuracy", "reason", "claimed")
    for s in report["submissions"]:
        v = s["verdict"] or {}
        subs.add_row(str(s["round"]), s["device"][:12], {True: "accepted", False: "rejected"}.get(v.get("accepted"), "-"),
                     f"{v['accuracy_bp'] / 100:.2f}%" if v else "-", v.get("reason", "-"), str(s["claimed"]))
    console.print(subs)
