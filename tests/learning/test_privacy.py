"""Local DP: clipping bound, noise calibration (classic and analytic Gaussian), empirical noise, accounting."""

from __future__ import annotations

import math
from itertools import pairwise

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedoracle.learning.privacy import (
    PrivacyAccountant,
    add_noise,
    classic_gaussian_sigma,
    clip_update,
    gaussian_delta,
    gaussian_epsilon,
    gaussian_sigma,
    global_norm,
    noise_std,
)

_tensor = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=st.floats(-1e3, 1e3, width=32)
)


@given(st.lists(_tensor, min_size=1, max_size=4), st.floats(1e-3, 1e3))
def test_clip_bound_holds(update: list[np.ndarray], clip: float) -> None:
    """After clipping the global L2 norm is at most S; within the bound nothing changes; direction is kept."""
    clipped = clip_update(update, clip)
    norm = global_norm(update)
    assert global_norm(clipped) <= clip * (1 + 1e-6)
    if norm <= clip:
        assert all(np.array_equal(a, b) for a, b in zip(clipped, update, strict=True))
    else:
        scale = clip / norm
        for a, b in zip(clipped, update, strict=True):
            np.testing.assert_allclose(a, b * scale, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("delta", [1e-5, 1e-3, 0.01])
def test_classic_sigma_is_the_formula_and_analytic_is_tighter(epsilon: float, delta: float) -> None:
    """σ = sqrt(2 ln(1.25/δ))/ε for ε < 1, and the analytic Gaussian needs less noise, still (ε, δ)-DP."""
    classic = classic_gaussian_sigma(epsilon, delta)
    assert classic == math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    analytic = gaussian_sigma(epsilon, delta)
    assert analytic < classic
    assert gaussian_delta(classic, epsilon) <= delta


def test_classic_formula_refuses_epsilon_of_one_or_more() -> None:
    """The classic bound is not a theorem for ε ≥ 1 (the paper's ε = 8)."""
    with pytest.raises(ValueError, match="ε < 1"):
        classic_gaussian_sigma(8.0, 1e-5)


@given(st.floats(0.05, 20.0), st.floats(1e-9, 0.5))
def test_analytic_sigma_solves_the_balle_wang_equation(epsilon: float, delta: float) -> None:
    """At the returned σ the Balle–Wang δ(σ, ε) equals the target δ, and ε inverts back."""
    sigma = gaussian_sigma(epsilon, delta)
    assert gaussian_delta(sigma, epsilon) == pytest.approx(delta, rel=1e-6)
    assert gaussian_delta(sigma * 0.999, epsilon) > delta
    assert gaussian_epsilon(sigma, delta) == pytest.approx(epsilon, rel=1e-6)


@pytest.mark.parametrize(("epsilon", "delta"), [(8.0, 1e-5), (8.0, math.exp(-1)), (1.0, 1e-5), (0.5, 1e-3)])
def test_analytic_sigma_agrees_with_dp_accounting(epsilon: float, delta: float) -> None:
    """dp-accounting's PLD accountant gives back ε for one release at the analytic σ."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.GaussianDpEvent(gaussian_sigma(epsilon, delta)))
    assert accountant.get_epsilon(delta) == pytest.approx(epsilon, rel=1e-3)


@pytest.mark.parametrize("num_samples", [None, 1, 50])
def test_noise_std_is_sigma_times_sensitivity(num_samples: int | None) -> None:
    """Noise on a zero update has std σ·S (or σ·S/D) within 1%, mean ~0, and the input dtype."""
    update = [np.zeros((300, 200), np.float32), np.zeros(100_000, np.float32)]
    clip, epsilon, delta = 2.0, 8.0, 1e-5
    expected = gaussian_sigma(epsilon, delta) * clip / (num_samples or 1)
    assert noise_std(clip, epsilon, delta, num_samples=num_samples) == pytest.approx(expected)
    noisy = add_noise(update, clip, epsilon, delta, num_samples=num_samples)
    values = np.concatenate([n.ravel() for n in noisy]).astype(np.float64)
    assert all(n.dtype == np.float32 for n in noisy)
    assert values.std() == pytest.approx(expected, rel=0.01)
    assert abs(values.mean()) < 5 * expected / math.sqrt(values.size)


def test_add_noise_clips_first() -> None:
    """A large update is clipped to S before the noise: the result is the clipped update plus noise."""
    update = [np.full(10_000, 100.0, np.float32)]
    noisy = add_noise(update, 1.0, 8.0, 1e-5)
    residual = (noisy[0] - clip_update(update, 1.0)[0]).astype(np.float64)
    std = noise_std(1.0, 8.0, 1e-5)
    assert residual.std() == pytest.approx(std, rel=0.05)
    assert abs(residual.mean()) < 5 * std / 100


@pytest.mark.parametrize("method", ["pld", "rdp"])
@settings(max_examples=8, deadline=None)
@given(st.floats(0.3, 5.0), st.lists(st.integers(1, 3), min_size=1, max_size=6))
def test_accounting_grows_monotonically(method: str, sigma: float, steps: list[int]) -> None:
    """ε spent never decreases as rounds are recorded, and starts at 0."""
    accountant = PrivacyAccountant(1e-5, method=method)
    spent = [accountant.epsilon()]
    for count in steps:
        accountant.record(sigma, count)
        spent.append(accountant.epsilon())
    assert spent[0] == 0.0
    assert all(b > a for a, b in pairwise(spent))
    assert accountant.rounds == sum(steps)
    assert accountant.spent() == (spent[-1], 1e-5)


@pytest.mark.parametrize("rounds", [1, 3, 10])
def test_pld_accounting_matches_gaussian_composition(rounds: int) -> None:
    """R Gaussian releases at σ compose to one at σ/√R: PLD is exact, RDP an upper bound."""
    epsilon, delta = 8.0, 1e-5
    sigma = gaussian_sigma(epsilon, delta)
    pld, rdp = PrivacyAccountant(delta), PrivacyAccountant(delta, method="rdp")
    pld.record(sigma, rounds)
    rdp.record(sigma, rounds)
    exact = gaussian_epsilon(sigma / math.sqrt(rounds), delta)
    assert pld.epsilon() == pytest.approx(exact, rel=1e-5)
    assert rdp.epsilon() >= pld.epsilon()
    if rounds == 1:
        assert pld.epsilon() == pytest.approx(epsilon, rel=1e-5)


def test_bad_privacy_parameters_are_refused() -> None:
    """Non-positive ε, δ outside (0, 1), a non-positive clip and unknown accountants raise."""
    for call in (
        lambda: gaussian_sigma(0.0, 1e-5),
        lambda: gaussian_sigma(1.0, 1.0),
        lambda: clip_update([np.ones(3, np.float32)], 0.0),
        lambda: PrivacyAccountant(1e-5, method="moments"),
        lambda: PrivacyAccountant(1e-5).record(0.0),
    ):
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("scaling", ["record", "update", "sample"])
def test_every_printed_epsilon_names_its_delta_unit_and_rounds(scaling: str) -> None:
    from fedoracle.learning.privacy import describe_epsilon

    text = describe_epsilon(7.904, 1e-5, 3, scaling)
    assert text.startswith("ε = 7.90 at δ = 1e-05, per device, ") and text.endswith(", over 3 rounds")
    assert ("no formal guarantee" in text) == (scaling == "sample")
    assert "added or removed" in text or scaling == "sample"
    assert ("one record (training example)" in text) == (scaling == "record")
    assert describe_epsilon(1.0, 1e-5, 1, scaling).endswith("over 1 round")
    with pytest.raises(ValueError, match="unknown DP scaling"):
        describe_epsilon(1.0, 1e-5, 1, "device")
