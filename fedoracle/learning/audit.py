"""The privacy audit: a membership-inference attack on a released update, its chance level, and what ε allows.

The attack is the loss-threshold attack of Yeom et al. (CSF 2018): whoever sees a device's update Δ
(the oracle, or anyone once the blob is public) forms ``global + Δ`` and guesses "member" for an
example whose loss is below a threshold. Its advantage is ``max_t (TPR(t) − FPR(t))`` over the
device's own training examples (members) against examples it never saw (non-members); 0 means the
release tells nothing, 1 everything. One implementation, called by the demo's report and the
experiments (``experiments/beyond.py``, ``experiments/simulate.py``).

Three figures are reported side by side (:func:`summarise`):

- the measured advantage (mean and max over the audited releases);
- its **chance level**: the 95% quantile of the same statistic when membership carries no signal
  (member and non-member losses exchangeable), for the sample sizes and release count used
  (:func:`chance_advantage`). An advantage below it is indistinguishable from guessing;
- the **bound** the spent privacy implies: no test tells a record's presence from its absence with
  ``TPR − FPR`` above the total-variation distance between the two output distributions, which is
  the privacy profile's δ at ε = 0 (:meth:`fedoracle.learning.privacy.PrivacyAccountant.advantage_bound`,
  tight for the composed mechanism), and never above ``(e^ε − 1 + 2δ)/(e^ε + 1)`` for an
  (ε, δ) guarantee (:func:`epsilon_advantage_bound`). The paper's ÷D mode has no bound.

A stronger attack sits beside it: the offline likelihood-ratio attack (LiRA, Carlini et al., IEEE
S&P 2022). The attacker trains a few *shadow* updates from the same global model, with the same
training and the same privacy mechanism, on public data that holds none of the audited examples
(:func:`shadow_updates`); for each audited example it compares the target release's logit-scaled
confidence ``φ = log p_y − log(1 − p_y)`` with that example's confidence under the shadows (the
"out" distribution: a Gaussian of per-example mean and pooled variance, the fixed-variance variant
the paper recommends for few shadows), and scores it by how far above the out distribution it sits
(:func:`lira_release`). Besides the advantage it reports the true-positive rate at a low
false-positive rate (:data:`LOW_FPR`, 1%), with that figure's chance level
(:func:`chance_tpr_at_fpr`) and bound (:func:`tpr_bound`: ``TPR ≤ min_ε e^ε·FPR + δ(ε)`` over the
spent privacy profile).

The statistics' own randomness (the chance level's Monte Carlo, which examples are audited, which
public examples the shadows see) is seeded: it is not privacy noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

ATTACK = "loss threshold (Yeom et al. 2018) on global + Δ"
LIRA = "offline LiRA (Carlini et al. 2022), {shadows} shadow updates on public data, on global + Δ"
LOW_FPR = 0.01  # the false-positive rate LiRA's true-positive rate is reported at
SHADOWS = 4  # shadow updates per round (offline LiRA: "out" models only)
CHANCE_QUANTILE = 0.95
AUDIT_EXAMPLES = 500  # members (and as many non-members) per attacked release: ~0.1 s each
AUDIT_SEED = 0x4A0D17  # which members and non-members are sampled (not privacy noise)


def audit_sets(
    num_train: int, shards: Sequence[NDArray[Any]], *, examples: int = AUDIT_EXAMPLES
) -> tuple[int, NDArray[Any], np.random.Generator]:
    """``(n, non-member indices, rng)`` of an audit over a fleet's shards (training-set indices).

    ``n`` examples per side: at most ``examples``, the smallest shard and the training examples
    no shard holds; the non-members are ``n`` of those, and ``rng`` (seeded) draws each attacked
    device's ``n`` members from its shard.

    Raises:
        ValueError: when every training example is in some shard (no non-member to compare with).
    """
    used = np.zeros(num_train, dtype=bool)
    for indices in shards:
        used[indices] = True
    n = min(examples, min(len(i) for i in shards), int((~used).sum()))
    if n < 1:
        raise ValueError("no training example is left out of every shard to serve as a non-member")
    rng = np.random.default_rng(AUDIT_SEED)
    return n, rng.choice(np.flatnonzero(~used), size=n, replace=False), rng


def advantage(member_loss: NDArray[Any], nonmember_loss: NDArray[Any]) -> tuple[float, float]:
    """The loss-threshold attack's advantage ``max_t TPR − FPR`` and its AUC.

    Args:
        member_loss: per-example loss on the device's training examples.
        nonmember_loss: per-example loss on examples it never saw.

    Raises:
        ValueError: when either set is empty.
    """
    if len(member_loss) == 0 or len(nonmember_loss) == 0:
        raise ValueError("the attack needs members and non-members")
    members, others = np.sort(member_loss), np.sort(nonmember_loss)
    thresholds = np.unique(np.concatenate([members, others]))  # guess "member" when loss <= t (ties together)
    tpr = np.concatenate([[0.0], np.searchsorted(members, thresholds, side="right") / len(members)])
    fpr = np.concatenate([[0.0], np.searchsorted(others, thresholds, side="right") / len(others)])
    auc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    return float(np.max(tpr - fpr)), auc


def chance_advantage(
    members: int, nonmembers: int, *, releases: int = 1, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The 95% quantiles of the mean and the max advantage over ``releases`` audits with no membership signal.

    Under no signal the losses of members and non-members are exchangeable, so the advantage is
    that of a random split of ``members + nonmembers`` continuous values (what it depends on is
    their ranks). ``draws`` such splits give the null distribution of one audit; the mean and max
    over ``releases`` independent audits are resampled from it.

    Returns:
        ``{"mean": q95 of the mean, "max": q95 of the max, "one": q95 of a single audit}``.
    """
    if members < 1 or nonmembers < 1 or releases < 1:
        raise ValueError(f"need members, non-members and releases ≥ 1, got {members}, {nonmembers}, {releases}")
    rng = np.random.default_rng([seed, members, nonmembers])
    one = np.array(
        [advantage(*np.split(rng.random(members + nonmembers), [members]))[0] for _ in range(draws)], dtype=np.float64
    )
    picks = one[rng.integers(0, draws, size=(draws, releases))]
    return {
        "one": float(np.quantile(one, CHANCE_QUANTILE)),
        "mean": float(np.quantile(picks.mean(axis=1), CHANCE_QUANTILE)),
        "max": float(np.quantile(picks.max(axis=1), CHANCE_QUANTILE)),
    }


