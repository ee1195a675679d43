"""The likelihood-ratio membership-inference attack (offline LiRA) and its low-FPR figures.

The attack is tried where it must succeed (a deliberately overfit, non-private release: its true
positives at 1% false positives far above chance) and where it must not (no member signal: the
"members" it is shown were never trained on). Its figures are checked against closed forms: the
true-positive rate at a fixed false-positive rate by counting, its chance level by simulation, and
the TPR bound of a Gaussian mechanism against the exact Gaussian trade-off curve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from fedoracle.learning.audit import (
    LOW_FPR,
    attack_release,
    chance_advantage,
    chance_tpr_at_fpr,
    lira_release,
    lira_scores,
    shadow_updates,
    tpr_at_fpr,
    tpr_bound_of,
)
from fedoracle.learning.privacy import tpr_bound
from fedoracle.learning.rounds import DPParams, device_update

DELTA = 1e-5


@pytest.mark.parametrize(("fpr", "allowed"), [(0.0, 0), (0.01, 1), (0.05, 5), (0.10, 10)])
def test_tpr_at_fpr_lets_at_most_the_allowed_false_positives_through(fpr, allowed):
    others = np.arange(100.0)  # non-member scores 0 … 99: the top `allowed` may sit above the threshold
    members = np.array([99.5 - allowed, 98.5 - allowed, 1000.0])
    # Threshold = the (allowed + 1)-th largest non-member, 99 - allowed: the first and last member pass.
    assert tpr_at_fpr(members, others, fpr) == pytest.approx(2 / 3)
    assert np.sum(others > 99 - allowed) == allowed
    with pytest.raises(ValueError, match="FPR"):
        tpr_at_fpr(members, others, 1.0)
    with pytest.raises(ValueError, match="members"):
        tpr_at_fpr(np.array([]), others)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 400), m=st.integers(20, 400), fpr=st.sampled_from([0.0, 0.01, 0.05, 0.2]))
def test_the_measured_false_positive_rate_never_exceeds_the_one_asked_for(n, m, fpr):
    rng = np.random.default_rng([n, m])
    members, others = rng.normal(size=n), rng.normal(size=m)
    threshold = np.sort(others)[::-1][int(math.floor(fpr * m + 1e-9))]
    assert np.mean(others > threshold) <= fpr + 1e-12
    assert tpr_at_fpr(members, others, fpr) == pytest.approx(np.mean(members > threshold))


def test_lira_scores_find_a_shift_against_the_out_distribution_and_nothing_without_one():
    rng = np.random.default_rng(7)
    n, k = 400, 4
    mu = rng.normal(0, 3, size=2 * n)  # each example's own "out" mean: easy and hard examples differ
    shadows = mu + rng.normal(size=(k, 2 * n))
    signal = np.concatenate([np.full(n, 3.0), np.zeros(n)])  # members sit 3 sd above their out mean
    target = mu + signal + rng.normal(size=2 * n)
    scores = lira_scores(target, shadows)
    assert tpr_at_fpr(scores[:n], scores[n:]) > 0.3  # against 0.01 by chance
    # Without per-example calibration (the raw confidence, the loss attack's view) the spread of
    # example difficulty hides most of it: the likelihood ratio is what makes the attack strong.
    assert tpr_at_fpr(target[:n], target[n:]) < tpr_at_fpr(scores[:n], scores[n:]) / 2
    null = lira_scores(mu + rng.normal(size=2 * n), shadows)
    assert tpr_at_fpr(null[:n], null[n:]) <= chance_tpr_at_fpr(n, n)["one"]
    with pytest.raises(ValueError, match="shape"):
        lira_scores(target, shadows[:1])


def test_a_signal_free_attack_stays_under_the_low_fpr_chance_level_about_95_percent_of_the_time():
    rng = np.random.default_rng(54321)  # another stream than the chance level's own
    n = 500
    level = chance_tpr_at_fpr(n, n)
    below = np.mean([tpr_at_fpr(rng.normal(size=n), rng.normal(size=n)) <= level["one"] for _ in range(400)])
    assert 0.90 <= below <= 0.995
    assert LOW_FPR < level["one"] < 0.05  # about the FPR itself, plus sampling error of 500 + 500
    more = chance_tpr_at_fpr(n, n, releases=12)
    assert more["mean"] < level["one"] < more["max"]


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.1])
def test_the_tpr_bound_is_the_gaussian_trade_off_curve(sigma, fpr):
    # One Gaussian mechanism of multiplier σ is μ-GDP with μ = 1/σ: the best test's TPR at FPR α is
    # exactly 1 − Φ(Φ⁻¹(1 − α) − μ) (Dong, Roth & Su 2019). The bound from the privacy profile may
    # only lose the ε grid's resolution and the PLD's pessimistic discretisation.
    exact = 1 - norm.cdf(norm.ppf(1 - fpr) - 1 / sigma)
    got = tpr_bound(sigma, 1.0, 1, fpr)
    assert exact - 1e-6 <= got <= exact + 0.02
    assert tpr_bound(sigma, 1.0, 4, fpr) == pytest.approx(1 - norm.cdf(norm.ppf(1 - fpr) - 2 / sigma), abs=0.02)


def test_tpr_bounds_per_mode():
    schedule = {"num_samples": 2000, "batch_size": 64, "epochs": 1, "rounds": 1}
    strong = tpr_bound_of(DPParams(1.0, DELTA, 1.0, "record", 1), fpr=0.01, **schedule)
    weak = tpr_bound_of(DPParams(8.0, DELTA, 1.0, "record", 1), fpr=0.01, **schedule)
    assert 0.01 <= strong < weak < 1
    assert tpr_bound_of(DPParams(8.0, DELTA, 5.0, "sample"), fpr=0.01, **schedule) is None  # ÷D: no guarantee
    assert tpr_bound_of(None, fpr=0.01, **schedule) is None
    # Whole-update DP at ε = 8 for one release bounds a record only as a replacement (σ/2): 0.84 at 1% FPR.
    assert tpr_bound_of(DPParams(8.0, DELTA, 5.0, "update"), fpr=0.01, **schedule) > 0.8


def test_lira_finds_an_overfit_release_and_sees_nothing_in_examples_never_trained_on(mnist, spec, initial):
    """The attacker's best case: 200 examples trained on for 30 epochs without privacy, 4 shadows."""
    x, y = mnist.x_train, mnist.y_train
    members, others, unseen = (x[:200], y[:200]), (x[200:400], y[200:400]), (x[400:600], y[400:600])
    train = {"epochs": 30, "batch_size": 32, "learning_rate": 2e-3, "optimizer": "adam", "dp": None}
    leaky = device_update(spec, initial, *members, **train, seed=0)
    public = (x[1000:5000], y[1000:5000])  # none of the audited examples

    def shadow(xs, ys, k):
        return device_update(spec, initial, xs, ys, **train, seed=100 + k)

    shadows = shadow_updates(*public, shadow, size=200, count=4)
    found = lira_release(spec, initial, leaky, members, others, shadows)
    chance = chance_tpr_at_fpr(200, 200)["one"]
    assert found["tpr_at_fpr"] > 2 * chance  # well above chance at 1% false positives (measured 0.155 vs 0.04)
    assert found["advantage"] > 2 * chance_advantage(200, 200)["one"] and found["auc"] > 0.65
    loss = attack_release(spec, initial, leaky, members, others)
    assert found["tpr_at_fpr"] > loss["tpr_at_fpr"]  # the likelihood ratio beats the loss threshold where it counts
    blind = lira_release(spec, initial, leaky, unseen, others, shadows)  # no member signal at all
    assert blind["tpr_at_fpr"] <= chance
    assert blind["advantage"] <= chance_advantage(200, 200)["one"]
    with pytest.raises(ValueError, match="public examples"):
        shadow_updates(*public, shadow, size=5000)


def test_the_report_line_carries_the_low_fpr_figures_beside_their_chance_and_bound():
    from fedoracle.learning.audit import describe_audit, summarise

    releases = [{"advantage": 0.05, "auc": 0.5, "tpr_at_fpr": 0.012}] * 3
    common = {"members": 500, "nonmembers": 500, "epsilon_bound": 0.99, "guarantee": "one record"}
    line = describe_audit(summarise(releases, bound=0.39, tpr_bound=0.11, **common))
    assert "TPR at 1% FPR 0.012 (chance 0.0" in line and "bound 0.110)" in line
    no_dp = describe_audit(summarise(releases, **{**common, "epsilon_bound": None}, bound=None))
    assert "bound none)" in no_dp and "none (no formal guarantee)" in no_dp
    old = summarise([{"advantage": 0.05, "auc": 0.5}], bound=None, **{**common, "epsilon_bound": None})
    assert "tpr_at_fpr_mean" not in old and "TPR" not in describe_audit(old)
