"""The loss gate: rejecting an update whose candidate's loss is too far above the global model's.

Beside the paper's accuracy gate, a task may declare a relative loss margin
(``TaskParams.lossMarginBp``, basis points; 0 = no loss gate). The oracle already evaluates each
candidate ``global + Δ`` on the round's hidden test groups, which gives its mean cross-entropy
loss (:class:`~fedoracle.learning.evaluation.EvalResult`'s ``loss``, carried by
:class:`~fedoracle.learning.rounds.Verdict`); the reference is the round's global model's loss on
the same groups. An update fails the gate (reason ``LOSS_ABOVE_MARGIN``, code 11) when::

    candidate_loss > reference_loss * (1 + margin_bp / 10_000)

Loss is finer-grained than accuracy: an update crafted to keep the arg-max (and so the
accuracy) but push the logits the wrong way raises the loss first. Fang et al. (USENIX Security
2020, §5) found loss-based rejection (LFR) restores the trimmed mean and the median under their
tailored attacks where error-rate rejection does not.

:func:`worst_by_loss` is the other form, after Fang et al.'s LFR: reject the ``c`` updates whose
candidates have the highest loss. It is a simplification: Fang et al. score each update by the
loss of the aggregate with and without it; this scores the candidate ``global + Δ`` alone, which
the oracle has already computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BP = 10_000
UINT16_MAX = 2**16 - 1


def check_margin(margin_bp: int) -> int:
    """Validates a loss margin (``uint16`` basis points; 0 = no loss gate).

    Raises:
        ValueError: for a value the chain cannot hold.
    """
    if isinstance(margin_bp, bool) or not isinstance(margin_bp, int | np.integer) or not 0 <= margin_bp <= UINT16_MAX:
        raise ValueError(f"lossMarginBp must be an integer in 0..{UINT16_MAX} basis points, got {margin_bp!r}")
    return margin_bp


def loss_gate(candidate_loss: float, reference_loss: float, margin_bp: int) -> bool:
    """Whether a candidate passes the loss gate (``True``: keep it).

    Args:
        candidate_loss: mean cross-entropy of ``global + Δ`` on the round's test groups.
        reference_loss: the round's global model's mean cross-entropy on the same groups.
        margin_bp: the task's relative margin in basis points; 0 turns the gate off.

    Returns:
        ``False`` exactly when ``candidate_loss > reference_loss · (1 + margin_bp / 10 000)``
        (computed as ``candidate_loss · 10 000 > reference_loss · (10 000 + margin_bp)``), or when
        the gate is on and the candidate's loss is not finite.

    Raises:
        ValueError: for an invalid margin or a non-finite or negative reference loss with the gate on.
    """
    check_margin(margin_bp)
    if margin_bp == 0:
        return True
    if not math.isfinite(reference_loss) or reference_loss < 0:
        raise ValueError(f"the reference loss must be finite and non-negative, got {reference_loss}")
    if not math.isfinite(candidate_loss):
        return False
    return not candidate_loss * BP > reference_loss * (BP + margin_bp)


def worst_by_loss(losses: Sequence[float], c: int) -> list[int]:
    """The ``c`` updates whose candidates have the highest loss (Fang et al.'s LFR, simplified), to reject.

    Ties are broken by position (the later submission goes first), so the choice is deterministic;
    a non-finite loss counts as the highest.

    Args:
        losses: per update, its candidate's loss, in chain order.
        c: how many to reject (clipped to ``0..len(losses)``).

    Returns:
        Their indices, in increasing order.

    Raises:
        ValueError: for a negative ``c``.
    """
    if c < 0:
        raise ValueError(f"c must be non-negative, got {c}")
    key = [(loss if math.isfinite(loss) else math.inf, i) for i, loss in enumerate(losses)]
    worst = sorted(key, reverse=True)[: min(c, len(losses))]
    return sorted(i for _, i in worst)
