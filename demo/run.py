"""The main job: one whole secure-FL task on this machine, on embedded defaults.

It starts anvil, an MQTT broker (mosquitto, or the embedded one) and a blob-store folder;
deploys the registry; publishes a task (the publisher is this process); relays chain events to
MQTT; and runs the oracle and the device fleet as **separate processes** of the same CLI a user
would run (``fedoracle oracle run``, ``fedoracle devices run``), so the roles meet only through
the chain, MQTT and the blob store, exactly as across machines. While they work it follows the
chain and shows progress; when the task is finalized and the devices have claimed, it refunds
the publisher, writes the report (JSON + PNG) and stops every process it started, also on
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.services import Anvil, start_broker
from fedoracle import aio
from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, ChainEvent, TaskRegistry, dev_account
from fedoracle.defaults import DEFAULTS, FleetSettings, TaskSettings, TrainingSettings
from fedoracle.errors import DemoError, DemoTimeout, ServiceError
from fedoracle.follow import LogFollower
from fedoracle.procs import stop_process_groups
from relay.relay import Relay

log = logging.getLogger(__name__)

PUBLISHER, ORACLE, FAUCET = 0, 1, 2


@dataclass(frozen=True)
class DemoConfig(TaskSettings, FleetSettings, TrainingSettings):
    """The demo's knobs (the CLI's flags; defaults: :data:`fedoracle.defaults.DEFAULTS`).

    The task, fleet and training fields are :mod:`fedoracle.defaults`' shared groups.

    Attributes:
        count: devices in the fleet (P).
        threshold_margin: the oracle's dynamic-threshold margin.
        out: folder for the run's report.
        timeout: seconds before the demo gives up.
        quiet: no progress display.
        dp: devices clip and noise their updates (``False``: the non-DP baseline, ``devices run --no-dp``).
    """

    count: int = DEFAULTS.devices
    data_path: str | None = None
    threshold_margin: float = DEFAULTS.threshold_margin
    out: str = "runs"
    timeout: int = 900
    quiet: bool = False
    dp: bool = True


class Demo:
    """One run of the main job; :meth:`run` returns the report."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = Path(config.out).resolve() / stamp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.events: list[ChainEvent] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedoracle.cli", "-v", *args],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        logf.close()
        self.procs.append(proc)
        return proc

    def stop_processes(self) -> None:
        """SIGTERM every child's process group, then SIGKILL what is left."""
        stop_process_groups(self.procs, 10)

    async def run(self) -> dict:
        """Runs the job end to end and returns its report (also written to the run's folder).

        Starts anvil and a broker, deploys the registry, publishes the task, runs the relay here and
        the oracle and the device fleet as child processes, follows the task until it is finalized,
        waits for the rewards to be claimed, refunds what is left and builds the report. The services
        and the role processes are stopped once the task is followed, also when that fails.

        Raises:
            DemoError: a role process exited, or the task was cancelled.
            DemoTimeout: the task did not finish within the configured timeout.
        """
        cfg = self.config
        from fedoracle.learning.data import load_dataset
        from publisher.publish import TaskPlan, publish_task

        with Anvil(accounts=10, state_dir=self.dir) as anvil, start_broker() as broker:
            blobs = LocalBlobStore(self.dir / "blobs")
            vault = self.dir / "vault"
            publisher = Chain(anvil.rpc_url, dev_account(PUBLISHER))
            registry = await TaskRegistry.deploy(publisher)
            data = load_dataset(cfg.dataset, path=cfg.data_path)
            plan = TaskPlan(
                dataset=cfg.dataset,
                architecture=cfg.architecture,
                rounds=cfg.rounds,
                threshold=cfg.threshold,
                epsilon=cfg.epsilon,
                delta=cfg.delta,
                clip=cfg.clip,
                dp_scaling=cfg.dp_scaling,
                max_submissions_per_round=cfg.count,
                round_duration=max(120, cfg.timeout // max(1, cfg.rounds)),
                evaluation_window=600,
            )
            published = await publish_task(registry, blobs, vault, plan, dev_account(ORACLE).address, dataset=data)
            task_id = published.task_id
            common = ["--rpc-url", anvil.rpc_url, "--registry", registry.address, "--blob-store", str(blobs.root)]
            relay = Relay(anvil.rpc_url, registry.address, broker.url, from_block=0)
            relay_task = asyncio.create_task(relay.run())
            self._spawn(
                "oracle",
                [
                    "oracle",
                    "run",
                    *common,
                    "--key",
                    f"dev:{ORACLE}",
                    "--vault",
                    str(vault),
                    "--state-dir",
                    str(self.dir / "oracle"),
                    "--threshold-margin",
                    str(cfg.threshold_margin),
                ],
            )
            fleet_args = [
                "devices",
                "run",
                *common,
                "--broker-url",
                broker.url,
                "--count",
                str(cfg.count),
                "--malicious",
                str(cfg.malicious),
                "--unreliable",
                str(cfg.unreliable),
                "--flip-rate",
                str(cfg.flip_rate),
                "--emd",
                str(cfg.emd),
                "--dataset",
                cfg.dataset,
                "--fund-from",
                f"dev:{FAUCET}",
                "--status-file",
                str(self.dir / "fleet.json"),
            ]
            if cfg.data_path:
                fleet_args += ["--data-path", cfg.data_path]
            if cfg.samples_per_device:
                fleet_args += ["--samples-per-device", str(cfg.samples_per_device)]
            fleet_args += [
                "--epochs",
                str(cfg.epochs),
                "--batch-size",
                str(cfg.batch_size),
                "--lr",
                str(cfg.learning_rate),
                "--optimizer",
                cfg.optimizer,
                "--dp-scaling",
                cfg.dp_scaling,
            ]
            if not cfg.dp:
                fleet_args.append("--no-dp")
            self._spawn("devices", fleet_args)
            try:
                await self._follow(registry, task_id, published.block_number)
                claimed = await self._await_claims(registry, task_id)
                refund = await registry.refundable(task_id)
                if refund:
                    await registry.refund(task_id)
                self.events = await registry.get_events(0, await publisher.block_number())
                return await self._report(registry, task_id, plan, claimed, published, data, blobs)
            finally:
                relay_task.cancel()
                await asyncio.gather(relay_task, return_exceptions=True)
                self.stop_processes()

    async def _follow(self, registry: TaskRegistry, task_id: int, start: int) -> None:
        """Follows the task on-chain with progress bars until it is finalized or cancelled."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        cfg = self.config
        follower = LogFollower(registry, start, poll_interval=0.2)
        console = Console(stderr=True, quiet=cfg.quiet)
        deadline = time.monotonic() + cfg.timeout
        with Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
        ) as progress:
            rounds_bar = progress.add_task("rounds", total=cfg.rounds, note="")
            train_bar = progress.add_task("local training + submissions", total=cfg.count, note="")
            eval_bar = progress.add_task("oracle evaluations (verdicts)", total=cfg.count, note="")
            phase = progress.add_task("contract phase", total=None, note="open, round 1")
            accepted = rejected = 0
            while True:
                if time.monotonic() > deadline:
                    raise DemoTimeout(f"the task did not finish in {cfg.timeout}s (logs in {self.dir})")
                for p in self.procs:
                    if p.poll() is not None:
                        raise DemoError(f"{p.args[4]} exited with code {p.returncode} (see {self.dir})")
                batch = await follower.poll()
                if batch is None:
                    await asyncio.sleep(0.2)
                    continue
                for ev in batch.events:
                    a = ev.args
                    if a.get("taskId") != task_id or ev.removed:
                        continue
                    if ev.name == "ModelSubmitted":
                        progress.advance(train_bar)
                    elif ev.name == "SubmissionsClosed":
                        progress.update(phase, note=f"closed, round {a['round']}: evaluating")
                    elif ev.name == "TestDataDisclosed":
                        progress.update(phase, note=f"round {a['round']}: test groups disclosed")
                    elif ev.name == "VerdictPosted":
                        accepted += a["accepted"]
                        rejected += not a["accepted"]
                        progress.update(eval_bar, advance=1, note=f"{accepted} accepted, {rejected} rejected")
                    elif ev.name == "GlobalModelUpdated":
                        progress.update(rounds_bar, advance=1, note=f"global acc. {a['globalAccuracyBp'] / 100:.2f}%")
                    elif ev.name == "RoundOpened":
                        progress.reset(train_bar)
                        progress.reset(eval_bar)
                        accepted = rejected = 0
                        progress.update(phase, note=f"open, round {a['round']}")
                    elif ev.name in ("TaskFinalized", "TaskCancelled"):
                        progress.update(phase, note=ev.name.removeprefix("Task").lower())
                        if ev.name == "TaskCancelled":
                            raise DemoError("the task was cancelled")
                        return

    async def _await_claims(self, registry: TaskRegistry, task_id: int, timeout: float = 60) -> int:
        """Waits until every accepted submission's reward is claimed; returns how many were."""
        deadline = time.monotonic() + timeout
        while True:
            state = await registry.get_state(task_id)
            pending = 0
            for r in range(1, state["round"] + 1):
                rec = await registry.get_round(task_id, r)
                pending += rec["accepted"]
            claimed = sum(
                1
                for e in await registry.get_events(0, await registry.chain.block_number())
                if e.name == "RewardClaimed" and e.args["taskId"] == task_id
            )
            if claimed >= pending or time.monotonic() > deadline:
                return claimed
            await asyncio.sleep(0.3)

    async def _verify(self, registry: TaskRegistry, task_id: int, blobs: Any) -> dict[str, Any]:
        """``fedoracle verify``'s re-check of every settled round, as anyone without a key or the vault runs it."""
        from fedoracle.verify import verify_task

        checks = await verify_task(registry.chain.rpc_url, registry.address, blobs, task_id)
        return {"agrees": all(c.agrees for c in checks), "rounds": [c.summary() for c in checks]}

    async def _report(self, registry: TaskRegistry, task_id: int, plan, claimed: int, published, data, blobs) -> dict:
        from demo.audit import audit_demo
        from demo.report import build_report, gas_by_function, write_report
        from fedoracle.codec import decode
        from fedoracle.learning.models import model_spec

        fleet_file = self.dir / "fleet.json"
        fleet = json.loads(fleet_file.read_text()) if fleet_file.exists() else {}
        txs = sorted({e.tx_hash for e in self.events}, key=lambda h: h)
        gas = await gas_by_function(registry, txs)
        state = await registry.get_state(task_id)
        cfg = await registry.get_task(task_id)
        spec = model_spec(plan.architecture, data.input_shape, data.num_classes)
        initial = decode(blobs.get(published.initial_model_hash, max_bytes=spec.max_bytes), spec)
        chain_id = await registry.chain.chain_id()
        audit = audit_demo(
            self.config, data, spec, initial, self.events, task_id, blobs, fleet, chain_id, registry.address
        )
        recheck = await self._verify(registry, task_id, blobs)
        report = build_report(
            task_id,
            self.events,
            fleet,
            gas,
            extra={
                "config": {k: v for k, v in vars(self.config).items()},
                "threshold": plan.initial_threshold,
                "clip": plan.clip,
                "phase": state["phase"].name.lower(),
                "claims": claimed,
                "registry_balance_wei": await registry.chain.balance(registry.address),
                "reward_wei": cfg["reward"],
                "refunded_wei": cfg["refunded"],
                "run_dir": str(self.dir),
                "privacy_audit": audit,
                "verify": recheck,
            },
        )
        write_report(report, self.dir)
        return report


def print_summary(report: dict) -> None:
    """The report on screen."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"Task {report['task_id']} — {report['phase']}", show_lines=False)
    t.add_column("round")
    t.add_column("submissions", justify="right")
    t.add_column("accepted", justify="right")
    t.add_column("global accuracy", justify="right")
    for r in report["rounds"]:
        t.add_row(
            str(r["round"]),
            str(r["submissions"]),
            str(r.get("accepted", "-")),
            f"{100 * r['global_accuracy']:.2f}%" if "global_accuracy" in r else "-",
        )
    console.print(t)
    c = Table(title="by device class")
    for col in ("class", "devices", "accepted", "rejected", "rewards (ETH)"):
        c.add_column(col, justify="right" if col != "class" else "left")
    for kind in ("honest", "unreliable", "malicious"):
        v = report["verdicts_by_class"].get(kind, {})
        c.add_row(
            kind,
            str(report["devices_by_class"].get(kind, 0)),
            str(v.get("accepted", 0)),
            str(v.get("rejected", 0)),
            f"{report['rewards_wei_by_class'].get(kind, 0) / 1e18:.4f}",
        )
    console.print(c)
    g = Table(title="gas per function")
    for col in ("function", "calls", "mean gas", "max gas"):
        g.add_column(col)
    for name, s in report["gas"].items():
        g.add_row(name, str(s["count"]), f"{s['mean']:,.0f}", f"{s['max']:,}")
    console.print(g)
    eps = report["epsilon_spent"]
    if eps["max"] is not None:
        from fedoracle.learning.privacy import describe_epsilon

        rounds, delta = len(report["rounds"]), report["config"]["delta"]
        console.print(
            "privacy spent, at most: "
            + describe_epsilon(eps["max"], delta, rounds, report["config"].get("dp_scaling", DEFAULTS.dp_scaling))
        )
    audit = report.get("privacy_audit") or {}
    if "advantage_mean" in audit:
        from fedoracle.learning.audit import describe_audit

        console.print(describe_audit(audit))
    elif audit:
        console.print(f"privacy audit skipped: {audit.get('skipped')}")
    recheck = report.get("verify") or {}
    if recheck:
        word = "every verdict and global model agrees" if recheck["agrees"] else "[red]DISAGREEMENTS[/]"
        console.print(f"re-checked from the chain alone (fedoracle verify): {word}")
    console.print(f"report: {report['run_dir']}/report.json, accuracy.png, verdicts.png")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_demo(config: DemoConfig) -> int:
    """Runs the demo; returns the process exit code (130 when interrupted)."""
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated demo cleans up like Ctrl-C
    demo = Demo(config)
    try:
        report = aio.run(demo.run())
    except KeyboardInterrupt:
        demo.stop_processes()
        print("interrupted; every process stopped", file=sys.stderr)
        return 130
    except (DemoError, ServiceError, RuntimeError, TimeoutError) as exc:  # ours, and (as before) a library's
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        from demo.services import stop_all
        from fedoracle.procs import stop_children

        stop_all()
        stop_children()
    if not config.quiet:
        print_summary(report)
    return 0
