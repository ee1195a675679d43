"""Benchmark of one oracle round's phases at P submissions: the previous pipeline beside the current one, same run.

Phases, each timed from the oracle's own records: **scoring** (first evaluation started to last
finished, and how many evaluations ran for P submissions), **verdicts** (disclosure mined to the
last verdict mined), **aggregation** (last verdict mined to the aggregate transaction mined) and
**close to aggregate** (the round's last submission to its aggregate transaction).

``before`` is :class:`LegacyOracle`, this file's copy of the oracle as it was before issue 18:
verdicts one transaction at a time, each awaited with web3's 100 ms receipt polling;
each candidate evaluated in a TFF call of its own (:class:`LegacyScorer`);
aggregation reading every verdict back with its own ``getVerdict``; prefetching that could start
a second evaluation of a model scored during a chain read. ``after`` is :class:`oracle.daemon.Oracle`
unchanged. Both run the same protocol end to end against a fresh anvil each (automine), an MNIST
``small_cnn`` task of one round capped at P, 1,000 hidden test examples and the default
in-process pool (2 threads); P devices submit as fast as the node takes them while the oracle
runs (80 % distinct trained updates, 20 % useless ones).

Writes ``bench/results/oracle_round.json`` and ``bench/results/oracle_round.md``. Run with
``./run python bench/oracle_round_bench.py`` (``--p 100``, ``--repeat 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from demo.services import Anvil
from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, Phase, Status, Submission, TaskRegistry, dev_account
from fedoracle.codec import decode, encode, spec_from_blob
from fedoracle.errors import ModelRejected, Reason
from fedoracle.learning.rounds import candidate
from fedoracle.seal import SealContext, open_update, seal
from fedoracle.units import BP, floor_bp
from oracle.daemon import Oracle, OracleConfig, TaskView
from oracle.pool import InProcessPool
from oracle.scoring import ScoreJob, Scorer
from oracle.store import Score
from publisher.publish import TaskPlan, publish_task

RESULTS = Path(__file__).parent / "results"
ORACLE, FIRST_DEVICE = 1, 10


class TimedPool(InProcessPool):
    """The in-process pool, recording when each evaluation ran and how often each model was evaluated."""

    def __init__(self, scorer: Scorer, workers: int, chunk: int) -> None:
        super().__init__(scorer, workers, chunk)
        self.spans: list[tuple[float, float]] = []
        self.calls: Counter[str] = Counter()

    async def score(self, job: ScoreJob) -> Score:
        assert job.submission is not None
        self.calls[job.submission.model_hash] += 1
        t0 = time.time()
        score = await super().score(job)
        self.spans.append((t0, time.time()))
        return score


class LegacyScorer(Scorer):
    """Scoring as it was before issue 18: one ``Evaluator.evaluate`` call per candidate (for comparison only)."""

    def score_many(self, jobs: Any) -> list[Score]:
        out = []
        for job in jobs:
            t0 = time.perf_counter()
            try:
                ctx = self.context(job)
                _, update = open_update(
                    self.blobs, job.submission, ctx.spec, job.seal_secret, job.chain_id, job.registry
                )
                model = candidate(ctx.global_weights, update)
                if not all(np.all(np.isfinite(c)) for c in model):
                    out.append(Score(0, int(Reason.NON_FINITE), "global + update overflows", time.perf_counter() - t0))
                    continue
                acc = floor_bp(ctx.evaluator.evaluate(model).accuracy)
                out.append(Score(acc, int(Reason.OK), "", time.perf_counter() - t0))
            except ModelRejected as exc:
                out.append(Score(0, int(exc.reason), exc.detail[:300], time.perf_counter() - t0))
            except ValueError as exc:
                out.append(Score(0, int(Reason.UNDECODABLE), str(exc)[:300], time.perf_counter() - t0))
        return out


class TimedOracle(Oracle):
    """The oracle, timing the parts of a round's verdict phase: the copy rule, the sending, the aggregation's reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spent: defaultdict[str, float] = defaultdict(float)

    def _copy_rule(self, *args: Any) -> Any:
        t0 = time.time()
        try:
            return super()._copy_rule(*args)
        finally:
            self.spent["copy_rule_s"] += time.time() - t0

    async def _send_pipelined(self, task_id: int, round_: int, action: str, calls: Any) -> None:
        t0 = time.time()
        try:
            await self._post(task_id, round_, action, calls)
        finally:
            self.spent["verdict_sending_s"] += time.time() - t0

    async def _post(self, task_id: int, round_: int, action: str, calls: Any) -> None:
        await Oracle._send_pipelined(self, task_id, round_, action, calls)

    async def _accepted(self, task_id: int, round_: int, subs: list[Submission]) -> list[Submission]:
        t0 = time.time()
        try:
            return await self._read_accepted(task_id, round_, subs)
        finally:
            self.spent["aggregation_verdict_reads_s"] += time.time() - t0

    async def _read_accepted(self, task_id: int, round_: int, subs: list[Submission]) -> list[Submission]:
        return await Oracle._accepted(self, task_id, round_, subs)


