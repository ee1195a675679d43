"""The strongest known model-poisoning attacks: one implementation for the fleet's attacker kinds and the experiments.

Every attack here crafts the malicious updates of one round from what the attackers know of the
benign updates (``benign``) and of the task, which is on-chain and public: the aggregation rule
(:class:`~fedoracle.learning.robust.AggregationRule`), the accuracy threshold and the loss margin.

- ``fang_krum`` — Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated
  Learning" (USENIX Security 2020), §4.2, the full-knowledge attack on Krum: one update
  ``−λ·s`` (``s`` the sign of the benign mean's coordinates, the direction the model moves) with
  the largest λ, found by halving from the paper's upper bound, that Krum still selects, and
  ``c − 1`` supporters close to it.
- ``fang_trmean`` — Fang et al. §4.3, the full-knowledge attack on trimmed mean (also used on the
  median): per coordinate, values beyond the benign extreme on the side opposite ``s``, drawn in
  ``[w_max, b·w_max]`` (or ``[w_max/b, w_max]``, ...), ``b = 2``.
- ``min_max`` / ``min_sum`` — Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing
  Model Poisoning Attacks and Defenses for Federated Learning" (NDSS 2021), the AGR-agnostic
  attacks: ``∇_m = μ + γ·p`` with ``p`` the negative standard deviation (``"std"``) or the negative
  unit mean (``"unit"``), γ the largest (by bisection) such that ``∇_m``'s largest distance to a
  benign update (min-max) or its sum of squared distances (min-sum) stays within the largest of
  the benign updates among themselves.
- ``label_flip`` (data, :func:`fedoracle.learning.partition.flip_labels`, the paper's attack at its
  λ) and ``adaptive`` (``experiments/adaptive.py``: scaled against the benign direction to just
  pass the threshold) need no crafting here.

What the protocol adds, and the attackers know: the copy rule (:mod:`fedoracle.learning.copies`)
rejects an update within cosine 0.99 of an earlier one, so attacks that submit one vector from
several identities give each copy its own jitter (:data:`COPY_JITTER` of its norm, and
:func:`decorrelate` after any later change); and the gates:
:func:`fit_gates` pulls each crafted update back towards the benign mean, by bisection, until the
attackers' own estimate (their held-out true-labelled data) says it passes the accuracy threshold
and the loss margin.

Knowledge: in the experiments the attackers see every benign update of the round (full
knowledge, as in both papers); in the fleet they collude only with each other and estimate the
benign statistics from their own benign updates (partial knowledge, Fang et al.'s weaker model).
Numpy throughout (float64); the attackers' randomness comes from the ``rng`` they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedoracle.learning.robust import AggregationRule

ATTACKS = ("label_flip", "adaptive", "fang_krum", "fang_trmean", "min_max", "min_sum")
"""Every attack a malicious device can run (device kinds of the fleet and the experiments)."""
CRAFTED = ("fang_krum", "fang_trmean", "min_max", "min_sum")
"""The attacks :func:`craft` makes from the benign updates."""
PERTURBATIONS = ("std", "unit")
COPY_JITTER = 0.2
"""Relative norm of the noise an attacker adds to each copy of a shared vector (cos ≈ 1/(1 + r²) = 0.96 < 0.99)."""
GATE_GUARD = 0.02
"""Accuracy the attackers keep above the threshold on their own data (as ``experiments/adaptive.py``'s ``GUARD``)."""
FANG_B = 2.0  # Fang et al.'s b: how far beyond the benign extreme the trimmed-mean attack samples
KRUM_MIN_LAMBDA = 1e-5  # Fang et al.'s threshold: stop halving λ below this


def flatten(update: Sequence[NDArray[Any]]) -> NDArray[np.float64]:
    """One update as a float64 vector (tensors in order, row-major)."""
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in update])


