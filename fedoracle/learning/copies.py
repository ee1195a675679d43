"""The copy rule: within a round, copies and near-copies of an update are paid as one.

Sealing (:mod:`fedoracle.seal`) keeps a round's updates unreadable to everyone but the oracle until
the round is settled, so nobody can copy another device's update while it counts. What sealing
cannot stop is one party submitting its own update from several identities (Sybils), exactly or
with a small perturbation, to collect several shares. The rule, applied by the oracle to the
submissions of a round that decoded and were evaluated, in chain order:

* the same plaintext bytes as an earlier submission: ``DUPLICATE`` (reason 8);
* otherwise, an update Δ (the candidate minus the round's global model) whose cosine similarity
  with an earlier evaluated update is at least :data:`NEAR_COPY_COSINE`: ``NEAR_DUPLICATE``
  (reason 10).

The bound: honest devices with independent data and their own privacy noise stay far below it
(``tests/learning/test_copies.py`` measures the largest pairwise cosine of real honest updates in
every privacy mode), while a copy needs noise of at least 14% of the update's norm
(cos = 1/√(1 + r²) < 0.99 ⇒ r > 0.142) to slip under it, about as much as an honest update's own
privacy noise, and then it is an update of its own quality to be judged on its merits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedoracle.errors import Reason

NEAR_COPY_COSINE = 0.99
"""Cosine similarity of two updates at or above which the later one is a near-copy."""


@dataclass(frozen=True)
class Copy:
    """Why a submission is paid as one with an earlier one.

    Attributes:
        reason: ``DUPLICATE`` or ``NEAR_DUPLICATE``.
        of: index (in the given order) of the earlier submission it copies.
        cosine: the cosine similarity of the two updates (1.0 for identical bytes).
    """

    reason: Reason
    of: int
    cosine: float


def _flat(update: Sequence[NDArray[Any]]) -> NDArray[np.float64]:
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in update])


def find_copies(
    plaintext_hashes: Sequence[str | None],
    updates: Sequence[Sequence[NDArray[Any]] | None],
    *,
    bound: float = NEAR_COPY_COSINE,
) -> list[Copy | None]:
    """Applies the copy rule to one round's submissions, in chain order.

    Args:
        plaintext_hashes: per submission, the hash of its opened (plaintext) update bytes, or
            ``None`` for a submission that did not open or decode (it is judged on that).
        updates: per submission, its update tensors (``None`` where the hash is ``None``).
        bound: the near-copy cosine bound.

    Returns:
        Per submission, the :class:`Copy` that makes it a copy, or ``None`` for an original.
    """
    if len(plaintext_hashes) != len(updates):
        raise ValueError("one plaintext hash per update")
    out: list[Copy | None] = [None] * len(updates)
    first: dict[str, int] = {}
    directed: list[int] = []  # the distinct submissions with a non-zero finite update, in order
    units: NDArray[np.float64] | None = None  # their unit vectors, one row each
    for i, (digest, update) in enumerate(zip(plaintext_hashes, updates, strict=True)):
        if digest is None or update is None:
            continue
        if digest in first:
            out[i] = Copy(Reason.DUPLICATE, first[digest], 1.0)
            continue
        first[digest] = i
        v = _flat(update)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            continue  # a zero update carries no direction: judged on its accuracy alone
        if units is None:
            units = np.empty((len(updates), v.size), np.float64)
        if v.size != units.shape[1]:
            raise ValueError("updates differ in size")
        np.divide(v, norm, out=units[len(directed)])
        directed.append(i)
    if units is None:
        return out
    # Every cosine at once (one matrix product, not one pass over the earlier updates per
    # submission), then the rule in chain order: each update against the earlier originals.
    m = len(directed)
    gram = units[:m] @ units[:m].T
    seen: list[int] = []  # positions in `directed` of the earlier originals
    for pos, i in enumerate(directed):
        if seen:
            sims = gram[pos, seen]
            k = int(np.argmax(sims))
            if float(sims[k]) >= bound:
                out[i] = Copy(Reason.NEAR_DUPLICATE, directed[seen[k]], float(sims[k]))
                continue
        seen.append(pos)
    return out


def max_pairwise_cosine(updates: Sequence[Sequence[NDArray[Any]]]) -> float:
    """The largest cosine similarity between two of ``updates`` (for measuring honest fleets)."""
    vs = [_flat(u) for u in updates]
    units = np.stack([v / np.linalg.norm(v) for v in vs])
    g = units @ units.T
    np.fill_diagonal(g, -1.0)
    return float(g.max())