class LegacyOracle(TimedOracle):
    """The oracle's round as it was before issue 18 (for comparison only; never used outside this benchmark)."""

    async def _post(self, task_id: int, round_: int, action: str, calls: Any) -> None:
        self.registry.chain.receipt_poll = 0.1  # web3's default, which transact used
        for subject, send, fields in calls:

            async def sent_and_mined(send: Any = send) -> dict[str, Any]:
                return await self.registry.chain.wait(await send())

            await self._send(task_id, round_, action, subject, sent_and_mined(), **fields)

    async def _read_accepted(self, task_id: int, round_: int, subs: list[Submission]) -> list[Submission]:
        accepted = []
        for sub in subs:
            v = await self.registry.get_verdict(task_id, round_, sub.device)
            if v["status"] in (Status.ACCEPTED, Status.CLAIMED):
                accepted.append(sub)
        return accepted

    def _start_scoring(self, view: TaskView, round_: int, global_hash: str, sub: Submission) -> asyncio.Future[Score]:
        key = (sub.task_id, sub.round, sub.device.lower(), sub.model_hash)
        fut = self._scoring.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self.pool.score(self._job(view, round_, global_hash, sub)))
            self._scoring[key] = fut
            fut.add_done_callback(functools.partial(self._scored, key, sub))
        return fut