def epsilon_advantage_bound(epsilon: float, delta: float) -> float:
    """The most advantage an (ε, δ)-DP release allows: ``(e^ε − 1 + 2δ)/(e^ε + 1)`` (at most 1).

    From the hypothesis-testing view of DP (Kairouz et al. 2015): ``TPR ≤ e^ε FPR + δ`` and
    ``1 − FPR ≤ e^ε (1 − TPR) + δ``, whose corner maximises ``TPR − FPR``.
    """
    if epsilon < 0 or not 0 <= delta < 1:
        raise ValueError(f"need ε ≥ 0 and 0 ≤ δ < 1, got ε={epsilon}, δ={delta}")
    if epsilon > 700:
        return 1.0
    return min(1.0, (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1))


_models: dict[str, Any] = {}  # one Keras model per spec, reused (building one costs more than an audit)


def losses(spec: Any, weights: Sequence[NDArray[Any]], x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], float]:
    """Per-example cross-entropy of the model ``weights`` on ``(x, y)``, and its accuracy."""
    import tensorflow as tf

    from fedoracle.learning.models import build_spec_model

    if spec.spec_hash not in _models:
        _models[spec.spec_hash] = build_spec_model(spec)
    model = _models[spec.spec_hash]
    model.set_weights(list(weights))
    logits = np.concatenate([model(x[i : i + 1000], training=False).numpy() for i in range(0, len(x), 1000)])
    loss = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).numpy()
    return loss, float(np.mean(np.argmax(logits, axis=1) == y))


