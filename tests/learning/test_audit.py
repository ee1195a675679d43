"""The privacy audit (``fedoracle.learning.audit``), tried as an auditor and as an attacker would.

Each figure the reports print beside the measured advantage is checked against an independent
closed form (the chance level against the Kolmogorov–Smirnov tail, the bound against the Gaussian
mechanism's total variation); the attack is shown to find leakage where there is some (an
overfitted, non-private release) and to stay under the bound the spent ε implies where there is DP.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fedoracle.learning.audit import (
    advantage,
    attack_release,
    chance_advantage,
    epsilon_advantage_bound,
    privacy_bounds,
)
from fedoracle.learning.privacy import advantage_bound, dpsgd_epsilon
from fedoracle.learning.rounds import DPParams, device_update

DELTA = 1e-5


def test_advantage_is_max_tpr_minus_fpr():
    assert advantage(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == (1.0, 1.0)
    adv, auc = advantage(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    assert adv == 0.0 and auc == pytest.approx(0.5)
    # Members 0.1, 0.9 against non-members 0.5, 0.6: the best threshold (0.1) gives 1/2 − 0.
    assert advantage(np.array([0.1, 0.9]), np.array([0.5, 0.6]))[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="members"):
        advantage(np.array([]), np.array([1.0]))


@pytest.mark.parametrize("n", [200, 500])
def test_the_chance_level_is_the_kolmogorov_smirnov_quantile(n):
    # max_t (TPR − FPR) with no signal is the one-sided two-sample KS statistic D+, whose tail is
    # P(D+ > d) ≈ exp(−2 d² nm / (n + m)) (Smirnov): its 95% quantile is sqrt(ln 20 / 2 · (n+m)/(nm)).
    closed = math.sqrt(math.log(20) / 2 * (2 * n) / (n * n))
    chance = chance_advantage(n, n, releases=1)
    assert chance["one"] == pytest.approx(closed, rel=0.12)
    more = chance_advantage(n, n, releases=10)
    assert more["mean"] < chance["one"] < more["max"]  # averaging shrinks it, the max of 10 grows it


def test_a_signal_free_attack_stays_under_the_chance_level_about_95_percent_of_the_time():
    rng = np.random.default_rng(12345)  # another stream than the chance level's own
    n = 300
    level = chance_advantage(n, n)["one"]
    below = np.mean([advantage(rng.exponential(size=n), rng.exponential(size=n))[0] <= level for _ in range(400)])
    assert 0.90 <= below <= 0.99


def test_the_bound_is_the_gaussian_total_variation_and_tighter_than_the_epsilon_conversion():
    sigma = 2.0
    assert advantage_bound(sigma, 1.0, 1) == pytest.approx(2 * norm.cdf(1 / (2 * sigma)) - 1, abs=2e-3)
    # Four Gaussian releases compose to one at σ/2.
    assert advantage_bound(sigma, 1.0, 4) == pytest.approx(2 * norm.cdf(1 / sigma) - 1, abs=3e-3)
    q, steps, s = 64 / 2000, 96, 0.7
    tight = advantage_bound(s, q, steps)
    assert 0 < tight < epsilon_advantage_bound(dpsgd_epsilon(s, q, steps, DELTA), DELTA) <= 1
    assert epsilon_advantage_bound(0.0, 0.0) == 0.0
    assert epsilon_advantage_bound(1.0, 0.0) == pytest.approx((math.e - 1) / (math.e + 1))


def test_bounds_per_mode():
    record = DPParams(8.0, DELTA, 1.0, "record", 3)
    bound, eps_bound, said = privacy_bounds(record, num_samples=2000, batch_size=64, epochs=1, rounds=3)
    assert 0 < bound < eps_bound < 1 and "one record (training example)" in said and "over 3 rounds" in said
    fewer, _, _ = privacy_bounds(record, num_samples=2000, batch_size=64, epochs=1, rounds=1)
    assert fewer < bound  # one round of the budget allows less than all three
    assert privacy_bounds(DPParams(8.0, DELTA, 5.0, "sample"), num_samples=2000, batch_size=64, epochs=1, rounds=1)[
        :2
    ] == (None, None)
    assert privacy_bounds(None, num_samples=2000, batch_size=64, epochs=1, rounds=1)[:2] == (None, None)


def test_the_attack_finds_an_overfitted_release_and_dp_sgd_keeps_it_under_its_bound(mnist, spec, initial):
    """The attacker's best case: 100 examples trained on for 30 epochs, their losses against 100 unseen."""
    members = (mnist.x_train[:100], mnist.y_train[:100])
    others = (mnist.x_train[100:200], mnist.y_train[100:200])
    train = {"epochs": 30, "batch_size": 32, "seed": 0}
    leaky = device_update(spec, initial, *members, **train, learning_rate=2e-3, optimizer="adam", dp=None)
    found = attack_release(spec, initial, leaky, members, others)
    chance = chance_advantage(100, 100)["one"]
    assert found["advantage"] > chance  # the attack works: the audit is not blind

    dp = DPParams(1.0, DELTA, 1.0, "record", 1)
    private = device_update(spec, initial, *members, **train, learning_rate=0.1, optimizer="sgd", dp=dp)
    audited = attack_release(spec, initial, private, members, others)
    bound, _, _ = privacy_bounds(dp, num_samples=100, batch_size=32, epochs=30, rounds=1)
    assert audited["advantage"] <= bound + chance  # within the bound, up to the sampling error of 100 + 100
    assert audited["advantage"] < found["advantage"]
