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
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from devices.client import TrainingConfig
from fedoracle.codec import ModelSpec
from fedoracle.defaults import privacy_mode_name
from fedoracle.errors import PrivacyModeMismatch

if TYPE_CHECKING:  # imported where they are used: importing the device role stays cheap
    from devices.fleet import FleetConfig
    from fedoracle.learning.evaluation import Evaluator
    from fedoracle.learning.privacy import PrivacyAccountant


class LocalTrainer:
    """A device's training routine over its own shard (thread-safe per call).

    Args:
        x: the device's training images.
        y: their labels, as the device has them (flipped for a malicious device, skewed for an
            unreliable one).
        config: optimiser settings and DP/pre-evaluation switches.
        seed: seeds the device's training order (its noise comes from the OS's entropy, never a seed).
        validation_share: share of the shard held out for pre-evaluation.
    """

    def __init__(
        self, x: NDArray[Any], y: NDArray[Any], config: TrainingConfig, seed: int, validation_share: float = 0.1
    ) -> None:
        n_val = int(len(y) * validation_share) if config.pre_evaluate else 0
        self.x, self.y = x[n_val:], y[n_val:]
        self.x_val, self.y_val = x[:n_val], y[:n_val]
        self.config = config
        self.seed = seed
        self.rounds = 0
        self._accountant: PrivacyAccountant | None = None
        self.target_delta: float | None = None
        self._lock = threading.Lock()
        self._validator: tuple[str, Evaluator] | None = None  # (spec hash, evaluator on the held-out part)

    @property
    def epsilon_spent(self) -> float | None:
        """ε spent so far at the task's δ (``None`` before the first DP round)."""
        return None if self._accountant is None else float(self._accountant.epsilon())

    def __call__(
        self, spec: ModelSpec, global_weights: list[NDArray[Any]], task: dict[str, Any]
    ) -> tuple[list[NDArray[Any]], int, float | None]:
        """One round's release: :func:`fedoracle.learning.rounds.device_update` with the task's DP.

        Args:
            spec: the task's model spec.
            global_weights: the round's global model.
            task: the registry's ``getTask`` view (ε, δ and S in its fixed-point units).

        Returns:
            ``(update, num_samples, local_accuracy)``; the accuracy of ``global + update`` on the
            held-out part of the shard when pre-evaluating, else ``None``.
        """
        from fedoracle.learning.privacy import PrivacyAccountant
        from fedoracle.learning.rounds import DPParams, candidate, device_update, training_seed

        if self.config.dp and "privacyMode" in task:
            declared = privacy_mode_name(task["privacyMode"])
            if declared != self.config.dp_scaling:  # the task's declaration binds: never train in another mode
                raise PrivacyModeMismatch(
                    f"the task declares privacy mode {declared!r}, this device trains in {self.config.dp_scaling!r}"
                )
        with self._lock:
            self.rounds += 1
            dp = DPParams.from_task(task, self.config.dp_scaling) if self.config.dp else None
            if dp is not None and self._accountant is None:
                self._accountant = PrivacyAccountant(dp.delta)
                self.target_delta = dp.delta
            update = device_update(
                spec,
                global_weights,
                self.x,
                self.y,
                **self.config.local_training(),
                seed=training_seed(self.seed, self.rounds),
                dp=dp,
                accountant=self._accountant,
            )
            local_acc = None
            if self.config.pre_evaluate and len(self.y_val):
                from fedoracle.learning.evaluation import Evaluator

                if self._validator is None or self._validator[0] != spec.spec_hash:
                    self._validator = (spec.spec_hash, Evaluator(spec, self.x_val, self.y_val))
                local_acc = self._validator[1].evaluate(candidate(global_weights, update)).accuracy
            return update, int(len(self.y)), local_acc


def make_trainers(config: FleetConfig) -> list[tuple[str, LocalTrainer]]:
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
    from fedoracle.learning.partition import device_seed, plan_fleet

    total = getattr(config, "fleet_size", None) or config.first_index + config.count
    if config.first_index < 0 or config.first_index + config.count > total:
        raise ValueError(
            f"devices {config.first_index}..{config.first_index + config.count - 1} are not in a fleet of {total}"
        )
    data = load_dataset(config.dataset, path=config.data_path)
    shards = plan_fleet(
        data.y_train,
        total,
        config.seed,
        num_classes=data.num_classes,
        **config.shard_plan(),
    )
    mine = range(config.first_index, config.first_index + config.count)
    return [
        (
            str(shards[i].kind),
            LocalTrainer(
                data.x_train[shards[i].indices], shards[i].labels, config.training, seed=device_seed(config.seed, i)
            ),
        )
        for i in mine
    ]
