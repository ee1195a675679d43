"""The fast path: one task simulated in-process with the protocol's own learning functions.

No chain, broker or blob store, but every number comes from the code the protocol runs:
the fleet's kinds, shards and seeds are drawn exactly as ``devices/training.py``
``make_trainers`` draws them; the initial model and hidden test set exactly as
``publisher/publish.py`` builds them; each device's release is
:func:`fedoracle.learning.rounds.device_update` (what ``LocalTrainer`` computes), each verdict
:func:`~fedoracle.learning.rounds.score_candidate`, each new global model
:func:`~fedoracle.learning.rounds.aggregate_accepted` and each threshold
:func:`~fedoracle.learning.rounds.next_threshold` (what the oracle computes).

What the protocol decides that the simulation must assume: which test groups serve which round
(the publisher's secret seed; here drawn from ``task_seed``, or passed in to replay a protocol
run), that every device submits in every round (the demo closes a round at P submissions) and
that a round's threshold is in force before any device submits (the oracle announces it right
after aggregating, before devices finish training).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from experiments.config import RunConfig
from fedoracle.learning.rounds import (
    BP,
    DPParams,
    accuracy_bp,
    aggregate_accepted,
    device_update,
    next_threshold,
    score_candidate,
    training_seed,
)
from fedoracle.units import to_bp

GROUP_ROUNDS_SALT = 0x5EED  # mixes task_seed into the round-to-groups draw


@lru_cache(maxsize=4)
def dataset(name: str, path: str | None = None) -> Any:
    """The data set, loaded once per process."""
    from fedoracle.learning.data import load_dataset

    return load_dataset(name, path=path)


@dataclass
class SimDevice:
    """One simulated device: what ``make_trainers`` gives a ``LocalTrainer``.

    Attributes:
        index: position in the fleet.
        kind: ``"honest"``, ``"malicious"`` or ``"unreliable"``.
        x, y: its shard (labels as the device has them).
        y_true: the shard's true labels (an adaptive attacker uses them).
        seed: :func:`fedoracle.learning.partition.device_seed`.
        indices: the shard's training-set indices.
        rounds: releases so far.
        accountant: its privacy accountant (created on the first DP release).
        last_scale: an adaptive attacker's last ‖Δ‖ over its benign update's norm.
    """

    index: int
    kind: str
    x: np.ndarray
    y: np.ndarray
    y_true: np.ndarray
    seed: int
    indices: np.ndarray | None = None
    rounds: int = 0
    accountant: Any = None
    last_scale: float | None = None


def build_fleet(cfg: RunConfig, data: Any) -> list[SimDevice]:
    """The fleet of ``devices/training.py`` ``make_trainers`` for the same settings (whole fleet, no slice)."""
    from fedoracle.learning.partition import device_seed, plan_fleet

    shards = plan_fleet(
        data.y_train,
        cfg.devices,
        cfg.seed,
        num_classes=data.num_classes,
        **cfg.shard_plan(),
    )
    fleet = []
    for i, shard in enumerate(shards):
        seed = device_seed(cfg.seed, i)
        fleet.append(
            SimDevice(
                i,
                str(shard.kind),
                data.x_train[shard.indices],
                shard.labels,
                data.y_train[shard.indices],
                seed,
                shard.indices,
            )
        )
    return fleet


@dataclass
class Task:
    """What the publisher builds: spec, initial model, the hidden test groups and their rounds."""

    spec: Any
    initial: list[np.ndarray]
    groups: list[tuple[np.ndarray, np.ndarray]]
    round_groups: dict[int, list[int]]


def build_task(cfg: RunConfig, data: Any, round_groups: dict[int, list[int]] | None = None) -> Task:
    """The task ``publisher/publish.py`` publishes for ``TaskPlan(seed=cfg.task_seed)``.

    Args:
        cfg: the run.
        data: the loaded data set.
        round_groups: group indices per round (1-based), e.g. read from a protocol run's vault;
            ``None`` draws a permutation from ``task_seed`` (the protocol draws it from a secret).
    """
    from fedoracle.learning.data import hidden_test_groups
    from fedoracle.learning.models import initial_weights, model_spec

    spec = model_spec(cfg.architecture, data.input_shape, data.num_classes)
    num_groups = cfg.rounds * cfg.groups_per_round
    groups = hidden_test_groups(
        data.x_test, data.y_test, test_examples=cfg.test_examples, num_groups=num_groups, seed=cfg.task_seed
    )
    if round_groups is None:
        order = np.random.default_rng([cfg.task_seed, GROUP_ROUNDS_SALT]).permutation(num_groups)
        g = cfg.groups_per_round
        round_groups = {r: [int(i) for i in order[(r - 1) * g : r * g]] for r in range(1, cfg.rounds + 1)}
    return Task(spec, initial_weights(spec, cfg.task_seed), groups, round_groups)


_evaluators: dict[tuple, Any] = {}


def evaluator(spec: Any, x: np.ndarray, y: np.ndarray, key: tuple) -> Any:
    """A TFF :class:`~fedoracle.learning.evaluation.Evaluator`, cached by ``key`` (few distinct test sets per grid)."""
    from fedoracle.learning.evaluation import Evaluator

    full_key = (spec.spec_hash, *key)
    if full_key not in _evaluators:
        if len(_evaluators) > 64:
            _evaluators.clear()
        _evaluators[full_key] = Evaluator(spec, x, y)
    return _evaluators[full_key]


@dataclass
class RoundRecord:
    """One simulated round, as the chain would record it."""

    round: int
    threshold_bp: int
    global_accuracy_bp: int
    accepted: int
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def _honest_release(cfg: RunConfig, task: Task, dev: SimDevice, global_weights: list[np.ndarray]) -> list[np.ndarray]:
    """What ``LocalTrainer.__call__`` releases this round (advances the device's round counter and rng)."""
    from fedoracle.learning.privacy import PrivacyAccountant

    dev.rounds += 1
    dp = DPParams(cfg.epsilon, cfg.delta, cfg.clip, cfg.dp_scaling, cfg.rounds).quantized() if cfg.dp else None
    if dp is not None and dev.accountant is None:
        dev.accountant = PrivacyAccountant(dp.delta)
    return device_update(
        task.spec,
        global_weights,
        dev.x,
        dev.y,
        **cfg.local_training(),
        seed=training_seed(dev.seed, dev.rounds),
        dp=dp,
        accountant=dev.accountant,
    )


def simulate(
    cfg: RunConfig,
    *,
    round_groups: dict[int, list[int]] | None = None,
    submission_order: dict[int, list[int]] | None = None,
    keep_verdicts: bool = True,
    audit: bool = False,
    lira: bool = False,
    stop_after: int | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Runs one task on the fast path.

    Args:
        cfg: the run.
        round_groups: the test groups of each round (see :func:`build_task`).
        submission_order: per round, device indices in the order their submissions reached the
            chain; the oracle averages accepted updates in that order, and float addition is not
            associative, so replaying a protocol run bit for bit needs it (default: device order).
        keep_verdicts: keep every device's verdict per round in the result (large for P = 300).
        audit: run the membership-inference audit (:mod:`fedoracle.learning.audit`) on every honest
            device's release of every round; the result's ``audit``.
        lira: with ``audit``, also the offline likelihood-ratio attack
            (:func:`fedoracle.learning.audit.lira_release`) on the same releases, its shadow updates
            trained each round from the round's global model with the devices' own training and
            privacy mechanism on training examples no device holds; the result's ``lira``.
        stop_after: run only this many rounds (the task, and record-level DP-SGD's noise, still
            plan for ``cfg.rounds``): e.g. 1 to measure what honest devices reach in round 1.
        log: ``callable(str)`` for progress lines, or ``None``.

    Returns:
        A JSON-able dict: ``config``, ``rounds`` (threshold, global accuracy, accepted count and
        verdicts per round), ``final_accuracy`` (whole test set), ``detection`` and ``candidates``
        (see :mod:`experiments.metrics`), ``epsilon_spent`` and ``seconds``.
    """
    from experiments import adaptive
    from experiments.metrics import candidate_stats, detection

    t0 = time.perf_counter()
    data = dataset(cfg.dataset, cfg.data_path)
    fleet = build_fleet(cfg, data)
    task = build_task(cfg, data, round_groups)
    weights = [np.asarray(w) for w in task.initial]
    threshold = to_bp(cfg.initial_threshold)
    records: list[RoundRecord] = []
    attacks: list[dict[str, float]] = []
    liras: list[dict[str, float]] = []
    if audit:
        from fedoracle.learning.audit import attack_release, audit_sets, lira_release

        n_audit, outside, audit_rng = audit_sets(len(data.y_train), [np.asarray(d.indices) for d in fleet])
        nonmembers = (data.x_train[outside], data.y_train[outside])
        public = np.ones(len(data.y_train), dtype=bool)  # LiRA's shadow data: no shard, no audited non-member
        for d in fleet:
            public[np.asarray(d.indices)] = False
        public[outside] = False
    for r in range(1, min(cfg.rounds, stop_after or cfg.rounds) + 1):
        if records:
            raised = next_threshold(r, threshold, records[-1].global_accuracy_bp, cfg.threshold_margin)
            threshold = raised if raised is not None else threshold
        ids = task.round_groups[r]
        x = np.concatenate([task.groups[i][0] for i in ids])
        y = np.concatenate([task.groups[i][1] for i in ids])
        ev = evaluator(task.spec, x, y, (cfg.dataset, cfg.task_seed, cfg.test_examples, len(task.groups), tuple(ids)))
        bound = threshold if cfg.gate else 0
        verdicts, accepted = [], {}
        shadows = (
            _shadows(cfg, task, data, weights, np.flatnonzero(public), len(fleet[0].y), r) if audit and lira else []
        )
        for dev in fleet:
            if cfg.attack == "adaptive" and dev.kind == "malicious":
                update = adaptive.crafted_update(cfg, task, dev, weights, threshold)
            else:
                update = _honest_release(cfg, task, dev, weights)
            if audit and dev.kind == "honest":
                picked = audit_rng.choice(len(dev.y), size=n_audit, replace=False)
                attacks.append(attack_release(task.spec, weights, update, (dev.x[picked], dev.y[picked]), nonmembers))
                if shadows:
                    mem = (dev.x[picked], dev.y[picked])
                    liras.append(lira_release(task.spec, weights, update, mem, nonmembers, shadows))
            v = score_candidate(ev, weights, update, bound)
            verdicts.append(
                {
                    "device": dev.index,
                    "kind": dev.kind,
                    "accuracy_bp": v.accuracy_bp,
                    "reason": int(v.reason),
                    "accepted": bool(v.accepted),
                }
            )
            if v.accepted:
                accepted[dev.index] = (update, len(dev.y))
        order = (submission_order or {}).get(r) or [d.index for d in fleet]
        chosen = [accepted[i] for i in order if i in accepted]
        weights = aggregate_accepted(
            weights,
            [u for u, _ in chosen],
            [n for _, n in chosen],
            rule=cfg.aggregation,
            trim_fraction=cfg.trim_fraction,
        )
        records.append(RoundRecord(r, threshold, accuracy_bp(ev, weights), len(chosen), verdicts))
        if log:
            log(
                f"  round {r}: threshold {threshold / 100:.2f}%, accepted {len(chosen)}/{len(fleet)}, "
                f"global {records[-1].global_accuracy_bp / 100:.2f}%"
            )
    final = None
    if cfg.full_test:
        full = evaluator(task.spec, data.x_test, data.y_test, (cfg.dataset, "full"))
        final = full.evaluate(weights).accuracy
    eps = [d.accountant.epsilon() for d in fleet if d.accountant is not None]
    all_verdicts = [v for rec in records for v in rec.verdicts]
    result = {
        "config": asdict(cfg),
        "rounds": [{**asdict(rec), "verdicts": rec.verdicts if keep_verdicts else None} for rec in records],
        "final_accuracy": final,
        "global_accuracy": records[-1].global_accuracy_bp / BP,
        "final_threshold": records[-1].threshold_bp / BP,
        "detection": detection(all_verdicts),
        "candidates": candidate_stats([v for v in records[-1].verdicts]),
        "candidates_by_round": [candidate_stats(rec.verdicts) for rec in records],
        "epsilon_spent": max(eps) if eps else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if audit and attacks:
        result["audit"] = _audit_summary(cfg, fleet, attacks, n_audit)
    if audit and liras:
        from fedoracle.learning.audit import LIRA, SHADOWS

        result["lira"] = _audit_summary(cfg, fleet, liras, n_audit, attack=LIRA.format(shadows=SHADOWS))
    return result


def _shadows(
    cfg: RunConfig, task: Task, data: Any, weights: list[np.ndarray], public: np.ndarray, size: int, round_number: int
) -> list[list[np.ndarray]]:
    """LiRA's shadow updates for one round: the devices' training and privacy mechanism on public examples."""
    from fedoracle.learning.audit import AUDIT_SEED, shadow_updates

    dp = DPParams(cfg.epsilon, cfg.delta, cfg.clip, cfg.dp_scaling, cfg.rounds).quantized() if cfg.dp else None

    def train(x: np.ndarray, y: np.ndarray, k: int) -> list[np.ndarray]:
        seed = training_seed(AUDIT_SEED + k, round_number)
        return device_update(task.spec, weights, x, y, **cfg.local_training(), seed=seed, dp=dp)

    return shadow_updates(data.x_train[public], data.y_train[public], train, size=size, seed=AUDIT_SEED + round_number)


def _audit_summary(
    cfg: RunConfig, fleet: list[SimDevice], attacks: list[dict[str, float]], n: int, **named: Any
) -> dict[str, Any]:
    from fedoracle.learning.audit import LOW_FPR, privacy_bounds, summarise, tpr_bound_of

    dp = DPParams(cfg.epsilon, cfg.delta, cfg.clip, cfg.dp_scaling, cfg.rounds) if cfg.dp else None
    schedule = {
        "num_samples": len(fleet[0].y),
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "rounds": cfg.rounds,
    }
    bound, eps_bound, guarantee = privacy_bounds(dp, **schedule)
    return summarise(
        attacks,
        members=n,
        nonmembers=n,
        bound=bound,
        epsilon_bound=eps_bound,
        guarantee=guarantee,
        tpr_bound=tpr_bound_of(dp, fpr=LOW_FPR, **schedule),
        **named,
    )