async def run_round(variant: str, p: int, mnist: Any, trained: list[NDArray[Any]], workers: int) -> dict[str, Any]:
    """One whole round of P submissions with the ``before`` or ``after`` oracle; its phase times."""
    cls = LegacyOracle if variant == "before" else TimedOracle
    with Anvil(accounts=FIRST_DEVICE + p + 5) as node, tempfile.TemporaryDirectory() as tmp:
        blobs, vault = LocalBlobStore(Path(tmp) / "blobs"), Path(tmp) / "vault"
        registry = await TaskRegistry.deploy(Chain(node.rpc_url, dev_account(0)))
        plan = TaskPlan(
            rounds=1,
            threshold=0.5,
            test_examples=1000,
            max_submissions_per_round=p,
            reward_eth=1.0,
            round_duration=7200,
            evaluation_window=7200,
        )
        published = await publish_task(registry, blobs, vault, plan, dev_account(ORACLE).address, dataset=mnist)
        task_id = published.task_id
        spec = spec_from_blob(blobs.get(published.spec_hash), published.spec_hash)
        scorer = LegacyScorer(blobs, str(vault)) if variant == "before" else Scorer(blobs, str(vault))
        pool = TimedPool(scorer, workers, chunk=1 if variant == "before" else 32)
        oracle = cls(
            Chain(node.rpc_url, dev_account(ORACLE)),
            registry.address,
            blobs,
            pool,
            OracleConfig(
                vault=vault,
                state_dir=Path(tmp) / "state",
                poll_interval=0.05,
                from_block=published.block_number,
                threshold_margin=None,
            ),
        )
        ready = asyncio.Event()
        daemon = asyncio.create_task(oracle.run(ready))
        await ready.wait()
        devices = [TaskRegistry(Chain(node.rpc_url, dev_account(FIRST_DEVICE + i)), registry.address) for i in range(p)]
        rng = np.random.default_rng(0)
        chain_id = await registry.chain.chain_id()
        try:
            g_hash = (await registry.get_task(task_id))["globalModelHash"]
            global_w = decode(blobs.get(g_hash), spec)
            delta = [w - g for w, g in zip(trained, global_w, strict=True)]
            while not int(key := (await registry.get_round(task_id, 1))["sealKey"], 16):
                await asyncio.sleep(0.05)
            for i, dev in enumerate(devices):
                if i % 5 == 4:
                    update = [rng.normal(0, 50, g.shape).astype(g.dtype) for g in global_w]
                else:
                    update = [(d + rng.normal(0, 0.5 * np.sqrt(np.mean(d**2)), d.shape)).astype(d.dtype) for d in delta]
                ctx = SealContext(chain_id, registry.address, task_id, 1, dev.chain.address)
                digest = blobs.put(seal(encode(update, spec), key, ctx))
                await dev.submit(task_id, digest, blobs.uri(digest), dev.chain.address, 100, max_threshold_bp=BP)
            closed_at = time.time()
            while (await registry.get_state(task_id))["phase"] != Phase.FINALIZED:
                if daemon.done():
                    daemon.result()
                await asyncio.sleep(0.1)
            rows = [r for r in oracle.checkpoint.action_rows(task_id=task_id) if r["status"] == "mined"]
            record = await registry.get_round(task_id, 1)
        finally:
            oracle.stopped.set()
            await daemon
            await oracle.close()
    at = {r["action"]: r["at"] for r in rows}  # the last of each action
    verdicts = [r["at"] for r in rows if r["action"] == "verdict"]
    assert len(verdicts) == p, (variant, len(verdicts), p)
    starts, ends = zip(*pool.spans, strict=True)
    return {
        "submissions": p,
        "accepted": record["accepted"],
        "evaluations": sum(pool.calls.values()),
        "models_evaluated_twice_or_more": sum(1 for c in pool.calls.values() if c > 1),
        "scoring_s": max(ends) - min(starts),
        "evaluation_s_mean": float(np.mean([e - s for s, e in pool.spans])),  # queueing for a thread included
        "verdicts_s": max(verdicts) - at["disclose"],
        "verdicts_after_last_score_s": max(verdicts) - max(max(ends), at["disclose"]),
        "per_verdict_ms": (max(verdicts) - at["disclose"]) / p * 1000,
        "aggregation_s": at["aggregate"] - max(verdicts),
        "close_to_aggregate_s": at["aggregate"] - closed_at,
        "global_accuracy_bp": record["globalAccuracyBp"],
        "copy_rule_s": oracle.spent["copy_rule_s"],
        "verdict_sending_s": oracle.spent["verdict_sending_s"],
        "per_verdict_sent_ms": oracle.spent["verdict_sending_s"] / p * 1000,
        "aggregation_verdict_reads_s": oracle.spent["aggregation_verdict_reads_s"],
    }


def train_update(mnist: Any) -> list[NDArray[Any]]:
    """One honest device's trained weights (its update is these minus the round's global model)."""
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.training import local_train

    spec = model_spec("small_cnn", mnist.input_shape, mnist.num_classes)
    return local_train(
        spec,
        initial_weights(spec, 0),
        mnist.x_train[:3000],
        mnist.y_train[:3000],
        epochs=1,
        batch_size=64,
        learning_rate=2e-3,
    )


