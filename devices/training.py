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


class Coalition:
    """The attackers of one fleet process, colluding on a crafted attack (:mod:`fedoracle.learning.attacks`).

    Partial knowledge: the attackers see no honest update; each trains a benign update on its own
    true labels with the task's DP (as an honest device would), and these stand in for the benign
    statistics. They read the aggregation rule, the threshold and the loss margin from the task
    (all on-chain), craft one update each, pull them back until their own held-out data says they
    pass the gates (:func:`~fedoracle.learning.attacks.fit_gates`) and jitter them under the copy
    rule. The first member called in a round crafts for all (no member waits on another, so one
    training thread suffices); a fleet split over processes has one coalition per process.

    Args:
        attack: one of :data:`fedoracle.learning.attacks.CRAFTED`.
        config: how the members train.
        seed: seeds the attackers' own randomness (their crafting, not any privacy noise).
    """

    def __init__(self, attack: str, config: TrainingConfig, seed: int) -> None:
        from fedoracle.learning.attacks import CRAFTED

        if attack not in CRAFTED:
            raise ValueError(f"{attack!r} is not a crafted attack; expected one of {', '.join(CRAFTED)}")
        self.attack, self.config, self.seed = attack, config, seed
        self.members: list[tuple[NDArray[Any], NDArray[Any], int]] = []
        self._lock = threading.Lock()
        self._round: tuple[Any, ...] | None = None
        self._crafted: list[list[NDArray[Any]]] = []

    def join(self, x: NDArray[Any], y_true: NDArray[Any], seed: int) -> int:
        """Adds a member (its shard with true labels, its training seed); returns its index."""
        self.members.append((x, y_true, seed))
        return len(self.members) - 1

    def update(self, member: int, spec: ModelSpec, global_weights: list[NDArray[Any]], task: dict[str, Any]) -> Any:
        """Member ``member``'s crafted update for this round (crafting all of them on the first call)."""
        import numpy as np

        from fedoracle.learning import attacks
        from fedoracle.learning.evaluation import Evaluator
        from fedoracle.learning.robust import AggregationRule
        from fedoracle.learning.rounds import DPParams, device_update, training_seed

        key = (task.get("taskId"), task.get("round"), spec.spec_hash, attacks.flatten(global_weights).tobytes())
        with self._lock:
            if self._round != key:
                dp = DPParams.from_task(task, self.config.dp_scaling) if self.config.dp else None
                round_ = int(task.get("round", 1))
                benign = [
                    device_update(
                        spec,
                        global_weights,
                        x,
                        y,
                        **self.config.local_training(),
                        seed=training_seed(seed, round_),
                        dp=dp,
                    )
                    for x, y, seed in self.members
                ]
                rng = np.random.default_rng([self.seed, round_])
                rule = AggregationRule.from_task(task)
                crafted = attacks.craft(self.attack, benign, len(self.members), rule, rng)
                n_val = [max(1, len(y) // 10) for _, y, _ in self.members]
                val_x = np.concatenate([x[:n] for (x, _, _), n in zip(self.members, n_val, strict=True)])
                val_y = np.concatenate([y[:n] for (_, y, _), n in zip(self.members, n_val, strict=True)])
                check = attacks.gate_check(
                    Evaluator(spec, val_x, val_y),
                    global_weights,
                    int(task.get("thresholdBp", 0)),
                    int(task.get("lossMarginBp", 0)),
                )
                crafted = attacks.fit_gates(crafted, attacks.benign_mean(benign), check)
                self._crafted = attacks.decorrelate(crafted, rng)
                self._round = key
            return self._crafted[member]


class AttackerTrainer:
    """A malicious device of a coalition: its release is the coalition's crafted update (no privacy accounting)."""

    epsilon_spent = None
    target_delta = None

    def __init__(self, coalition: Coalition, x: NDArray[Any], y_true: NDArray[Any], seed: int) -> None:
        """Joins ``coalition`` with this device's shard (true labels) and training seed."""
        self.coalition = coalition
        self.num_samples = len(y_true)
        self.member = coalition.join(x, y_true, seed)

    def __call__(
        self, spec: ModelSpec, global_weights: list[NDArray[Any]], task: dict[str, Any]
    ) -> tuple[list[NDArray[Any]], int, float | None]:
        """``(crafted update, declared sample count, None)``, as :class:`LocalTrainer` returns."""
        return self.coalition.update(self.member, spec, global_weights, task), self.num_samples, None


def make_trainers(config: FleetConfig) -> list[tuple[str, LocalTrainer | AttackerTrainer]]:
    """Loads the fleet's data set, splits it into shards by device kind, one trainer each.

    The kinds and shards are drawn for the whole fleet (``config.fleet_size`` devices, or
    ``first_index + count`` when unset) and this process takes devices ``first_index`` to
    ``first_index + count - 1``: processes or hosts that each run a slice of one fleet with the
    same seed get exactly the devices (kind, disjoint shard, training seed) that one process
    running the whole fleet would have.

    Args:
        config: a :class:`devices.fleet.FleetConfig`.

    With ``config.attack`` one of :data:`fedoracle.learning.attacks.CRAFTED`, the slice's malicious
    devices form one :class:`Coalition` (they train on their true labels and submit crafted
    updates); with ``"label_flip"`` (the default) they train on flipped labels.

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
    attack = getattr(config, "attack", "label_flip")
    coalition = None if attack == "label_flip" else Coalition(attack, config.training, seed=config.seed)
    out: list[tuple[str, LocalTrainer | AttackerTrainer]] = []
    for i in mine:
        x, seed = data.x_train[shards[i].indices], device_seed(config.seed, i)
        if coalition is not None and str(shards[i].kind) == "malicious":
            out.append((str(shards[i].kind), AttackerTrainer(coalition, x, data.y_train[shards[i].indices], seed)))
        else:
            out.append((str(shards[i].kind), LocalTrainer(x, shards[i].labels, config.training, seed=seed)))
    return out
