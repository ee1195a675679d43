"""The alternatives of ``bench/round_bench.py``: a Flower 1.42 simulation round and a plain Keras FedAvg loop.

Runs in ``bench/flower/.venv`` (its own uv project), with fedoracle's source tree on ``PYTHONPATH``
for the model spec and the local training only (``fedoracle.learning.models``, ``.dpsgd``,
``.training``: plain TensorFlow, no TFF, no chain): every side trains the same ``small_cnn`` with
the same record-level DP-SGD step (or the same non-private SGD), so what differs is the framework
around it. Both read the devices' shards and the test examples from the ``.npz`` that
``round_bench.py`` writes (the shards the fleet draws, ``plan_fleet``), and the schedule (epochs,
Poisson rate, σ, clip, learning rate, rounds) from its JSON.

- ``flower``: ``flwr.simulation.start_simulation`` (Ray actors, one CPU each, kept for the whole
  run; each actor process loads the shards and builds its trainer once and reuses them), FedAvg
  over all P clients every round, the global model evaluated centrally on the test examples
  (``evaluate_fn``; no federated evaluation).
- ``keras``: one process, the P devices trained one after another, the weighted mean in numpy,
  the global model evaluated on the test examples.

Writes one JSON document: per round its wall time (end of the previous round's evaluation to the
end of this one's), the time until every client's result was in (training), aggregation and
evaluation, and the global accuracy.

Usage: ``python flower_round.py {flower,keras} SHARDS.npz SCHEDULE.json OUT.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

_cache: dict[str, Any] = {}


def _data(path: str) -> Any:
    if "data" not in _cache:
        with np.load(path) as f:
            _cache["data"] = {k: f[k] for k in f.files}
    return _cache["data"]


def _spec(schedule: dict[str, Any]) -> Any:
    from fedoracle.learning.models import model_spec

    return model_spec(schedule["architecture"], tuple(schedule["input_shape"]), schedule["num_classes"])


def train(schedule: dict[str, Any], shards: str, index: int, weights: list[np.ndarray]) -> list[np.ndarray]:
    """One device's local training, exactly as fedoracle's devices train (same functions, same schedule)."""
    data = _data(shards)
    lo, hi = data["offsets"][index], data["offsets"][index + 1]
    x, y = data["x"][lo:hi], data["y"][lo:hi]
    spec = _spec(schedule)
    if schedule["dp"]:
        from fedoracle.learning.dpsgd import dp_sgd_train

        trained, _ = dp_sgd_train(
            spec,
            weights,
            x,
            y,
            epochs=schedule["epochs"],
            sampling_rate=schedule["sampling_rate"],
            learning_rate=schedule["learning_rate"],
            momentum=schedule["momentum"],
            clip=schedule["clip"],
            noise_multiplier=schedule["noise_multiplier"],
        )
        return trained
    from fedoracle.learning.training import local_train

    return local_train(
        spec,
        weights,
        x,
        y,
        epochs=schedule["epochs"],
        batch_size=schedule["batch_size"],
        learning_rate=schedule["learning_rate"],
        optimizer=schedule["optimizer"],
        seed=index,
    )


class _Evaluator:
    """The global model's accuracy on the test examples (a Keras model built once)."""

    def __init__(self, schedule: dict[str, Any], shards: str) -> None:
        from fedoracle.learning.models import build_spec_model

        data = _data(shards)
        self.x, self.y = data["x_test"], data["y_test"]
        self.model = build_spec_model(_spec(schedule))

    def __call__(self, weights: list[np.ndarray]) -> float:
        self.model.set_weights(weights)
        logits = self.model.predict(self.x, batch_size=500, verbose=0)
        return float(np.mean(np.argmax(logits, axis=1) == self.y))


def _initial(schedule: dict[str, Any], shards: str) -> list[np.ndarray]:
    data = _data(shards)
    return [data[f"w{i}"] for i in range(int(data["n_weights"]))]