def attack_release(
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    update: Sequence[NDArray[Any]],
    members: tuple[NDArray[Any], NDArray[Any]],
    nonmembers: tuple[NDArray[Any], NDArray[Any]],
) -> dict[str, float]:
    """The attack on one released update: ``{"advantage", "auc"}`` on ``global + update``."""
    from fedoracle.learning.rounds import candidate

    model = candidate(global_weights, update)
    lm, _ = losses(spec, model, *members)
    ln, _ = losses(spec, model, *nonmembers)
    adv, auc = advantage(lm, ln)
    return {"advantage": adv, "auc": auc, "tpr_at_fpr": tpr_at_fpr(-lm, -ln)}


def tpr_at_fpr(member_score: NDArray[Any], nonmember_score: NDArray[Any], fpr: float = LOW_FPR) -> float:
    """The attack's true-positive rate at false-positive rate at most ``fpr`` ("member" when the score is high).

    The threshold is the lowest that lets at most ``⌊fpr · n⌋`` of the ``n`` non-members above it
    (strictly), so the measured false-positive rate never exceeds ``fpr``.

    Raises:
        ValueError: when either set is empty or ``fpr`` is not in [0, 1).
    """
    if len(member_score) == 0 or len(nonmember_score) == 0:
        raise ValueError("the attack needs members and non-members")
    if not 0 <= fpr < 1:
        raise ValueError(f"need 0 ≤ FPR < 1, got {fpr}")
    others = np.sort(np.asarray(nonmember_score, dtype=np.float64))[::-1]
    allowed = int(math.floor(fpr * len(others) + 1e-9))
    threshold = others[allowed]  # guess "member" above it: at most `allowed` non-members are
    return float(np.mean(np.asarray(member_score, dtype=np.float64) > threshold))


