"""One round of the protocol's learning logic: the only implementation, called by every role.

The devices (``devices/training.py``), the oracle (``oracle/scoring.py``, ``oracle/daemon.py``)
and the experiment harness's fast path (``experiments/simulate.py``) call these functions and
re-implement none of them:

- :func:`device_update` — a device's release: train from the global model, take the update
  ``trained - global``, clip and noise it with the task's (ε, δ, S) (``add_noise``), and record the
  release in the device's privacy accountant (``LocalTrainer.__call__``).
- :func:`score_candidate` — the oracle's verdict on one update: the candidate ``global + Δ`` is
  checked for finiteness, evaluated and its accuracy floored to basis points (``Scorer.score``);
  :func:`score_candidates` the same for a chunk of updates in one evaluation (``Scorer.score_many``);
  :func:`is_accepted` / :func:`verdict_reason` — the acceptance rule the contract applies, ``OK``
  and at or above the threshold bound to the submission (``_settle_round``).
- :func:`aggregate_accepted` — the next global model: FedAvg (or an order statistic) of the
  accepted updates weighted by their declared sample counts, added to the global model
  (``_aggregate_weights``).
- :func:`next_threshold` — the dynamic threshold: the last global accuracy minus a margin, only
  ever raised (``_follow_threshold``).

The task's DP parameters travel on-chain as fixed-point integers; :meth:`DPParams.from_task` and
:meth:`DPParams.quantized` apply exactly that rounding (:mod:`fedoracle.units`), so a simulated
device adds the noise a protocol device adds. Fleet planning (shards, device seeds) is
:func:`fedoracle.learning.partition.plan_fleet`; the hidden test set's sample is
:func:`fedoracle.learning.data.hidden_test_groups`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedoracle.defaults import DEFAULTS
from fedoracle.errors import Reason
from fedoracle.units import BP, decode_dp, floor_bp, quantize_dp, to_bp

__all__ = [
    "BP",
    "DPParams",
    "Verdict",
    "accuracy_bp",
    "aggregate_accepted",
    "candidate",
    "device_update",
    "is_accepted",
    "next_threshold",
    "score_candidate",
    "score_candidates",
    "training_seed",
    "verdict_reason",
]


@dataclass(frozen=True)
class DPParams:
    """A task's local-DP parameters as a device applies them.

    Attributes:
        epsilon: per-release ε (``"sample"``, ``"update"``), or the device's total budget over the
            whole task (``"record"``).
        delta: per-release δ, or the total budget's δ (``"record"``).
        clip: L2 clip bound S (per example for ``"record"``).
        scaling: ``"record"`` (record-level DP-SGD, :mod:`fedoracle.learning.dpsgd`), ``"sample"``
            (the paper's sensitivity S/D, D = the device's sample count) or ``"update"``
            (sensitivity S); see :mod:`fedoracle.learning.privacy`.
        rounds: the task's rounds (``"record"`` solves its noise for all of them).
    """

    epsilon: float
    delta: float
    clip: float
    scaling: str = DEFAULTS.dp_scaling
    rounds: int = 1

    @classmethod
    def from_task(cls, task: dict[str, Any], scaling: str = DEFAULTS.dp_scaling) -> DPParams:
        """The parameters a device reads from the registry's ``getTask`` view (fixed-point units)."""
        return cls(*decode_dp(task), scaling, int(task.get("maxRounds", 1)))

    def quantized(self) -> DPParams:
        """The values after the round trip through the contract.

        That is ε in 1e-3, δ in 1e-18 and S in 1e-6, as ``fedoracle.chain.TaskParams`` encodes them
        and :meth:`from_task` decodes them.
        """
        return DPParams(*quantize_dp(self.epsilon, self.delta, self.clip), self.scaling, self.rounds)


@dataclass(frozen=True)
class Verdict:
    """The oracle's score of one submission.

    Attributes:
        accuracy_bp: the candidate's accuracy in basis points, rounded down (0 when not evaluated).
        reason: ``Reason.OK`` or why the candidate could not be evaluated.
        accepted: ``reason == OK`` and ``accuracy_bp >= threshold_bp``.
        loss: the candidate's mean cross-entropy on the round's test groups (``None`` when not
            evaluated), for the loss gate (:func:`fedoracle.learning.lossgate.loss_gate`).
    """

    accuracy_bp: int
    reason: Reason
    accepted: bool
    loss: float | None = None


def training_seed(device_seed: int, round_number: int) -> int:
    """The seed of a device's ``round_number``-th local training (1-based), as ``LocalTrainer`` draws it."""
    return device_seed * 1000 + round_number


