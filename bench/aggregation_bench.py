"""Benchmark of FedAvg at the small CNN's layout: numpy's weighted mean, the previous TFF computation, the current one.

Same run, same updates (random float32 tensors at ``small_cnn``'s MNIST layout, one per device,
declared sample counts 150-250), P = 10, 100 and 300:

- ``numpy``: ``np.tensordot(w, np.stack(...)) / sum(w)`` per tensor, the floor a user would write;
- ``before``: the FedAvg of the project before issue 18, a ``tff.federated_computation`` of
  ``tff.federated_mean`` over the updates placed at ``tff.CLIENTS`` (its arguments sent to TFF's
  worker over gRPC);
- ``after``: :func:`fedoracle.learning.aggregation.aggregate` as it is (one
  ``tff.tensorflow.computation``, a matrix-vector product over the stacked updates, read by the
  worker from a temporary file).

Each figure is the best of 5 calls after one warm-up call (the computations are built and cached
by then). Writes ``bench/results/aggregation.json`` and ``bench/results/aggregation.md``. Run with
``./run python bench/aggregation_bench.py``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedoracle.learning.aggregation import aggregate
from fedoracle.learning.models import build_model
from fedoracle.learning.runtime import tff_runtime

RESULTS = Path(__file__).parent / "results"
PS = (10, 100, 300)


def _best(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _before(shapes: list[tuple[int, ...]]) -> Callable[..., Any]:
    tff = tff_runtime()
    value_type = tff.StructType([(None, tff.TensorType(np.float32, s)) for s in shapes])
    return tff.federated_computation(
        tff.FederatedType(value_type, tff.CLIENTS), tff.FederatedType(np.float32, tff.CLIENTS)
    )(lambda values, weights: tff.federated_mean(values, weight=weights))


def main() -> None:
    """Measures the three FedAvg implementations and writes the results."""
    shapes = [tuple(w.shape) for w in build_model("small_cnn", (28, 28, 1), 10).get_weights()]
    before = _before(shapes)
    rng = np.random.default_rng(0)
    rows = []
    for p in PS:
        updates = [[(rng.normal(size=s) * 0.05).astype(np.float32) for s in shapes] for _ in range(p)]
        w = rng.integers(150, 250, size=p).astype(np.float32)
        t_np, want = _best(
            lambda u=updates, w=w: [np.tensordot(w, np.stack([x[i] for x in u]), axes=1) / w.sum() for i in range(8)]
        )
        t_before, got_before = _best(lambda u=updates, w=w: before([list(x) for x in u], list(w)))
        t_after, got_after = _best(lambda u=updates, w=w: aggregate(u, weights=w))
        err = max(
            float(np.max(np.abs(np.asarray(g) - np.asarray(e))))
            for got in (got_before, got_after)
            for g, e in zip(got, want, strict=True)
        )
        rows.append(
            {
                "p": p,
                "numpy_s": round(t_np, 4),
                "before_s": round(t_before, 4),
                "after_s": round(t_after, 4),
                "after_over_numpy": round(t_after / t_np, 1),
                "before_over_after": round(t_before / t_after, 1),
                "max_abs_diff_to_numpy": err,
            }
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()
    doc = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": [round(x, 2) for x in load],
        "model": "small_cnn (MNIST), 56,714 float32 parameters",
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aggregation.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# FedAvg at the small CNN's layout: numpy, the previous TFF computation, the current one (same run)",
        "",
        f"`./run python bench/aggregation_bench.py` on a {os.cpu_count()}-core shared machine (load average at "
        f"the end {load[0]:.1f}). Best of 5 calls each; weights 150-250 (declared sample counts).",
        "",
        "- numpy: `np.tensordot(w, np.stack(updates)) / sum(w)` per tensor;",
        "- before: `tff.federated_mean` over the updates placed at `tff.CLIENTS` (sent to TFF's worker over gRPC);",
        "- after: `aggregate` now: one `tff.tensorflow.computation` (a matrix-vector product over the stacked",
        "  updates, which the worker reads from a temporary file in /dev/shm).",
        "",
        "| P | numpy (s) | before (s) | after (s) | after / numpy | before / after | max abs diff to numpy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['p']} | {r['numpy_s']:.4f} | {r['before_s']:.4f} | {r['after_s']:.4f} | "
            f"{r['after_over_numpy']}x | {r['before_over_after']}x | {r['max_abs_diff_to_numpy']:.1e} |"
        )
    (RESULTS / "aggregation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