def unflatten(vector: NDArray[Any], like: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    """A vector back into tensors shaped and typed as ``like``."""
    total = sum(int(np.size(t)) for t in like)
    if total != len(vector):
        raise ValueError(f"vector of {len(vector)} values does not fill a layout of {total}")
    out, start = [], 0
    for t in like:
        size = int(np.size(t))
        out.append(np.asarray(vector[start : start + size], dtype=np.asarray(t).dtype).reshape(np.shape(t)))
        start += size
    return out


def _pairwise_sq(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    sq = np.sum(rows**2, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0.0)


def krum_scores(rows: NDArray[np.float64], f: int) -> NDArray[np.float64]:
    """Krum's scores (numpy): each row's sum of squared distances to its ``n − f − 2`` nearest others (≥ 1)."""
    n = len(rows)
    k = min(max(n - f - 2, 1), max(n - 1, 1))
    d = np.sort(_pairwise_sq(rows), axis=1)[:, 1 : k + 1]
    return d.sum(axis=1)


def fang_krum(
    benign: NDArray[np.float64], c: int, f: int, rng: np.random.Generator, *, jitter: float = COPY_JITTER
) -> NDArray[np.float64]:
    """Fang et al.'s attack on Krum: ``c`` rows that Krum (assuming ``f`` attackers) picks one of.

    Args:
        benign: the benign updates the attackers know, one per row.
        c: crafted updates to return.
        f: the attackers Krum assumes (the task's ``f``; at least ``c`` is what the paper assumes).
        rng: the attackers' randomness (the supporters' jitter).
        jitter: each supporter's distance from the first crafted update, relative to its norm.

    Returns:
        ``c`` rows: ``−λ·s`` and ``c − 1`` supporters around it.
    """
    s = np.sign(benign.mean(axis=0))
    d = benign.shape[1]
    m = len(benign) + c
    sq = _pairwise_sq(benign)
    dist = np.sqrt(sq)
    k = min(max(m - c - 2, 1), max(len(benign) - 1, 1))
    nearest = np.sort(dist, axis=1)[:, 1 : k + 1].sum(axis=1)
    lam = float(
        nearest.min() / (max(m - 2 * c - 1, 1) * np.sqrt(d)) + np.linalg.norm(benign, axis=1).max() / np.sqrt(d)
    )
    supporters = [rng.standard_normal(d) for _ in range(c - 1)]
    while True:
        first = -lam * s
        crafted = [first] + [first + z * (jitter * np.linalg.norm(first) / np.linalg.norm(z)) for z in supporters]
        rows = np.vstack([benign, np.stack(crafted)])
        if int(np.argmin(krum_scores(rows, f))) >= len(benign) or lam < KRUM_MIN_LAMBDA:
            return np.stack(crafted)
        lam /= 2


def fang_trmean(
    benign: NDArray[np.float64], c: int, rng: np.random.Generator, *, b: float = FANG_B
) -> NDArray[np.float64]:
    """Fang et al.'s attack on the trimmed mean and the median: ``c`` rows beyond the benign extremes.

    Per coordinate ``j`` with ``s_j`` the sign of the benign mean: where ``s_j < 0`` each crafted
    value is drawn uniformly between ``w_max,j`` and ``b·w_max,j`` (``w_max,j/b`` when
    ``w_max,j ≤ 0``); where ``s_j ≥ 0`` between ``w_min,j`` and ``w_min,j/b`` (``b·w_min,j`` when
    ``w_min,j ≤ 0``).
    """
    s = np.sign(benign.mean(axis=0))
    w_max, w_min = benign.max(axis=0), benign.min(axis=0)
    far_up = np.where(w_max > 0, b * w_max, w_max / b)
    far_down = np.where(w_min > 0, w_min / b, b * w_min)
    lo = np.where(s < 0, w_max, far_down)
    hi = np.where(s < 0, far_up, w_min)
    u = rng.random((c, benign.shape[1]))
    return np.minimum(lo, hi) + u * np.abs(hi - lo)


def perturbation(benign: NDArray[np.float64], kind: str = "std") -> NDArray[np.float64]:
    """Shejwalkar & Houmansadr's perturbation ``p``: ``−std`` of the benign rows, or ``−μ/‖μ‖``."""
    if kind == "std":
        return -benign.std(axis=0)
    if kind == "unit":
        mu = benign.mean(axis=0)
        return -mu / max(float(np.linalg.norm(mu)), 1e-300)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {', '.join(PERTURBATIONS)}")


def _largest_gamma(ok: Callable[[float], bool], *, steps: int = 40) -> float:
    """The largest γ ≥ 0 with ``ok(γ)`` (bisection after doubling; 0 when only 0 passes)."""
    lo, hi = 0.0, 1.0
    while ok(hi) and hi < 2.0**30:
        lo, hi = hi, 2 * hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        if hi - lo < 1e-5 * max(hi, 1e-12):
            break
    return lo


def min_max_sum(
    benign: NDArray[np.float64],
    c: int,
    rng: np.random.Generator,
    *,
    objective: str = "min_max",
    kind: str = "std",
    jitter: float = COPY_JITTER,
) -> NDArray[np.float64]:
    """Shejwalkar & Houmansadr's AGR-agnostic min-max / min-sum attack: ``c`` jittered copies of ``μ + γ·p``.

    The jitter (to pass the copy rule) is fixed first, at ``jitter`` of the norm of the
    unjittered optimum; γ is then searched with it included, so every copy meets the constraint.
    """
    mu = benign.mean(axis=0)
    p = perturbation(benign, kind)
    sq = _pairwise_sq(benign)
    bound = np.sqrt(sq.max()) if objective == "min_max" else sq.sum(axis=1).max()

    def cost(v: NDArray[np.float64]) -> float:
        d2 = np.sum((benign - v) ** 2, axis=1)
        return float(np.sqrt(d2.max())) if objective == "min_max" else float(d2.sum())

    gamma0 = _largest_gamma(lambda g: cost(mu + g * p) <= bound)
    base = mu + gamma0 * p
    noise = [rng.standard_normal(len(mu)) for _ in range(c)]
    shifts = [z * (jitter * np.linalg.norm(base) / np.linalg.norm(z)) for z in noise] if c > 1 else [0 * mu]
    gamma = _largest_gamma(lambda g: all(cost(mu + g * p + z) <= bound for z in shifts))
    return np.stack([mu + gamma * p + z for z in shifts])


def craft(
    attack: str,
    benign: Sequence[Sequence[NDArray[Any]]],
    num_crafted: int,
    rule: AggregationRule,
    rng: np.random.Generator,
    *,
    kind: str = "std",
) -> list[list[NDArray[Any]]]:
    """The crafted updates of one round.

    Args:
        attack: one of :data:`CRAFTED`.
        benign: the benign updates the attackers know (all of them, or their own).
        num_crafted: how many malicious updates to make (the attackers' number).
        rule: the task's aggregation rule (public): ``fang_krum`` targets Krum with the rule's
            ``f`` (the number of attackers when the rule is not Multi-Krum).
        rng: the attackers' randomness.
        kind: ``min_max`` / ``min_sum``'s perturbation (``"std"`` or ``"unit"``).

    Returns:
        ``num_crafted`` updates in the benign updates' layout.

    Raises:
        ValueError: for an unknown attack or no benign update to start from.
    """
    if attack not in CRAFTED:
        raise ValueError(f"{attack!r} is not a crafted attack; expected one of {', '.join(CRAFTED)}")
    if not benign:
        raise ValueError("the attackers need at least one benign update")
    if num_crafted < 1:
        return []
    rows = np.stack([flatten(u) for u in benign])
    if attack == "fang_krum":
        f = rule.param if rule.name == "multi_krum" else num_crafted
        out = fang_krum(rows, num_crafted, max(f, 1), rng)
    elif attack == "fang_trmean":
        out = fang_trmean(rows, num_crafted, rng)
    else:
        out = min_max_sum(rows, num_crafted, rng, objective=attack, kind=kind)
    return [unflatten(v, benign[0]) for v in out]


def fit_gates(
    crafted: Sequence[Sequence[NDArray[Any]]],
    benign_mean: Sequence[NDArray[Any]],
    passes: Callable[[list[list[NDArray[Any]]]], Sequence[bool]],
    *,
    steps: int = 10,
) -> list[list[NDArray[Any]]]:
    """Pulls each crafted update towards the benign mean just enough that the attackers' estimate says it passes.

    For each update ``v``, the largest ``t ∈ [0, 1]`` (bisection, ``steps`` halvings, all updates
    at once) such that ``passes(μ + t·(v − μ))``; ``t = 1`` (the update unchanged) when it passes
    as it is, ``t = 0`` (the benign mean) when nothing does.

    Args:
        crafted: the crafted updates.
        benign_mean: μ, the benign mean the attackers estimate.
        passes: the attackers' check of several updates against the public gates (on their own
            data), one answer per update.
        steps: bisection steps.
    """
    mu = flatten(benign_mean)
    rows = [flatten(u) for u in crafted]

    def check(which: list[int], ts: list[float]) -> list[bool]:
        moved = [unflatten(mu + t * (rows[i] - mu), crafted[0]) for i, t in zip(which, ts, strict=True)]
        return [bool(ok) for ok in passes(moved)] if moved else []

    everyone = list(range(len(rows)))
    whole = check(everyone, [1.0] * len(rows))
    lo = [1.0 if ok else 0.0 for ok in whole]
    hi = [1.0] * len(rows)
    todo = [i for i, ok in enumerate(whole) if not ok]
    for _ in range(steps if todo else 0):
        mids = [(lo[i] + hi[i]) / 2 for i in todo]
        for i, mid, ok in zip(todo, mids, check(todo, mids), strict=True):
            lo[i], hi[i] = (mid, hi[i]) if ok else (lo[i], mid)
    return [unflatten(mu + t * (v - mu), crafted[0]) for t, v in zip(lo, rows, strict=True)]


def gate_check(
    evaluator: Any, global_weights: Sequence[NDArray[Any]], threshold_bp: int, loss_margin_bp: int = 0
) -> Callable[[list[list[NDArray[Any]]]], list[bool]]:
    """The attackers' estimate of the public gates, for :func:`fit_gates`, on their own true-labelled data.

    A crafted update passes when its candidate ``global + Δ`` scores at least the threshold plus
    :data:`GATE_GUARD` on ``evaluator``'s data and, with a loss margin, keeps its loss within half
    the margin of the global model's loss there (:func:`fedoracle.learning.lossgate.loss_gate`).

    Args:
        evaluator: an :class:`~fedoracle.learning.evaluation.Evaluator` over the attackers' data.
        global_weights: the round's global model.
        threshold_bp: the threshold in force (on-chain).
        loss_margin_bp: the task's loss margin (on-chain; 0: none).
    """
    from fedoracle.learning.lossgate import loss_gate
    from fedoracle.learning.rounds import candidate

    reference = evaluator.evaluate(list(global_weights)).loss
    target = threshold_bp / 10_000 + GATE_GUARD

    def passes(updates: list[list[NDArray[Any]]]) -> list[bool]:
        results = evaluator.evaluate_many([candidate(global_weights, u) for u in updates])
        return [
            bool(np.isfinite(r.loss)) and r.accuracy >= target and loss_gate(r.loss, reference, loss_margin_bp // 2)
            for r in results
        ]

    return passes


def decorrelate(
    crafted: Sequence[Sequence[NDArray[Any]]],
    rng: np.random.Generator,
    *,
    bound: float = 0.985,
    jitter: float = COPY_JITTER / 2,
) -> list[list[NDArray[Any]]]:
    """Jitters crafted updates until no two have cosine ≥ ``bound`` (under the copy rule's 0.99), in order.

    An update too close to an earlier crafted one gets Gaussian noise of ``jitter`` of its norm
    added, again with twice the noise while it stays too close; a random direction in a model's
    tens of thousands of coordinates barely moves its accuracy.
    """
    kept: list[NDArray[np.float64]] = []
    out = []
    for update in crafted:
        v = flatten(update)
        scale = jitter
        while kept and v.any() and max(float(k @ v) / (np.linalg.norm(k) * np.linalg.norm(v)) for k in kept) >= bound:
            z = rng.standard_normal(v.shape)
            v = v + z * (scale * np.linalg.norm(v) / np.linalg.norm(z))
            scale *= 2
        kept.append(v)
        out.append(unflatten(v, update))
    return out


def benign_mean(benign: Sequence[Sequence[NDArray[Any]]]) -> list[NDArray[Any]]:
    """The attackers' estimate of the benign mean μ (float64 mean, in the updates' layout)."""
    return unflatten(np.stack([flatten(u) for u in benign]).mean(axis=0), benign[0])
