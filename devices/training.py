"""What a device computes: local training, the DP update and the optional pre-evaluation.

``LocalTrainer`` is the device-side half of the paper's workflow: from the global model
(``get_global_model``) it trains on its own shard (``local_model_training``), turns the result
into an update, clips it to the task's L2 bound S and adds Gaussian noise calibrated to the
task's declared (ε, δ) (``add_noise``), and keeps a privacy accountant across rounds. With
``pre_evaluate`` on, it scores ``global + noisy update`` on a held-out part of its shard so the
device can skip submitting below the announced threshold.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from devices.client import TrainingConfig
from fedoracle.codec import ModelSpec


class LocalTrainer:
    """A device's training routine over its own shard (thread-safe per call).

    Args:
        x, y: the device's training data (labels as the device has them: flipped for a
            malicious device, skewed for an unreliable one).
        config: optimiser settings and DP/pre-evaluation switches.
        seed: seeds the device's training order and noise.
        validation_share: share of the shard held out for pre-evaluation.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, config: TrainingConfig, seed: int,
                 validation_share: float = 0.1) -> None:
        n_val = int(len(y) * validation_share) if config.pre_evaluate else 0
        self.x, self.y = x[n_val:], y[n_val:]
        self.x_val, self.y_val = x[:n_val], y[:n_val]
        self.config = config
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.rounds = 0
        self._accountant = None
        self.target_delta: float | None = None
        self._lock = threading.Lock()
        self._validator = None

    @property
    def epsilon_spent(self) -> float | None:
        """ε spent so far at the task's δ (``None`` before the first DP round)."""
        return None if self._accountant is None else float(self._accountant.epsilon())

    def __call__(self, spec: ModelSpec, global_weights: list[np.ndarray], task: dict[str, Any]
                 ) -> tuple[list[np.ndarray], int, float | None]:
        from fedoracle.learning.privacy import PrivacyAccountant, add_noise, gaussian_sigma
        from fedoracle.learning.training import local_train

        with self._lock:
            self.rounds += 1
            trained = local_train(spec, global_weights, self.x, self.y, epochs=self.config.epochs,
                                  batch_size=self.config.batch_size, learning_rate=self.config.learning_rate,
                                  optimizer=self.config.optimizer, seed=self.seed * 1000 + self.rounds)
            update = [np.asarray(t - g, dtype=g.dtype) for t, g in zip(trained, global_weights)]
            if self.config.dp:
                epsilon, delta = task["epsilonMilli"] / 1e3, task["deltaE18"] / 1e18
                clip = task["clipMicro"] / 1e6
                d = len(self.y) if self.config.dp_scaling == "sample" else None
                update = add_noise(update, clip, epsilon, delta, self.rng, num_samples=d)
                if self._accountant is None:
                    self._accountant = PrivacyAccountant(delta)
                    self.target_delta = delta
                self._accountant.record(gaussian_sigma(epsilon, delta))
            local_acc = None
            if self.config.pre_evaluate and len(self.y_val):
                from fedoracle.learning.evaluation import Evaluator

                if self._validator is None or self._validator[0] != spec.spec_hash:
                    self._validator = (spec.spec_hash, Evaluator(spec, self.x_val, self.y_val))
                candidate = [g + u for g, u in zip(global_weights, update)]
                local_acc = self._validator[1].evaluate(candidate).accuracy
            return update, int(len(self.y)), local_acc


def make_trainers(config) -> list[tuple[str, LocalTrainer]]:
    """Loads the fleet's data set, splits it into shards by device kind, one trainer each.

    The kinds and shards are drawn for the whole fleet (``config.fleet_size`` devices, or
    ``first_index + count`` when unset) and this process takes devices ``first_index`` to
    ``first_index + count - 1``: processes or hosts that each run a slice of one fleet with the
    same seed get exactly the devices (kind, disjoint shard, training seed) that one process
    running the whole fleet would have.

    Args:
        config: a :class:`devices.fleet.FleetConfig`.

    Returns:
        ``(kind, trainer)`` per device of this slice, kinds in ``{"honest", "malicious", "unreliable"}``.
    """
    from fedoracle.learning.data import load_dataset
    from fedoracle.learning.partition import fleet_kinds, partition

    total = getattr(config, "fleet_size", None) or config.first_index + config.count
    if config.first_index < 0 or config.first_index + config.count > total:
        raise ValueError(f"devices {config.first_index}..{config.first_index + config.count - 1} "
                         f"are not in a fleet of {total}")
    data = load_dataset(config.dataset, path=config.data_path)
    kinds = fleet_kinds(total, config.seed, malicious=config.malicious, unreliable=config.unreliable)
    # At most 90% of the data set is handed out: skewed (unreliable) shards draw one class heavily,
    # and handing out everything runs a class dry at P >= 30 (the experiments use the same rule).
    shard_size = config.samples_per_device or min(2_000, int(0.9 * len(data.y_train)) // max(1, total))
    shards = partition(data.y_train, kinds, shard_size, config.seed, num_classes=data.num_classes,
                       target_emd=config.emd, flip_rate=config.flip_rate)
    mine = range(config.first_index, config.first_index + config.count)
    return [(str(shards[i].kind), LocalTrainer(data.x_train[shards[i].indices], shards[i].labels, config.training,
                                               seed=config.seed * 100_003 + i))
            for i in mine]