def warm_up(mnist: Any, trained: list[NDArray[Any]]) -> None:
    """Starts TFF's worker before the first round, so that neither variant pays for it."""
    from fedoracle.learning.evaluation import Evaluator
    from fedoracle.learning.models import model_spec

    Evaluator(
        model_spec("small_cnn", mnist.input_shape, mnist.num_classes), mnist.x_test[:10], mnist.y_test[:10]
    ).evaluate(trained)


def main() -> None:
    """Runs the rounds (before, after, alternating) and writes the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--p", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from fedoracle.learning.data import load_dataset

    mnist = load_dataset("mnist")
    trained = train_update(mnist)
    warm_up(mnist, trained)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for _ in range(args.repeat):
        for variant in ("before", "after"):
            result = asyncio.run(run_round(variant, args.p, mnist, trained, args.workers))
            print(variant, json.dumps(result))
            runs[variant].append(result)
    load = os.getloadavg()
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in load],
            "note": "shared machine; other engineers' test suites may have been running",
        },
        "chain": "anvil, automine (one block per transaction)",
        "oracle": f"in-process, InProcessPool ({args.workers} threads), poll interval 0.05 s",
        "p": args.p,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oracle_round.json").write_text(json.dumps(doc, indent=1) + "\n")
    keys = [
        ("evaluations", "evaluations", "{:.0f}"),
        ("models evaluated twice or more", "models_evaluated_twice_or_more", "{:.0f}"),
        ("scoring (s)", "scoring_s", "{:.2f}"),
        ("verdicts: disclosure to last verdict (s)", "verdicts_s", "{:.2f}"),
        ("verdicts: last score (or disclosure) to last verdict (s)", "verdicts_after_last_score_s", "{:.2f}"),
        ("  of which the copy rule (s)", "copy_rule_s", "{:.2f}"),
        ("  of which sending the verdicts, receipts in (s)", "verdict_sending_s", "{:.2f}"),
        ("  per verdict sent (ms)", "per_verdict_sent_ms", "{:.1f}"),
        ("aggregation: last verdict to aggregate (s)", "aggregation_s", "{:.2f}"),
        ("  of which reading the verdicts back (s)", "aggregation_verdict_reads_s", "{:.3f}"),
        ("round: last submission to aggregate (s)", "close_to_aggregate_s", "{:.2f}"),
    ]

    def cell(variant: str, key: str, fmt: str) -> str:
        return " / ".join(fmt.format(r[key]) for r in runs[variant])

    rows = "\n".join(f"| {name} | {cell('before', k, f)} | {cell('after', k, f)} |" for name, k, f in keys)
    command = f"./run python bench/oracle_round_bench.py --p {args.p} --repeat {args.repeat}"
    (
        RESULTS / "oracle_round.md"
    ).write_text(f"""# A round's phases at P = {args.p}: before and after issue 18 (same run)

`{command}` on a {os.cpu_count()}-core shared machine
(load average at the end {load[0]:.1f}: rough numbers). One MNIST small_cnn round capped at P, 1,000
hidden test examples, anvil with automine, the oracle in-process with {args.workers} evaluation threads,
running while the P devices submit (80 % distinct trained updates, 20 % useless). Several runs are shown as a / b / ...

- before: the oracle as it was (`LegacyOracle`, `LegacyScorer` in the benchmark): one TFF evaluation per
  candidate, verdicts one at a time with web3's 100 ms receipt polling, aggregation reading each verdict
  back, prefetch able to score a model twice.
- after: `oracle.daemon.Oracle`: verdicts pipelined (consecutive nonces, receipts collected afterwards,
  10 ms polling), the round's verdicts read in one `eth_getLogs`, each model evaluated once, the
  candidates that wait for a busy thread scored together in one TFF call (chunks of up to 32).

| phase | before | after |
|---|---|---|
{rows}

Aggregation includes opening the accepted updates, the TFF weighted mean, evaluating and storing the
new global model and the aggregate transaction. Scoring overlaps the submissions in both.
""")


if __name__ == "__main__":
    main()
