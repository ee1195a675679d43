"""Judging one round's submissions: the round's evaluation context and the score of one submission.

The oracle (``oracle/scoring.py``) and anyone who re-checks a settled round (``fedoracle verify``,
:mod:`fedoracle.verify`) call these and nothing else, so a re-check computes exactly what the
oracle computed: a :class:`RoundContext` (the task's spec, the round's global model and an
evaluator over the round's test groups) built once per round, and :func:`judge_submission`, which
fetches a sealed blob, opens it for its submitter (:func:`fedoracle.seal.open_update`), decodes it
and scores ``global + update`` (:func:`fedoracle.learning.rounds.score_candidate`), turning every
rejection into its on-chain reason code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

import fedoracle
from fedoracle.blobstore import BlobStore
from fedoracle.chain import Submission
from fedoracle.codec import ModelSpec, decode, spec_from_blob
from fedoracle.errors import ModelRejected, Reason
from fedoracle.hashing import content_hash
from fedoracle.learning.rounds import Verdict, score_candidate
from fedoracle.seal import open_update

EVALUATOR_ID = "fedoracle.learning.evaluation/v1"


def evaluator_hash(spec_hash: str) -> str:
    """Identifies the evaluation code and configuration, posted with every verdict."""
    doc = {"evaluator": EVALUATOR_ID, "fedoracle": fedoracle.__version__, "spec": spec_hash}
    return content_hash(json.dumps(doc, sort_keys=True).encode())


@dataclass
class RoundContext:
    """What scoring a round's submissions needs, built once per (task, round)."""

    task_id: int
    round: int
    spec: ModelSpec
    global_hash: str
    global_weights: list[NDArray[Any]]
    evaluator: Any  # fedoracle.learning.evaluation.Evaluator
    evaluator_hash: str
    loss_margin_bp: int = 0  # the task's loss gate (0: none)
    _reference_loss: float | None = None

    @classmethod
    def build(
        cls,
        task_id: int,
        round_: int,
        blobs: BlobStore,
        spec_hash: str,
        global_hash: str,
        test_groups: list[bytes],
        loss_margin_bp: int = 0,
    ) -> RoundContext:
        """Fetches the spec and the global model and builds the evaluator over the round's test data.

        Args:
            task_id: the task.
            round_: the round (1-based).
            blobs: where the spec and the global model are.
            spec_hash: the task's model spec hash.
            global_hash: the round's global model hash.
            test_groups: the round's test groups, as :func:`~fedoracle.learning.data.encode_group` bytes.
            loss_margin_bp: the task's loss gate (``TaskConfig.lossMarginBp``; 0: none).

        Returns:
            The round's context.

        Raises:
            ModelRejected: when the spec blob is not canonical or the global model does not decode
                against it (and the blob store's errors when a blob cannot be fetched).
        """
        from fedoracle.learning.data import decode_group
        from fedoracle.learning.evaluation import Evaluator

        spec = spec_from_blob(blobs.get(spec_hash), spec_hash)
        weights = decode(blobs.get(global_hash, max_bytes=spec.max_bytes), spec, expected_hash=global_hash)
        parts = [decode_group(g) for g in test_groups]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        evaluator = Evaluator(spec, x, y)
        return cls(task_id, round_, spec, global_hash, weights, evaluator, evaluator_hash(spec_hash), loss_margin_bp)

    @property
    def reference_loss(self) -> float:
        """The round's global model's loss on the round's test groups (the loss gate's reference; computed once)."""
        if self._reference_loss is None:
            self._reference_loss = float(self.evaluator.evaluate(self.global_weights).loss)
        return self._reference_loss

    def gate_loss(self, verdict: Verdict) -> Verdict:
        """The verdict after the task's loss gate (:func:`fedoracle.learning.lossgate.loss_gate`).

        An evaluated candidate whose loss exceeds the round's global model's by more than the
        task's margin becomes ``LOSS_ABOVE_MARGIN`` (rejected whatever its accuracy); any other
        verdict is returned as it is. Every role (the oracle, its workers, ``verify``) calls this.
        """
        from fedoracle.learning.lossgate import loss_gate

        if not self.loss_margin_bp or verdict.reason != Reason.OK or verdict.loss is None:
            return verdict
        if loss_gate(verdict.loss, self.reference_loss, self.loss_margin_bp):
            return verdict
        return Verdict(verdict.accuracy_bp, Reason.LOSS_ABOVE_MARGIN, False, verdict.loss)

    def accuracy_bp(self, weights: list[NDArray[Any]]) -> int:
        """Accuracy in basis points (:func:`fedoracle.learning.rounds.accuracy_bp`)."""
        from fedoracle.learning.rounds import accuracy_bp

        return accuracy_bp(self.evaluator, weights)


@dataclass(frozen=True)
class Judgement:
    """A submission's score before the copy rule and the threshold.

    Attributes:
        accuracy_bp: the candidate's accuracy (0 when it was not evaluated).
        reason: ``OK`` when evaluated, else why not (the reason the verdict carries).
        detail: a short human explanation of a rejection ("" for ``OK``).
        plaintext_hash: the content hash of the opened update bytes (``None`` unless it opened and decoded).
        update: the decoded update (``None`` unless it opened and decoded).
    """

    accuracy_bp: int
    reason: Reason
    detail: str = ""
    plaintext_hash: str | None = None
    update: list[NDArray[Any]] | None = None


def judge_submission(
    ctx: RoundContext, blobs: BlobStore, sub: Submission, seal_secret: bytes | str, chain_id: int, registry: str
) -> Judgement:
    """Opens, decodes and scores one submission; never raises for bad input.

    Args:
        ctx: the round's context.
        blobs: where the sealed blob is.
        sub: the submission as the chain records it.
        seal_secret: the round's secret seal key (the oracle's, or the disclosed one).
        chain_id: the chain's id.
        registry: the registry's address.

    Returns:
        The judgement: every rejection (a missing, mismatched, oversized, unsealed, undecodable
        blob, ...) comes back with its reason code.
    """
    try:
        digest, update = open_update(blobs, sub, ctx.spec, seal_secret, chain_id, registry)
        verdict = ctx.gate_loss(score_candidate(ctx.evaluator, ctx.global_weights, update, sub.threshold_bp))
    except ModelRejected as exc:
        return Judgement(0, exc.reason, exc.detail[:300])
    except ValueError as exc:  # malformed hash and the like
        return Judgement(0, Reason.UNDECODABLE, str(exc)[:300])
    if verdict.reason == Reason.NON_FINITE:
        return Judgement(0, Reason.NON_FINITE, "global + update overflows", digest, update)
    detail = LOSS_DETAIL if verdict.reason == Reason.LOSS_ABOVE_MARGIN else ""
    return Judgement(verdict.accuracy_bp, verdict.reason, detail, digest, update)


LOSS_DETAIL = "the candidate's test loss exceeds the global model's by more than the task's margin"
