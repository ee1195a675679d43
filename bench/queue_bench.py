"""Benchmark: oracle evaluations per minute, in-process pool vs taskiq/Redis queue workers.

Scores the same N submissions (real small_cnn updates on a 2,000-example round of MNIST test
groups) with the in-process thread pool and with 1, 2 and 4 ``fedoracle oracle worker``
processes over a Redis started here; and measures the per-job overhead of the queue with jobs
that cost no evaluation (a missing blob, rejected at once). Writes bench/results/queue.json and
queue.md.

    ./run python bench/queue_bench.py [--jobs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.services import RedisServer  # noqa: E402
from fedoracle.blobstore import LocalBlobStore  # noqa: E402
from fedoracle.chain import Submission  # noqa: E402
from fedoracle.codec import encode_with_hash  # noqa: E402
from fedoracle.hidden import HiddenTestSet  # noqa: E402
from fedoracle.procs import stop_process_groups  # noqa: E402
from oracle.pool import InProcessPool  # noqa: E402
from oracle.queue import QueuePool  # noqa: E402
from oracle.scoring import ScoreJob, Scorer  # noqa: E402


def setup(tmp: Path, jobs: int) -> tuple[LocalBlobStore, Path, list[ScoreJob], list[ScoreJob]]:
    from fedoracle.learning.data import encode_group, load_dataset, split_groups
    from fedoracle.learning.models import initial_weights, model_spec
    from fedoracle.learning.training import local_train

    mnist = load_dataset("mnist")
    blobs, vault = LocalBlobStore(tmp / "blobs"), tmp / "vault"
    spec = model_spec("small_cnn", mnist.input_shape, mnist.num_classes)
    blobs.put(spec.canonical_json())
    init = initial_weights(spec, 0)
    data, global_hash = encode_with_hash(init, spec)
    blobs.put(data)
    groups = [encode_group(x, y) for x, y in split_groups(mnist.x_test[:4000], mnist.y_test[:4000], 2)]
    hidden = HiddenTestSet.create(vault, groups, 1)
    trained = local_train(
        spec, init, mnist.x_train[:1000], mnist.y_train[:1000], epochs=1, batch_size=64, learning_rate=2e-3, seed=0
    )
    rng = np.random.default_rng(0)
    real, cheap = [], []
    for i in range(jobs):
        update = [(t - g + rng.normal(0, 1e-4, g.shape)).astype(g.dtype) for t, g in zip(trained, init, strict=True)]
        digest = blobs.put(encode_with_hash(update, spec)[0])
        sub = Submission(1, 1, f"0x{i:040x}", f"0x{i:040x}", digest, "", 5000, 100)
        real.append(ScoreJob(1, 1, spec.spec_hash, global_hash, hidden.root, sub))
        missing = Submission(1, 1, f"0x{i:040x}", f"0x{i:040x}", "0x" + f"{i:064x}", "", 5000, 100)
        cheap.append(ScoreJob(1, 1, spec.spec_hash, global_hash, hidden.root, missing))
    return blobs, vault, real, cheap


async def timed(pool, jobs: list[ScoreJob], concurrent: int) -> tuple[float, list[float]]:
    """Wall time for all jobs (at most ``concurrent`` in flight), and each job's latency."""
    sem = asyncio.Semaphore(concurrent)
    latencies: list[float] = []

    async def one(job: ScoreJob) -> None:
        async with sem:
            t0 = time.perf_counter()
            await pool.score(job)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return time.perf_counter() - t0, latencies


def start_workers(n: int, url: str, blobs: Path, vault: Path) -> list[subprocess.Popen]:
    argv = [
        sys.executable,
        "-m",
        "fedoracle.cli",
        "oracle",
        "worker",
        "--queue",
        url,
        "--blob-store",
        str(blobs),
        "--vault",
        str(vault),
        "--log-format",
        "text",
    ]
    return [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        for _ in range(n)
    ]


async def main(jobs: int) -> dict:
    results: dict = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
        "load_average_at_start": os.getloadavg()[0],
        "jobs": jobs,
        "model": "small_cnn, 2,000 test examples per evaluation",
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        blobs, vault, real, cheap = setup(Path(tmp), jobs)
        pool = InProcessPool(Scorer(blobs, str(vault)), workers=2)
        await pool.score(real[0])  # warm up: TF/TFF start, round context built
        wall, lat = await timed(pool, real, 2)
        results["runs"]["in-process (2 threads)"] = {"evals_per_min": 60 * jobs / wall, "p50_s": statistics.median(lat)}
        _, cheap_lat = await timed(pool, cheap, 1)
        results["overhead"] = {"in_process_p50_ms": 1000 * statistics.median(cheap_lat)}
        await pool.close()
        for n, db in ((1, 1), (2, 2), (4, 3)):
            url = redis.url.rsplit("/", 1)[0] + f"/{db}"
            workers = start_workers(n, url, blobs.root, vault)
            queue = QueuePool(url, job_timeout=300)
            try:
                await asyncio.gather(*(queue.score(j) for j in real[:n]))  # warm every worker up
                wall, lat = await timed(queue, real, 2 * n)
                results["runs"][f"queue, {n} worker{'s' * (n > 1)}"] = {
                    "evals_per_min": 60 * jobs / wall,
                    "p50_s": statistics.median(lat),
                }
                if n == 1:
                    _, qlat = await timed(queue, cheap, 1)
                    results["overhead"]["queue_p50_ms"] = 1000 * statistics.median(qlat)
            finally:
                await queue.close()
                stop_process_groups(workers, 30)
    from fedoracle.learning.runtime import stop_workers

    stop_workers()
    results["load_average_at_end"] = os.getloadavg()[0]
    return results


def write(results: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "queue.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Oracle evaluations: in-process pool vs queue workers",
        "",
        f"{results['machine']}; {results['jobs']} jobs; {results['model']}; load average "
        f"{results['load_average_at_start']:.1f} at the start and {results['load_average_at_end']:.1f} at the "
        "end (other work shared the machine: compare the rows with each other, not with other files).",
        "",
        "| pool | evaluations / min | p50 latency (s) |",
        "|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['evals_per_min']:.0f} | {r['p50_s']:.2f} |")
    o = results["overhead"]
    lines += [
        "",
        f"Per-job overhead (a job that needs no evaluation): in-process {o['in_process_p50_ms']:.1f} ms, "
        f"queue {o.get('queue_p50_ms', float('nan')):.1f} ms (Redis round trips + the result poll).",
        "",
        "On 2 cores the cores, not the queue, are the limit: every pool competes for the same two "
        "cores (one evaluation already uses both through TF's threads), so more workers raise latency "
        "more than throughput, and rows measured under load vary by up to ~1.6x between runs. The "
        "queue's own cost is a few ms per job, small beside an evaluation: it pays off with workers on "
        "other hosts.",
    ]
    (out / "queue.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    res = asyncio.run(main(parser.parse_args().jobs))
    write(res)
    print(json.dumps(res, indent=1))
