"""The demo report's privacy audit: membership inference on the updates the honest devices released.

The demo knows what an outside auditor would have to guess: which examples each device trained on
(the fleet is drawn from the demo's public seed, as ``devices/training.py make_trainers`` draws it).
For every honest device's submission of every round it reads the released update from the blob
store, opened with the round's seal secret that ``aggregate`` disclosed on-chain (what anyone can
read once the round is settled, :mod:`fedoracle.seal`), forms ``global + Δ`` with that round's
global model, and runs the loss-threshold attack of :mod:`fedoracle.learning.audit` on a sample
of the device's training examples against as many training examples no device was given. The
report puts the advantage beside its chance level and the bound the spent ε implies
(:func:`fedoracle.learning.audit.summarise`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedoracle.chain import ChainEvent
from fedoracle.defaults import DEFAULTS


def released_updates(
    events: list[ChainEvent],
    task_id: int,
    blobs: Any,
    spec: Any,
    initial: list[np.ndarray],
    chain_id: int,
    registry: str,
) -> list[tuple[int, str, list[np.ndarray], list[np.ndarray]]]:
    """``(round, device address, global model of the round, released update)`` per submission, from the chain.

    The round's global model is the initial model in round 1 and the model committed by the
    previous round's ``GlobalModelUpdated`` after; the update is the submission's sealed blob,
    opened with the round's disclosed seal secret (``SealKeyDisclosed``). Rounds not yet settled
    (no secret disclosed) and submissions that do not open are not released: they are skipped.
    """
    from fedoracle.chain import Submission
    from fedoracle.codec import decode
    from fedoracle.errors import ModelRejected
    from fedoracle.hashing import normalize_hash
    from fedoracle.seal import open_update

    secrets = {
        ev.args["round"]: bytes(ev.args["sealSecret"])
        for ev in events
        if ev.name == "SealKeyDisclosed" and ev.args.get("taskId") == task_id and not ev.removed
    }

    globals_by_round = {1: initial}
    for ev in events:
        if ev.name == "GlobalModelUpdated" and ev.args.get("taskId") == task_id:
            digest = normalize_hash(ev.args["modelHash"])
            globals_by_round[ev.args["round"] + 1] = decode(
                blobs.get(digest, max_bytes=spec.max_bytes), spec, expected_hash=digest
            )
    out = []
    for ev in events:
        if ev.name != "ModelSubmitted" or ev.args.get("taskId") != task_id or ev.removed:
            continue
        if ev.args["round"] not in secrets:
            continue
        try:
            _, update = open_update(
                blobs, Submission.from_event(ev), spec, secrets[ev.args["round"]], chain_id, registry
            )
        except ModelRejected:
            continue
        out.append((ev.args["round"], ev.args["device"].lower(), globals_by_round[ev.args["round"]], update))
    return out


def audit_demo(
    config: Any,
    data: Any,
    spec: Any,
    initial: list[np.ndarray],
    events: list[ChainEvent],
    task_id: int,
    blobs: Any,
    fleet: dict[str, Any],
    chain_id: int,
    registry: str,
) -> dict[str, Any]:
    """The audit of the demo's run, or ``{"skipped": why}`` when the fleet cannot be matched to its shards.

    Args:
        config: the demo's :class:`~demo.run.DemoConfig`.
        data: the task's data set.
        spec: the task's model spec.
        initial: the task's initial model.
        events: the chain's events of the run.
        task_id: the task.
        blobs: the blob store the devices submitted to.
        fleet: the fleet's status file (device addresses and kinds, in fleet order).
        chain_id: the chain's id (submissions are sealed to it).
        registry: the registry's address.
    """
    from fedoracle.learning.audit import LOW_FPR, attack_release, audit_sets, privacy_bounds, summarise, tpr_bound_of
    from fedoracle.learning.partition import plan_fleet
    from fedoracle.learning.rounds import DPParams

    shards = plan_fleet(
        data.y_train,
        config.count,
        DEFAULTS.fleet_seed,
        num_classes=data.num_classes,
        **config.shard_plan(),
    )
    devices = fleet.get("devices", [])
    if [d.get("kind") for d in devices] != [str(s.kind) for s in shards]:
        return {"skipped": "the fleet's devices do not match the shards drawn from the demo's seed"}
    shard_of = {d["address"].lower(): s for d, s in zip(devices, shards, strict=True)}
    try:
        n, outside, rng = audit_sets(len(data.y_train), [s.indices for s in shards])
    except ValueError as exc:
        return {"skipped": str(exc)}
    nonmembers = (data.x_train[outside], data.y_train[outside])
    attacks, rounds = [], 0
    released = released_updates(events, task_id, blobs, spec, initial, chain_id, registry)
    for r, device, global_weights, update in released:
        shard = shard_of.get(device)
        if shard is None or str(shard.kind) != "honest":
            continue
        picked = rng.choice(shard.indices, size=n, replace=False)
        attacks.append(
            attack_release(spec, global_weights, update, (data.x_train[picked], data.y_train[picked]), nonmembers)
        )
        rounds = max(rounds, r)
    if not attacks:
        return {"skipped": "no honest submission to audit"}
    dp = DPParams(config.epsilon, config.delta, config.clip, config.dp_scaling, config.rounds) if config.dp else None
    schedule = {
        "num_samples": len(shards[0].indices),
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "rounds": rounds,
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
    )