def device_update(
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str,
    seed: int,
    dp: DPParams | None,
    accountant: Any = None,
) -> list[NDArray[Any]]:
    """A device's release for one round: local training, the update, clipping and noise.

    Args:
        spec: the task's :class:`~fedoracle.codec.ModelSpec`.
        global_weights: the round's global model.
        x: the device's training images.
        y: their labels, as the device has them.
        epochs: local passes over the data.
        batch_size: local minibatch size.
        learning_rate: local step size.
        optimizer: ``"adam"`` or ``"sgd"``.
        seed: the training order's seed (:func:`training_seed`).
        dp: the task's DP parameters, or ``None`` to release the raw update (non-DP baseline).
        accountant: a :class:`~fedoracle.learning.privacy.PrivacyAccountant` to record the
            release in (ignored without ``dp``).

    Returns:
        The (noisy) update, one tensor per weight in the global model's dtypes.
    """
    from fedoracle.learning.privacy import add_noise, gaussian_sigma
    from fedoracle.learning.training import local_train

    if dp is not None and dp.scaling == "record":
        return _record_level_update(
            spec,
            global_weights,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            dp=dp,
            accountant=accountant,
        )
    trained = local_train(
        spec,
        global_weights,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        seed=seed,
    )
    update = _difference(trained, global_weights)
    if dp is None:
        return update
    d = len(y) if dp.scaling == "sample" else None
    update = add_noise(update, dp.clip, dp.epsilon, dp.delta, num_samples=d)  # OS-entropy noise
    if accountant is not None:
        accountant.record(gaussian_sigma(dp.epsilon, dp.delta))
    return update