def chance_tpr_at_fpr(
    members: int, nonmembers: int, *, fpr: float = LOW_FPR, releases: int = 1, draws: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The 95% quantiles of :func:`tpr_at_fpr` (mean and max over ``releases`` audits) with no membership signal.

    As :func:`chance_advantage`: scores of members and non-members exchangeable, resampled from
    ``draws`` random splits. Without signal the expected TPR is about the FPR itself.
    """
    if members < 1 or nonmembers < 1 or releases < 1:
        raise ValueError(f"need members, non-members and releases ≥ 1, got {members}, {nonmembers}, {releases}")
    rng = np.random.default_rng([seed, members, nonmembers, 1])
    scores = rng.random((draws, members + nonmembers))
    one = np.array([tpr_at_fpr(row[:members], row[members:], fpr) for row in scores], dtype=np.float64)
    picks = one[rng.integers(0, draws, size=(draws, releases))]
    return {
        "one": float(np.quantile(one, CHANCE_QUANTILE)),
        "mean": float(np.quantile(picks.mean(axis=1), CHANCE_QUANTILE)),
        "max": float(np.quantile(picks.max(axis=1), CHANCE_QUANTILE)),
    }


def confidences(spec: Any, weights: Sequence[NDArray[Any]], x: NDArray[Any], y: NDArray[Any]) -> NDArray[Any]:
    """Per-example logit-scaled confidence ``φ = log p_y − log(1 − p_y)`` of the model ``weights`` (stable form).

    From the logits z: ``φ = z_y − logsumexp_{j ≠ y} z_j``, which keeps its resolution where
    ``p_y`` rounds to 1 in float32.
    """
    from scipy.special import logsumexp

    from fedoracle.learning.models import build_spec_model

    if spec.spec_hash not in _models:
        _models[spec.spec_hash] = build_spec_model(spec)
    model = _models[spec.spec_hash]
    model.set_weights(list(weights))
    logits = np.concatenate([model(x[i : i + 1000], training=False).numpy() for i in range(0, len(x), 1000)]).astype(
        np.float64
    )
    rows = np.arange(len(y))
    own = logits[rows, y]
    others = logits.copy()
    others[rows, y] = -np.inf
    return np.asarray(own - logsumexp(others, axis=1))


def shadow_updates(
    public_x: NDArray[Any],
    public_y: NDArray[Any],
    train: Any,
    *,
    size: int,
    count: int = SHADOWS,
    seed: int = AUDIT_SEED,
) -> list[list[NDArray[Any]]]:
    """LiRA's shadow updates: ``train(x, y, k)`` on ``count`` random ``size``-example subsets of the public data.

    Args:
        public_x: examples the attacker holds that are none of the audited ones.
        public_y: their labels.
        train: ``(x, y, k) -> update``: the target's training and privacy mechanism from the
            round's global model (e.g. :func:`fedoracle.learning.rounds.device_update`).
        size: examples per shadow (the target's shard size).
        count: shadow updates.
        seed: which public examples each shadow draws (not privacy noise).

    Raises:
        ValueError: when the public data has fewer than ``size`` examples.
    """
    if len(public_y) < size:
        raise ValueError(f"LiRA's shadows need {size} public examples, only {len(public_y)} are left")
    rng = np.random.default_rng([seed, size, count])
    out = []
    for k in range(count):
        picked = rng.choice(len(public_y), size=size, replace=False)
        out.append(train(public_x[picked], public_y[picked], k))
    return out


def lira_scores(target: NDArray[Any], shadows: NDArray[Any]) -> NDArray[Any]:
    """Offline LiRA's per-example score: how many pooled standard deviations φ sits above its out mean.

    Args:
        target: φ of each audited example under the target release, shape ``(n,)``.
        shadows: φ of the same examples under each shadow (none trained on them), shape ``(k, n)``,
            ``k ≥ 2``.

    The out distribution of each example is a Gaussian of its own mean over the shadows and the
    variance pooled over every example (Carlini et al.'s fixed variance, steadier than per-example
    variances from a few shadows). The score is monotone in the likelihood ratio's one-sided
    p-value ``1 − Φ(score)``: higher means "member".
    """
    shadows = np.asarray(shadows, dtype=np.float64)
    if shadows.ndim != 2 or shadows.shape[0] < 2 or shadows.shape[1] != len(target):
        raise ValueError(f"need shadows of shape (k ≥ 2, {len(target)}), got {shadows.shape}")
    mu = shadows.mean(axis=0)
    sd = float(np.sqrt(np.mean(np.var(shadows, axis=0, ddof=1))))
    return np.asarray((np.asarray(target, dtype=np.float64) - mu) / max(sd, 1e-12))


def lira_release(
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    update: Sequence[NDArray[Any]],
    members: tuple[NDArray[Any], NDArray[Any]],
    nonmembers: tuple[NDArray[Any], NDArray[Any]],
    shadows: Sequence[Sequence[NDArray[Any]]],
    *,
    fpr: float = LOW_FPR,
) -> dict[str, float]:
    """Offline LiRA on one released update: ``{"advantage", "auc", "tpr_at_fpr"}`` on ``global + update``.

    Args:
        spec: the task's model spec.
        global_weights: the round's global model.
        update: the attacked release.
        members: the device's audited training examples.
        nonmembers: as many examples it never saw.
        shadows: :func:`shadow_updates` from the same global model (trained on neither set).
        fpr: the false-positive rate the true-positive rate is read at.
    """
    from fedoracle.learning.rounds import candidate

    x = np.concatenate([members[0], nonmembers[0]])
    y = np.concatenate([members[1], nonmembers[1]])
    target = confidences(spec, candidate(global_weights, update), x, y)
    out = np.stack([confidences(spec, candidate(global_weights, s), x, y) for s in shadows])
    score = lira_scores(target, out)
    n = len(members[1])
    adv, auc = advantage(-score[:n], -score[n:])
    return {"advantage": adv, "auc": auc, "tpr_at_fpr": tpr_at_fpr(score[:n], score[n:], fpr)}


def summarise(
    attacks: Sequence[dict[str, float]],
    *,
    members: int,
    nonmembers: int,
    bound: float | None,
    epsilon_bound: float | None,
    guarantee: str,
    attack: str = ATTACK,
    tpr_bound: float | None = None,
    fpr: float = LOW_FPR,
) -> dict[str, Any]:
    """The audit's figures side by side: measured advantage, chance level, and the bounds ε implies.

    Args:
        attacks: :func:`attack_release` (or :func:`lira_release`) per audited release.
        members: member examples in each attack.
        nonmembers: non-member examples in each attack.
        bound: the tight bound (the composed mechanism's total variation), ``None`` without a guarantee.
        epsilon_bound: :func:`epsilon_advantage_bound` of the spent (ε, δ), ``None`` without a guarantee.
        guarantee: what the bound protects (:func:`fedoracle.learning.privacy.describe_epsilon`).
        attack: the attack's name (:data:`ATTACK`, :data:`LIRA`).
        tpr_bound: :func:`tpr_bound_of` at ``fpr`` (``None``: without a guarantee, or not computed).
        fpr: the false-positive rate of the attacks' ``tpr_at_fpr``.
    """
    if not attacks:
        raise ValueError("nothing was audited")
    adv = [a["advantage"] for a in attacks]
    chance = chance_advantage(members, nonmembers, releases=len(attacks))
    out = {
        "attack": attack,
        "releases": len(attacks),
        "members": members,
        "nonmembers": nonmembers,
        "advantage_mean": float(np.mean(adv)),
        "advantage_max": float(np.max(adv)),
        "auc_mean": float(np.mean([a["auc"] for a in attacks])),
        "chance_mean_q95": chance["mean"],
        "chance_max_q95": chance["max"],
        "bound": bound,
        "epsilon_bound": epsilon_bound,
        "guarantee": guarantee,
    }
    if all("tpr_at_fpr" in a for a in attacks):
        tpr = [a["tpr_at_fpr"] for a in attacks]
        tpr_chance = chance_tpr_at_fpr(members, nonmembers, fpr=fpr, releases=len(attacks))
        out.update(
            fpr=fpr,
            tpr_at_fpr_mean=float(np.mean(tpr)),
            tpr_at_fpr_max=float(np.max(tpr)),
            tpr_chance_mean_q95=tpr_chance["mean"],
            tpr_chance_max_q95=tpr_chance["max"],
            tpr_bound=tpr_bound,
        )
    return out


def describe_audit(audit: dict[str, Any]) -> str:
    """One line for a report: the measured advantage beside its chance level and its bound (and TPR at low FPR)."""
    bound = "none (no formal guarantee)" if audit["bound"] is None else f"{audit['bound']:.3f}"
    line = (
        f"membership inference ({audit['attack']}, {audit['releases']} releases, {audit['members']} members vs "
        f"{audit['nonmembers']} non-members): advantage mean {audit['advantage_mean']:.3f}, max "
        f"{audit['advantage_max']:.3f}; chance (95%) {audit['chance_mean_q95']:.3f} / {audit['chance_max_q95']:.3f}; "
        f"bound from the privacy spent {bound}"
    )
    if "tpr_at_fpr_mean" in audit:
        tpr_bound = audit.get("tpr_bound")
        limit = "none" if tpr_bound is None else f"{tpr_bound:.3f}"
        line += (
            f"; TPR at {audit['fpr']:.0%} FPR {audit['tpr_at_fpr_mean']:.3f} "
            f"(chance {audit['tpr_chance_mean_q95']:.3f}, bound {limit})"
        )
    return line


def privacy_bounds(
    dp: Any, *, num_samples: int, batch_size: int, epochs: int, rounds: int
) -> tuple[float | None, float | None, str]:
    """``(bound, epsilon_bound, guarantee)`` of one record's membership after ``rounds`` releases of a device.

    Args:
        dp: the task's :class:`~fedoracle.learning.rounds.DPParams`, or ``None`` (no privacy).
        num_samples: the device's training examples D.
        batch_size: its local (expected) batch (the DP-SGD schedule of ``"record"``).
        epochs: its local epochs per round.
        rounds: releases the device made.

    For ``"record"`` the bound is the composed DP-SGD's total variation; for ``"update"`` that of
    the Gaussian releases at σ/2 (removing a record may move the clipped update anywhere in its
    ball: a replacement, distance 2S); ``"sample"`` (the paper's ÷D) and no DP have none.
    """
    from fedoracle.learning.privacy import advantage_bound, describe_epsilon, dpsgd_epsilon

    if dp is None:
        return None, None, "no privacy (non-DP release)"
    if dp.scaling == "sample":
        return None, None, describe_epsilon(float("nan"), dp.delta, rounds, "sample")
    sigma, q, steps = record_mechanism(dp, num_samples=num_samples, batch_size=batch_size, epochs=epochs, rounds=rounds)
    if dp.scaling == "record":
        eps = dpsgd_epsilon(sigma, q, steps, dp.delta)
        return (
            advantage_bound(sigma, q, steps),
            epsilon_advantage_bound(eps, dp.delta),
            describe_epsilon(eps, dp.delta, rounds, "record"),
        )
    replaced = dpsgd_epsilon(sigma, q, steps, dp.delta)  # one record: a replacement of the update
    return (
        advantage_bound(sigma, q, steps),
        epsilon_advantage_bound(replaced, dp.delta),
        describe_epsilon(dpsgd_epsilon(2 * sigma, 1.0, rounds, dp.delta), dp.delta, rounds, "update"),
    )


def record_mechanism(
    dp: Any, *, num_samples: int, batch_size: int, epochs: int, rounds: int
) -> tuple[float, float, int]:
    """``(σ, q, steps)``: the Gaussian mechanisms one record of a device went through in ``rounds`` releases.

    ``"record"``: every DP-SGD step of the schedule (σ solved for the task, Poisson rate q). ``"update"``:
    one release per round at σ/2 relative to the clip (removing a record may move the clipped update
    anywhere in its ball: a replacement, distance 2S), q = 1.

    Raises:
        ValueError: for ``"sample"`` (the paper's ÷D), which bounds nothing.
    """
    from fedoracle.learning.privacy import gaussian_sigma
    from fedoracle.learning.rounds import dpsgd_schedule

    if dp.scaling == "record":
        q, per_round, sigma = dpsgd_schedule(dp, num_samples, batch_size, epochs)
        return sigma, q, per_round * rounds
    if dp.scaling == "update":
        return gaussian_sigma(dp.epsilon, dp.delta) / 2, 1.0, rounds
    raise ValueError(f"the {dp.scaling!r} mode bounds no record's membership")


def tpr_bound_of(dp: Any, *, fpr: float, num_samples: int, batch_size: int, epochs: int, rounds: int) -> float | None:
    """The most TPR at ``fpr`` any membership test has on one record of a device (``None`` without a guarantee).

    :func:`fedoracle.learning.privacy.tpr_bound` of :func:`record_mechanism`.
    """
    from fedoracle.learning.privacy import tpr_bound

    if dp is None or dp.scaling == "sample":
        return None
    sigma, q, steps = record_mechanism(dp, num_samples=num_samples, batch_size=batch_size, epochs=epochs, rounds=rounds)
    return tpr_bound(sigma, q, steps, fpr)
