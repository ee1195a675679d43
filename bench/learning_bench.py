"""Benchmark of the learning core: TFF vs Keras evaluation, local training, the local-DP clip trade-off.

Writes ``bench/results/learning.json``. Run with ``./run python bench/learning_bench.py``.

- ``evaluation``: examples per second of :class:`~fedoracle.learning.evaluation.Evaluator` and of
  Keras ``model.evaluate`` on the same model, weights, test set and batch size (median of
  repeated calls after a warm-up call); goal: TFF at least 0.8x Keras.
- ``training``: seconds per device-epoch of :func:`~fedoracle.learning.training.local_train` on a
  600-sample MNIST shard (60,000 / 100 devices) with the paper's defaults (Adam, lr 1e-4, batch 128).
- ``dp_clip``: for a partly trained global model, ten honest devices' updates with the paper's
  defaults, then for each clip bound S and sensitivity mode the mean accuracy of the noised
  candidates (global + noisy update, what the oracle scores) and of their FedAvg aggregate, at
  ε = 8, δ = 1e-5.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from fedoracle.learning.aggregation import aggregate, apply_update
from fedoracle.learning.data import Dataset, load_dataset
from fedoracle.learning.evaluation import Evaluator
from fedoracle.learning.models import build_spec_model, initial_weights, model_spec
from fedoracle.learning.partition import DeviceKind, partition
from fedoracle.learning.privacy import add_noise, gaussian_sigma, global_norm
from fedoracle.learning.training import local_train

RESULTS = Path(__file__).parent / "results" / "learning.json"
EPSILON, DELTA = 8.0, 1e-5


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_evaluation(data: Dataset, architecture: str, batch_size: int = 1000, repeats: int = 5) -> dict:
    spec = model_spec(architecture, data.input_shape, data.num_classes)
    weights = initial_weights(spec, 0)
    evaluator = Evaluator(spec, data.x_test, data.y_test, batch_size=batch_size)
    model = build_spec_model(spec)
    model.set_weights(weights)
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    n = len(data.y_test)
    tff_s = _median_seconds(lambda: evaluator.evaluate(weights), repeats)
    keras_s = _median_seconds(
        lambda: model.evaluate(data.x_test, data.y_test, batch_size=batch_size, verbose=0), repeats
    )
    return {
        "architecture": architecture,
        "test_examples": n,
        "batch_size": batch_size,
        "tff_seconds": round(tff_s, 4),
        "keras_seconds": round(keras_s, 4),
        "tff_examples_per_s": round(n / tff_s),
        "keras_examples_per_s": round(n / keras_s),
        "tff_over_keras": round(keras_s / tff_s, 3),
    }


def bench_training(data: Dataset, architecture: str, shard: int = 600, repeats: int = 3) -> dict:
    spec = model_spec(architecture, data.input_shape, data.num_classes)
    weights = initial_weights(spec, 0)
    x, y = data.x_train[:shard], data.y_train[:shard]
    seconds = _median_seconds(lambda: local_train(spec, weights, x, y, seed=1), repeats)
    return {
        "architecture": architecture,
        "parameters": spec.num_parameters,
        "shard_samples": shard,
        "optimizer": "adam",
        "learning_rate": 1e-4,
        "batch_size": 128,
        "seconds_per_device_epoch": round(seconds, 4),
    }


def bench_dp_clip(data: Dataset, clips: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)) -> dict:
    spec = model_spec("small_cnn", data.input_shape, data.num_classes)
    evaluator = Evaluator(spec, data.x_test, data.y_test)
    warm = local_train(spec, initial_weights(spec, 0), data.x_train[:6000], data.y_train[:6000], learning_rate=1e-3)
    shards = partition(data.y_train, [DeviceKind.HONEST] * 10, 600, seed=1)
    updates = []
    for i, shard in enumerate(shards):
        trained = local_train(spec, warm, data.x_train[shard.indices], shard.labels, seed=i)
        updates.append([t - g for t, g in zip(trained, warm, strict=True)])
    rows = []
    for mode, num_samples in (("update", None), ("sample_mean", 600)):
        for clip in clips:
            noisy = [add_noise(u, clip, EPSILON, DELTA, num_samples=num_samples) for u in updates]
            candidates = [evaluator.evaluate(apply_update(warm, u)).accuracy for u in noisy]
            rows.append(
                {
                    "sensitivity": mode,
                    "clip": clip,
                    "candidate_accuracy_mean": round(float(np.mean(candidates)), 4),
                    "candidate_accuracy_min": round(float(np.min(candidates)), 4),
                    "aggregate_accuracy": round(evaluator.evaluate(apply_update(warm, aggregate(noisy))).accuracy, 4),
                }
            )
    return {
        "epsilon": EPSILON,
        "delta": DELTA,
        "noise_multiplier": round(gaussian_sigma(EPSILON, DELTA), 4),
        "devices": 10,
        "shard_samples": 600,
        "global_accuracy": evaluator.evaluate(warm).accuracy,
        "clean_candidate_accuracy_mean": round(
            float(np.mean([evaluator.evaluate(apply_update(warm, u)).accuracy for u in updates])), 4
        ),
        "update_norm_median": round(statistics.median(global_norm(u) for u in updates), 4),
        "sweep": rows,
    }


def main() -> None:
    mnist = load_dataset("mnist")
    started = time.perf_counter()
    results = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
        },
        "evaluation": [bench_evaluation(mnist, a) for a in ("small_cnn", "alexnet")],
        "training": [bench_training(mnist, a) for a in ("small_cnn", "alexnet")],
        "dp_clip": bench_dp_clip(mnist),
    }
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