def _difference(trained: Sequence[NDArray[Any]], global_weights: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    """The update Δ = trained − global, tensor by tensor, in the global model's dtypes."""
    return [np.asarray(t - g, dtype=g.dtype) for t, g in zip(trained, global_weights, strict=True)]


DPSGD_MOMENTUM = 0.9  # SGD momentum of record-level DP-SGD (the optimizer its noise calibration assumes)


def dpsgd_schedule(dp: DPParams, num_samples: int, batch_size: int, epochs: int) -> tuple[float, int, float]:
    """``(q, steps per round, σ)`` of record-level DP-SGD for a device of ``num_samples`` examples.

    The Poisson rate is ``q = batch_size / D`` (the expected batch is ``batch_size``); σ is solved
    once for every step of all ``dp.rounds`` rounds, so the task's whole budget (ε, δ) is spent by
    a device that takes part in every round, and never more.
    """
    from fedoracle.learning.dpsgd import steps_per_epoch

    q = min(1.0, batch_size / num_samples)
    per_round = epochs * steps_per_epoch(q)
    return q, per_round, _solved_sigma(dp.epsilon, dp.delta, q, per_round * dp.rounds)


@lru_cache(maxsize=256)
def _solved_sigma(epsilon: float, delta: float, q: float, steps: int) -> float:
    from fedoracle.learning.privacy import solve_noise_multiplier

    return solve_noise_multiplier(epsilon, delta, q, steps)


def _record_level_update(
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str,
    dp: DPParams,
    accountant: Any,
) -> list[NDArray[Any]]:
    from fedoracle.errors import PrivacyBudgetExhausted
    from fedoracle.learning.dpsgd import dp_sgd_train

    if optimizer != "sgd":
        raise ValueError(f"record-level DP-SGD trains with SGD + momentum, not {optimizer!r} (use --optimizer sgd)")
    q, per_round, sigma = dpsgd_schedule(dp, len(y), batch_size, epochs)
    if accountant is not None and accountant.steps + per_round > per_round * dp.rounds:
        raise PrivacyBudgetExhausted(
            f"another round would spend more than the task's budget ε = {dp.epsilon:g} at δ = {dp.delta:g} "
            f"(all {dp.rounds} rounds already spent)"
        )
    trained, steps = dp_sgd_train(
        spec,
        global_weights,
        x,
        y,
        epochs=epochs,
        sampling_rate=q,
        learning_rate=learning_rate,
        momentum=DPSGD_MOMENTUM,
        clip=dp.clip,
        noise_multiplier=sigma,
    )
    if accountant is not None:
        accountant.record_sampled(sigma, q, steps)
    return _difference(trained, global_weights)


def accuracy_bp(evaluator: Any, weights: Sequence[NDArray[Any]]) -> int:
    """Accuracy in basis points, rounded down (a verdict never overstates), as the oracle posts it."""
    return floor_bp(evaluator.evaluate(list(weights)).accuracy)


def candidate(global_weights: Sequence[NDArray[Any]], update: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    """The model a verdict scores: ``global + Δ`` tensor by tensor (the paper's "local model")."""
    return [g + u for g, u in zip(global_weights, update, strict=True)]


def score_candidate(
    evaluator: Any, global_weights: Sequence[NDArray[Any]], update: Sequence[NDArray[Any]], threshold_bp: int
) -> Verdict:
    """The oracle's verdict on one decoded update (:func:`score_candidates` of one).

    Args:
        evaluator: a :class:`~fedoracle.learning.evaluation.Evaluator` over the round's test groups.
        global_weights: the round's global model.
        update: the submitted update.
        threshold_bp: the threshold bound to the submission (basis points).

    Returns:
        The verdict; a candidate with non-finite values is rejected with ``NON_FINITE`` unevaluated.
    """
    return score_candidates(evaluator, global_weights, [update], [threshold_bp])[0]


def score_candidates(
    evaluator: Any,
    global_weights: Sequence[NDArray[Any]],
    updates: Sequence[Sequence[NDArray[Any]]],
    thresholds_bp: Sequence[int],
) -> list[Verdict]:
    """The oracle's verdicts on several decoded updates of one round, evaluated in one call.

    The finite candidates (``global + update``) are scored together
    (:meth:`~fedoracle.learning.evaluation.Evaluator.evaluate_many`, equal to scoring each alone);
    a candidate with non-finite values is rejected with ``NON_FINITE`` unevaluated.

    Args:
        evaluator: a :class:`~fedoracle.learning.evaluation.Evaluator` over the round's test groups.
        global_weights: the round's global model.
        updates: the submitted updates.
        thresholds_bp: the threshold bound to each submission (basis points).

    Returns:
        One verdict per update, in order.
    """
    models = [candidate(global_weights, u) for u in updates]
    finite = [all(np.all(np.isfinite(c)) for c in m) for m in models]
    scored = iter(
        evaluator.evaluate_many([m for m, ok in zip(models, finite, strict=True) if ok]) if any(finite) else []
    )
    out = []
    for ok, threshold in zip(finite, thresholds_bp, strict=True):
        if not ok:
            out.append(Verdict(0, Reason.NON_FINITE, False))
            continue
        result = next(scored)
        acc = floor_bp(result.accuracy)
        out.append(Verdict(acc, Reason.OK, is_accepted(Reason.OK, acc, threshold), result.loss))
    return out


def is_accepted(reason: int, accuracy_bp: int, threshold_bp: int) -> bool:
    """The acceptance rule (``FLTaskRegistry.postVerdict``).

    A verdict is accepted when the candidate was evaluated (``OK``) and scored at or above the
    threshold bound to the submission.
    """
    return reason == Reason.OK and accuracy_bp >= threshold_bp


def verdict_reason(reason: int, accuracy_bp: int, threshold_bp: int) -> Reason:
    """Why a verdict is what it is.

    The score's reason, or ``BELOW_THRESHOLD`` for an evaluated candidate under the bar (the
    contract records it so).
    """
    if reason == Reason.OK and not is_accepted(reason, accuracy_bp, threshold_bp):
        return Reason.BELOW_THRESHOLD
    return Reason(reason)


def aggregate_accepted(
    global_weights: Sequence[NDArray[Any]],
    updates: Sequence[Sequence[NDArray[Any]]],
    num_samples: Sequence[int],
    *,
    rule: str = "fedavg",
    trim_fraction: float = 0.2,
) -> list[NDArray[Any]]:
    """The next global model from the accepted updates (the global model itself when none).

    FedAvg weights each update by its declared sample count (unweighted when any count is 0);
    ``median`` and ``trimmed_mean`` ignore the counts. The result is ``global + aggregate`` in the
    global model's dtypes.
    """
    if not updates:
        return [np.asarray(g) for g in global_weights]
    from fedoracle.learning.aggregation import aggregate

    weights = list(num_samples) if all(n > 0 for n in num_samples) else None
    mean = aggregate([list(u) for u in updates], weights=weights, rule=rule, trim_fraction=trim_fraction)
    return [np.asarray(g + m, dtype=g.dtype) for g, m in zip(global_weights, mean, strict=True)]


def next_threshold(round_number: int, current_bp: int, previous_global_bp: int, margin: float | None) -> int | None:
    """The dynamic threshold the oracle announces for a round, or ``None`` when it keeps the current one.

    From round 2 on the threshold becomes the previous round's global accuracy minus ``margin``
    (capped at 100%), but only when that raises it: a threshold never goes down.

    Args:
        round_number: the round the threshold is for (1-based).
        current_bp: the threshold in force.
        previous_global_bp: the global accuracy recorded for round ``round_number - 1``.
        margin: accuracy below the last global model a candidate may sit (``None``: static threshold).
    """
    if margin is None or round_number < 2:
        return None
    target = min(previous_global_bp - to_bp(margin), BP)
    return target if target > current_bp else None
