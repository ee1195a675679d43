"""Claiming rewards after the fact: one device, or a whole fleet, for every settled round of a task.

A fleet running ``devices run`` claims by itself when a task ends, every round it was accepted in
with one ``claimMany`` (one transfer); ``fedoracle devices claim`` is for what it missed (stopped
early, crashed, ran on another host). Claiming is permissionless on the contract and always pays
the payee recorded with the submission, so the sender only pays gas: each device sends its own
claims unless a ``sender`` is given. Claims close ``claimWindow`` seconds after the task ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from fedoracle.chain import Chain, TaskRegistry
from fedoracle.errors import ChainReverted
from fedoracle.hashing import normalize_hash


@dataclass(frozen=True)
class Claimed:
    """One reward paid: ``amount_wei`` for ``round`` of the task to ``payee`` (transaction ``tx``)."""

    device: str
    round: int
    amount_wei: int
    payee: str
    tx: str


@dataclass(frozen=True)
class NothingClaimed:
    """A device that was paid nothing; ``why`` is the contract's decoded custom error for its latest round."""

    device: str
    round: int
    why: str


async def claim_task(
    registry: TaskRegistry, task_id: int, device: str, rounds: list[int] | None = None
) -> list[Claimed | NothingClaimed]:
    """Claims every round of ``task_id`` that has a reward for ``device``, through ``registry``'s account.

    Args:
        registry: the registry, seen through the account that sends (and pays gas for) the claims.
        task_id: the task.
        device: the device whose rewards are claimed (paid to its recorded payee).
        rounds: only these rounds, each claimed even when nothing looks claimable, so that its revert
            says why (``None``: every round the task has reached that has something claimable).

    Returns:
        one :class:`Claimed` per round paid; if none was, one :class:`NothingClaimed` per asked round
        (when ``rounds`` is ``None``: the latest settled round, else the latest round reached).

    Raises:
        ChainReverted: an unknown task (``FLTaskUnknown``).
        ChainError: the RPC fails.
    """
    state = await registry.get_state(task_id)
    if rounds is None:
        reached = list(range(1, state["round"] + 1))
        due = [r for r in reached if await registry.claimable(task_id, r, device)]
        settled = [r for r in reached if (await registry.get_round(task_id, r))["settled"]]
        probe = due or settled[-1:] or reached[-1:] or [1]  # nothing due: the latest settled round's revert says why
    else:
        due = probe = rounds
    out: list[Claimed | NothingClaimed] = []
    refused: list[NothingClaimed] = []
    if rounds is None and len(due) > 1:
        try:  # every due round in one transaction and (one payee) one transfer
            receipt = await registry.claim_many(task_id, due, device)
        except ChainReverted:
            pass  # a round was claimed meanwhile: claim one by one below, each revert saying why
        else:
            tx = normalize_hash(receipt["transactionHash"])
            return [
                Claimed(device, e.args["round"], e.args["amount"], e.args["payee"], tx)
                for e in registry.events_of(receipt)
                if e.name == "RewardClaimed"
            ]
    for r in probe:
        try:
            receipt = await registry.claim(task_id, r, device)  # a claim that would revert is never sent
        except ChainReverted as exc:
            if "FLTaskUnknown" in str(exc):
                raise
            refused.append(NothingClaimed(device, r, str(exc)))
            continue
        (paid,) = [e for e in registry.events_of(receipt) if e.name == "RewardClaimed"]
        out.append(
            Claimed(device, r, paid.args["amount"], paid.args["payee"], normalize_hash(receipt["transactionHash"]))
        )
    if rounds is None and out:  # rounds found due: what was paid (a lost race is not worth a line)
        return out
    return [*out, *refused]


async def claim_fleet(
    rpc_url: str,
    registry: str,
    task_id: int,
    accounts: list[LocalAccount],
    sender: LocalAccount | None = None,
    rounds: list[int] | None = None,
) -> list[Claimed | NothingClaimed]:
    """:func:`claim_task` for each device of ``accounts`` (signing its own claims, or all sent by ``sender``).

    Args:
        rpc_url: the chain.
        registry: the registry's address.
        task_id: the task.
        accounts: the devices' ``LocalAccount`` s.
        sender: a ``LocalAccount`` that sends every claim instead (``None``: each device sends its own).
        rounds: as for :func:`claim_task`.

    Raises:
        ChainReverted: an unknown task (``FLTaskUnknown``).
        ChainError: the RPC fails.
    """
    shared = TaskRegistry(Chain(rpc_url, sender), registry) if sender is not None else None
    results: list[Claimed | NothingClaimed] = []
    try:
        for account in accounts:
            reg = shared or TaskRegistry(Chain(rpc_url, account), registry)
            try:
                results += await claim_task(reg, task_id, account.address, rounds)
            finally:
                if reg is not shared:
                    await reg.chain.close()
    finally:
        if shared is not None:
            await shared.chain.close()
    return results
