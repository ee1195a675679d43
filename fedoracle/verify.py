"""Re-checking a settled round from the chain and the public blob store alone (``fedoracle verify``).

Anyone, holding no key and no vault, recomputes what the oracle posted for each settled round:

1. the disclosed seal secret (``SealKeyDisclosed``) is the secret of the round's ``sealKey``;
2. every submission (``ModelSubmitted``) is opened for its submitter with that secret and scored
   on the disclosed test groups (``TestDataDisclosed``, each checked against its hash) with the
   oracle's own evaluation (:func:`fedoracle.learning.judging.judge_submission`);
3. the copy rule (:func:`fedoracle.learning.copies.find_copies`) runs over the evaluated ones;
4. each recomputed (accuracy, reason), after the contract's rewrite of ``OK`` below the
   submission's threshold to ``BELOW_THRESHOLD``, equals the posted ``VerdictPosted``;
5. the new global model (``GlobalModelUpdated``) is the aggregate of the updates the chain
   accepted (:func:`fedoracle.learning.rounds.aggregate_accepted`, weighted by their declared
   sample counts), by hash or within :data:`TOLERANCE`, and its posted accuracy is recomputed.

Every difference is a :class:`Disagreement` naming the round, the device (where there is one)
and what differs. Input that cannot be checked at all (no such task, a round not settled, an
unreachable chain or blob store) raises a :class:`~fedoracle.errors.FedoracleError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, ChainEvent, Phase, Submission, TaskRegistry
from fedoracle.errors import ConfigError, ModelRejected, Reason
from fedoracle.hashing import normalize_hash
from fedoracle.learning.robust import AggregationRule

Differs = Callable[[str | None, str], None]
"""Records one disagreement: ``(device or None, what differs)``."""

TOLERANCE = 1e-5
"""Largest absolute difference per weight at which a posted global model still equals the aggregate."""


@dataclass(frozen=True)
class Disagreement:
    """One thing the chain says that the re-check does not reproduce.

    Attributes:
        round: the round.
        device: the submitting device it is about (``None`` for the round as a whole).
        what: what differs, posted against recomputed.
    """

    round: int
    device: str | None
    what: str

    def line(self) -> str:
        """One line for the terminal."""
        who = f"device {self.device}" if self.device else "round"
        return f"round {self.round}: {who}: {self.what}"


@dataclass
class RoundCheck:
    """The re-check of one settled round.

    Attributes:
        round: the round.
        verdicts: how many verdicts were re-checked.
        disagreements: what differs (empty when everything agrees).
        global_model_agrees: whether the posted global model and accuracy were reproduced.
        checked: whether the round's submissions could be opened and scored at all.
        cancelled: the round was settled by ``cancel`` (the oracle stalled), not by ``aggregate``:
            its secret was never disclosed and it has no global model, so there is nothing to
            reproduce; its payout is the stall rule's, which the contract itself computed.
    """

    round: int
    verdicts: int = 0
    checked: bool = False
    cancelled: bool = False
    disagreements: list[Disagreement] = field(default_factory=list)
    global_model_agrees: bool = False

    @property
    def agrees(self) -> bool:
        """Everything posted for the round was reproduced."""
        return not self.disagreements and (self.global_model_agrees or self.cancelled)

    def summary(self) -> str:
        """``round 1: 20 verdicts re-checked, all agree; global model agrees`` and the like."""
        if self.cancelled:
            return (
                f"round {self.round}: settled by cancel (the oracle stalled): no secret, no global model to "
                "re-check; the contract paid it by the stall rule"
            )
        if not self.checked:
            return f"round {self.round}: cannot be re-checked"
        bad = len({d.device for d in self.disagreements if d.device})
        verdicts = "all agree" if not bad else f"{bad} disagree"
        model = "global model agrees" if self.global_model_agrees else "global model DISAGREES"
        return f"round {self.round}: {self.verdicts} verdicts re-checked, {verdicts}; {model}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        return {
            "round": self.round,
            "verdicts": self.verdicts,
            "agrees": self.agrees,
            "checked": self.checked,
            "cancelled": self.cancelled,
            "global_model_agrees": self.global_model_agrees,
            "disagreements": [asdict(d) for d in self.disagreements],
        }


@dataclass
class RoundFacts:
    """What the chain says about one round: everything the re-check reads."""

    round: int
    settled: bool
    seal_key: str
    global_hash: str = ""  # the model the round trained from (RoundOpened)
    seal_secret: str | None = None
    groups: list[tuple[int, str]] = field(default_factory=list)  # (index, groupHash) in disclosure order
    submissions: list[Submission] = field(default_factory=list)  # in chain order
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)  # device (lower) -> VerdictPosted args
    updated: dict[str, Any] | None = None  # GlobalModelUpdated args
    by_cancel: bool = False  # settled by cancel: the task is cancelled in this round, no global model recorded


@dataclass
class TaskFacts:
    """What the chain says about a task, round by round."""

    task_id: int
    chain_id: int
    registry: str
    spec_hash: str
    groups_per_round: int
    rounds: dict[int, RoundFacts]
    rule: AggregationRule = field(default_factory=AggregationRule)  # committed at publish
    loss_margin_bp: int = 0  # the task's loss gate
    root_set_hash: str | None = None  # an fltrust task's public root set


def _hex(value: Any) -> str:
    return normalize_hash(value) if isinstance(value, bytes) else str(value).lower()


async def read_task(rpc_url: str, registry_address: str, task_id: int, from_block: int = 0) -> TaskFacts:
    """Reads a task's rounds from the registry's views and events (no key needed).

    Raises:
        ConfigError: no such task on the registry.
        ChainError: the chain cannot be read.
    """
    chain = Chain(rpc_url)
    try:
        registry = TaskRegistry(chain, registry_address)
        state = await registry.get_known_state(task_id)
        cfg = await registry.get_task(task_id)
        rounds: dict[int, RoundFacts] = {}
        for r in range(1, state["round"] + 1):
            rec = await registry.get_round(task_id, r)
            rounds[r] = RoundFacts(r, bool(rec["settled"]), _hex(rec["sealKey"]))
            rounds[r].by_cancel = (
                state["phase"] == Phase.CANCELLED and r == state["round"] and not int(_hex(rec["globalModelHash"]), 16)
            )
        head = await chain.block_number()
        events = await registry.get_events(from_block, head) if from_block <= head else []
        facts = TaskFacts(
            task_id,
            await chain.chain_id(),
            registry.address,
            _hex(cfg["modelSpecHash"]),
            int(cfg["groupsPerRound"]),
            rounds,
            AggregationRule.from_task(cfg),
            int(cfg["lossMarginBp"]),
            _hex(cfg["rootSetHash"]) if int(_hex(cfg["rootSetHash"]), 16) else None,
        )
        for ev in events:
            if ev.args.get("taskId") == task_id and not ev.removed:
                _take(facts, ev)
        return facts
    finally:
        await chain.close()


def _take(facts: TaskFacts, ev: ChainEvent) -> None:
    a = ev.args
    rf = facts.rounds.get(a.get("round", 0))
    if rf is None:
        return
    if ev.name == "RoundOpened":
        rf.global_hash = _hex(a["globalModelHash"])
    elif ev.name == "SealKeyDisclosed":
        rf.seal_secret = _hex(a["sealSecret"])
    elif ev.name == "TestDataDisclosed":
        rf.groups.append((int(a["groupIndex"]), _hex(a["groupHash"])))
    elif ev.name == "ModelSubmitted":
        rf.submissions.append(Submission.from_event(ev))
    elif ev.name == "VerdictPosted":
        rf.verdicts[a["device"].lower()] = dict(a)
    elif ev.name == "GlobalModelUpdated":
        rf.updated = dict(a)


def check_round(facts: TaskFacts, rf: RoundFacts, blobs: BlobStore) -> RoundCheck:
    """Re-checks one settled round (heavy: TensorFlow evaluation).

    Args:
        facts: the task as the chain tells it.
        rf: the round.
        blobs: the public blob store.

    Returns:
        The round's check, with one :class:`Disagreement` per difference found.
    """
    from fedoracle.learning.judging import evaluator_hash
    from fedoracle.seal import public_key

    out = RoundCheck(rf.round)

    def differs(device: str | None, what: str) -> None:
        out.disagreements.append(Disagreement(rf.round, device, what))

    if rf.by_cancel:
        out.cancelled = True  # settled by cancel: the contract's own stall rule, nothing posted to re-check
        return out
    if rf.seal_secret is None:
        differs(None, "no seal secret was disclosed (SealKeyDisclosed): its submissions cannot be opened")
        return out
    disclosed_public = "0x" + public_key(rf.seal_secret).hex()
    if disclosed_public != rf.seal_key:
        differs(
            None,
            f"the disclosed seal secret is not the round's: its public key is {disclosed_public}, "
            f"the round's sealKey is {rf.seal_key}",
        )
        return out
    groups = _test_groups(facts, rf, blobs, differs)
    if groups is None:
        return out
    ctx, judgements, judged = _judge_all(facts, rf, rf.seal_secret, blobs, groups)
    out.checked = True
    for sub, (acc, reason) in zip(rf.submissions, judged, strict=True):
        out.verdicts += 1
        _compare_verdict(sub, acc, reason, rf.verdicts.get(sub.device.lower()), differs)
    ours = evaluator_hash(facts.spec_hash)
    theirs = sorted({_hex(v["evaluatorHash"]) for v in rf.verdicts.values()} - {ours})
    if theirs:
        differs(
            None, f"verdicts name evaluator {', '.join(theirs)}, this re-check is {ours} (another fedoracle version?)"
        )
    out.global_model_agrees = _check_global(facts, rf, blobs, ctx, judgements, differs)
    return out


def _test_groups(facts: TaskFacts, rf: RoundFacts, blobs: BlobStore, differs: Differs) -> list[bytes] | None:
    if len(rf.groups) != facts.groups_per_round:
        differs(None, f"{len(rf.groups)} test groups disclosed, the task evaluates on {facts.groups_per_round}")
        return None
    out = []
    for index, digest in rf.groups:
        try:
            out.append(blobs.get(digest))  # checked against its hash, itself proven against the root
        except ModelRejected as exc:
            differs(None, f"disclosed test group {index} cannot be read: {exc.detail}")
            return None
    return out


def _judge_all(
    facts: TaskFacts, rf: RoundFacts, secret: str, blobs: BlobStore, groups: list[bytes]
) -> tuple[Any, list[Any], list[tuple[int, Reason]]]:
    """``(context, judgements, (accuracy, reason) per submission)``, the copy rule applied.

    The context is ``None`` (and there are no judgements) when the task's own spec or global
    model is unusable: the oracle then rejects every submission with that reason, and so does this.
    """
    from fedoracle.learning.copies import find_copies
    from fedoracle.learning.judging import RoundContext, judge_submission

    try:
        ctx = RoundContext.build(
            facts.task_id, rf.round, blobs, facts.spec_hash, rf.global_hash, groups, facts.loss_margin_bp
        )
    except ModelRejected as exc:
        return None, [], [(0, exc.reason) for _ in rf.submissions]
    except ValueError:  # malformed hash and the like (as oracle.scoring.Scorer.score)
        return None, [], [(0, Reason.UNDECODABLE) for _ in rf.submissions]
    judgements = [judge_submission(ctx, blobs, sub, secret, facts.chain_id, facts.registry) for sub in rf.submissions]
    evaluated = [j.reason == Reason.OK for j in judgements]
    copies = find_copies(
        [j.plaintext_hash if ok else None for j, ok in zip(judgements, evaluated, strict=True)],
        [j.update if ok else None for j, ok in zip(judgements, evaluated, strict=True)],
    )
    judged = [
        (0, copy.reason) if copy is not None else (j.accuracy_bp, j.reason)
        for j, copy in zip(judgements, copies, strict=True)
    ]
    return ctx, judgements, judged


def _compare_verdict(
    sub: Submission, acc: int, reason: Reason, posted: dict[str, Any] | None, differs: Differs
) -> None:
    from fedoracle.learning.rounds import is_accepted, verdict_reason

    want_reason = verdict_reason(reason, acc, sub.threshold_bp)
    want_accepted = is_accepted(reason, acc, sub.threshold_bp)
    want = f"{want_reason.name} at {acc} bp ({'accepted' if want_accepted else 'rejected'})"
    if posted is None:
        differs(sub.device, f"no verdict posted; recomputed {want}")
        return
    code = int(posted["reason"])
    got_name = Reason(code).name if code in {int(r) for r in Reason} else f"reason {code}"
    got = f"{got_name} at {posted['accuracyBp']} bp ({'accepted' if posted['accepted'] else 'rejected'})"
    if (posted["accuracyBp"], posted["reason"], bool(posted["accepted"])) != (acc, int(want_reason), want_accepted):
        differs(sub.device, f"posted {got}, recomputed {want}")
    if _hex(posted["modelHash"]) != sub.model_hash.lower():
        differs(sub.device, f"the verdict is for model {_hex(posted['modelHash'])}, the submission is {sub.model_hash}")


def _check_global(
    facts: TaskFacts, rf: RoundFacts, blobs: BlobStore, ctx: Any, judgements: list[Any], differs: Differs
) -> bool:
    """The posted global model and accuracy against the aggregate of the updates the chain accepted."""
    import numpy as np

    from fedoracle.codec import decode, encode_with_hash
    from fedoracle.learning.robust import aggregate_round

    if rf.updated is None:
        differs(None, "no GlobalModelUpdated for the round")
        return False
    posted_hash, posted_acc = _hex(rf.updated["modelHash"]), int(rf.updated["globalAccuracyBp"])
    accepted = [i for i, s in enumerate(rf.submissions) if (rf.verdicts.get(s.device.lower()) or {}).get("accepted")]
    if int(rf.updated["acceptedCount"]) != len(accepted):
        differs(None, f"GlobalModelUpdated counts {rf.updated['acceptedCount']} accepted, the verdicts {len(accepted)}")
        return False
    if ctx is None:  # nothing could be evaluated: the model stays, accuracy 0
        if accepted or posted_hash != rf.global_hash or posted_acc != 0:
            differs(
                None, f"the task's model cannot be evaluated, yet the round posted {posted_hash} at {posted_acc} bp"
            )
            return False
        return True
    updates: list[Sequence[Any]] = []
    for i in accepted:
        j = judgements[i]
        if j.update is None:
            differs(
                None, f"accepted update of {rf.submissions[i].device} does not open: the aggregate cannot include it"
            )
            return False
        updates.append(j.update)
    root_set = blobs.get(facts.root_set_hash) if facts.root_set_hash else None
    new = aggregate_round(
        facts.rule, ctx.spec, ctx.global_weights, updates, [rf.submissions[i].num_samples for i in accepted], root_set
    )
    _, new_hash = encode_with_hash(new, ctx.spec) if accepted else (b"", ctx.global_hash)
    ok = True
    if new_hash != posted_hash:
        try:
            posted = decode(blobs.get(posted_hash, max_bytes=ctx.spec.max_bytes), ctx.spec, expected_hash=posted_hash)
            gap = max(float(np.max(np.abs(p.astype(np.float64) - n))) for p, n in zip(posted, new, strict=True))
        except ModelRejected as exc:
            differs(None, f"the posted global model {posted_hash} cannot be read: {exc.detail}")
            return False
        if not gap <= TOLERANCE:
            differs(
                None,
                f"the posted global model {posted_hash} is not the {facts.rule} aggregate of the "
                f"{len(accepted)} accepted updates ({new_hash}; largest weight difference {gap:.3g})",
            )
            ok = False
    accuracy = ctx.accuracy_bp(new)
    if accuracy != posted_acc:
        differs(None, f"posted global accuracy {posted_acc} bp, recomputed {accuracy} bp")
        ok = False
    return ok


async def verify_task(
    rpc_url: str,
    registry_address: str,
    blobs: BlobStore,
    task_id: int,
    round_: int | None = None,
    *,
    from_block: int = 0,
) -> list[RoundCheck]:
    """Re-checks the task's settled rounds (or only ``round_``).

    Raises:
        ConfigError: no such task, no such round, the round (or every round) not settled yet.
        ChainError: the chain cannot be read.
        BlobStoreUnavailable: the blob store cannot be reached.
    """
    import asyncio

    facts = await read_task(rpc_url, registry_address, task_id, from_block)
    if round_ is not None:
        rf = facts.rounds.get(round_)
        if rf is None:
            raise ConfigError(f"task {task_id} has no round {round_} (it has reached round {len(facts.rounds)})")
        if not rf.settled:
            raise ConfigError(f"round {round_} of task {task_id} is not settled yet: nothing to re-check")
        todo = [rf]
    else:
        todo = [rf for rf in facts.rounds.values() if rf.settled]
        if not todo:
            raise ConfigError(f"task {task_id} has no settled round yet: nothing to re-check")
    for rf in todo:
        if not rf.global_hash:
            raise ConfigError(
                f"no RoundOpened event of task {task_id} round {rf.round} from block {from_block} on: "
                "start reading earlier (--from-block)"
            )
    return [await asyncio.to_thread(check_round, facts, rf, blobs) for rf in todo]