def run_keras(schedule: dict[str, Any], shards: str) -> list[dict[str, Any]]:
    """The plain Keras FedAvg loop: P devices one after another, numpy weighted mean, central evaluation."""
    weights = _initial(schedule, shards)
    evaluate = _Evaluator(schedule, shards)
    p = len(_data(shards)["offsets"]) - 1
    counts = np.diff(_data(shards)["offsets"]).astype(np.float64)
    rounds = []
    for r in range(1, schedule["rounds"] + 1):
        t0 = time.perf_counter()
        trained = [train(schedule, shards, i, weights) for i in range(p)]
        t1 = time.perf_counter()
        weights = [
            (np.tensordot(counts, np.stack([t[k] for t in trained]), axes=1) / counts.sum()).astype(np.float32)
            for k in range(len(weights))
        ]
        t2 = time.perf_counter()
        acc = evaluate(weights)
        t3 = time.perf_counter()
        rounds.append(
            {
                "round": r,
                "wall_s": t3 - t0,
                "training_s": t1 - t0,
                "aggregation_s": t2 - t1,
                "evaluation_s": t3 - t2,
                "accuracy": acc,
            }
        )
        print(json.dumps(rounds[-1]), flush=True)
    return rounds


def run_flower(schedule: dict[str, Any], shards: str) -> list[dict[str, Any]]:
    """A Flower simulation: Ray actors (one CPU each), FedAvg over all P clients, central evaluation."""
    import flwr as fl
    from flwr.common import Context, ndarrays_to_parameters

    p = len(_data(shards)["offsets"]) - 1
    marks: dict[str, dict[int, float]] = {"start": {}, "fit_in": {}, "aggregated": {}, "evaluated": {}}
    accuracy: dict[int, float] = {}
    evaluate = _Evaluator(schedule, shards)

    class Client(fl.client.NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            trained = train(schedule, shards, self.index, parameters)
            return trained, int(np.diff(_data(shards)["offsets"])[self.index]), {}

    def client_fn(context: Context) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    class TimedFedAvg(fl.server.strategy.FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            marks["start"][server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            marks["fit_in"][server_round] = time.perf_counter()
            if failures:
                raise RuntimeError(f"round {server_round}: {len(failures)} clients failed: {failures[:1]}")
            out = super().aggregate_fit(server_round, results, failures)
            marks["aggregated"][server_round] = time.perf_counter()
            return out

    def evaluate_fn(server_round: int, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        acc = evaluate(parameters)
        marks["evaluated"][server_round] = time.perf_counter()
        accuracy[server_round] = acc
        return 1.0 - acc, {"accuracy": acc}

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=p,
        min_available_clients=p,
        min_evaluate_clients=0,
        evaluate_fn=evaluate_fn,
        initial_parameters=ndarrays_to_parameters(_initial(schedule, shards)),
    )
    fl.simulation.start_simulation(
        client_fn=client_fn,
        num_clients=p,
        config=fl.server.ServerConfig(num_rounds=schedule["rounds"]),
        strategy=strategy,
        client_resources={"num_cpus": 1, "num_gpus": 0.0},
        ray_init_args={
            "num_cpus": os.cpu_count(),
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
        },
    )
    rounds = []
    for r in range(1, schedule["rounds"] + 1):
        rounds.append(
            {
                "round": r,
                "wall_s": marks["evaluated"][r] - marks["evaluated"][r - 1],
                "training_s": marks["fit_in"][r] - marks["start"][r],
                "aggregation_s": marks["aggregated"][r] - marks["fit_in"][r],
                "evaluation_s": marks["evaluated"][r] - marks["aggregated"][r],
                "accuracy": accuracy[r],
            }
        )
        print(json.dumps(rounds[-1]), flush=True)
    return rounds


def main() -> None:
    """Runs one side and writes its rounds."""
    mode, shards, schedule_path, out = sys.argv[1:5]
    schedule = json.loads(open(schedule_path).read())
    import flwr
    import tensorflow as tf

    t0 = time.perf_counter()
    rounds = run_flower(schedule, shards) if mode == "flower" else run_keras(schedule, shards)
    doc = {
        "mode": mode,
        "flwr": flwr.__version__,
        "tensorflow": tf.__version__,
        "total_s": time.perf_counter() - t0,
        "rounds": rounds,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
