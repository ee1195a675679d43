"""Record-level DP-SGD (``fedoracle.learning.dpsgd``) and its accounting, tried as an auditor would.

Each test checks one claim the privacy figure rests on: the solved noise spends exactly the declared
budget over the whole schedule (against dp-accounting's two accountants and a closed form); one
record, however extreme, moves what the noise is added to by at most the clip; the algorithm is
SGD on per-example-clipped gradients; the noise is fresh; and a device stops at its budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedoracle.errors import PrivacyBudgetExhausted
from fedoracle.learning.privacy import dpsgd_epsilon, gaussian_epsilon, solve_noise_multiplier
from fedoracle.learning.rounds import DPParams, device_update, dpsgd_schedule

DELTA = 1e-5


@pytest.mark.parametrize("epsilon", [2.0, 8.0])
def test_the_solved_noise_spends_the_declared_budget_over_the_whole_schedule(epsilon):
    q, steps = 64 / 2000, 3 * 2 * 32  # the task's 3 rounds x 2 epochs x ceil(1/q) steps
    sigma = solve_noise_multiplier(epsilon, DELTA, q, steps)
    spent = dpsgd_epsilon(sigma, q, steps, DELTA)
    assert epsilon * 0.99 <= spent <= epsilon  # never more than declared, and no noise wasted
    assert dpsgd_epsilon(sigma * 0.99, q, steps, DELTA) > epsilon  # the smallest σ that fits
    rdp = dpsgd_epsilon(sigma, q, steps, DELTA, method="rdp")
    assert spent <= rdp <= 1.5 * spent  # RDP is looser but of the same order: a cross-check


def test_without_subsampling_the_accounting_is_the_gaussian_closed_form():
    # T full-batch steps at multiplier σ compose to one Gaussian mechanism at σ/√T (exact).
    sigma, steps = 20.0, 50
    assert dpsgd_epsilon(sigma, 1.0, steps, DELTA) == pytest.approx(
        gaussian_epsilon(sigma / math.sqrt(steps), DELTA), rel=0.01
    )


def test_one_record_moves_the_noised_sum_by_at_most_the_clip(mnist, spec, initial):
    from fedoracle.learning.dpsgd import clipped_gradient_sum

    clip = 0.1
    x, y = mnist.x_train[:8], mnist.y_train[:8]
    # The attacker's record: saturated pixels and a wrong label, a huge loss and gradient.
    evil_x = np.full((1, *x.shape[1:]), 255, dtype=x.dtype)
    evil_y = np.array([(int(y[0]) + 1) % 10])
    with_it = clipped_gradient_sum(spec, initial, np.concatenate([x, evil_x]), np.concatenate([y, evil_y]), clip)
    without = clipped_gradient_sum(spec, initial, x, y, clip)
    moved = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(with_it, without, strict=True)))
    alone = clipped_gradient_sum(spec, initial, evil_x, evil_y, 1e9)  # its unclipped gradient
    raw = math.sqrt(sum(float(np.sum(g**2)) for g in alone))
    assert raw > 10 * clip  # unclipped, this record alone would dominate the step
    assert moved <= clip * (1 + 1e-4)


def test_it_is_sgd_on_clipped_gradients_and_its_noise_is_fresh(mnist, spec, initial):
    from fedoracle.learning.dpsgd import clipped_gradient_sum, dp_sgd_train

    x, y = mnist.x_train[:32], mnist.y_train[:32]
    # q = 1, σ = 0, momentum 0: one step is w - lr * (clipped sum / D), nothing else.
    lr = 0.05
    trained, steps = dp_sgd_train(
        spec, initial, x, y, epochs=1, sampling_rate=1.0, learning_rate=lr, momentum=0.0, clip=0.5, noise_multiplier=0.0
    )
    summed = clipped_gradient_sum(spec, initial, x, y, 0.5)
    assert steps == 1
    for t, w, s in zip(trained, initial, summed, strict=True):
        np.testing.assert_allclose(t, w - lr * s / len(y), rtol=1e-4, atol=1e-6)
    kwargs = dict(epochs=1, sampling_rate=0.25, learning_rate=lr, momentum=0.9, clip=0.5, noise_multiplier=1.0)
    a, _ = dp_sgd_train(spec, initial, x, y, **kwargs)
    b, _ = dp_sgd_train(spec, initial, x, y, **kwargs)
    assert not any(np.array_equal(u, v) for u, v in zip(a, b, strict=True))  # fresh sampling and noise


def test_a_device_stops_at_its_budget(mnist, spec, initial):
    from fedoracle.learning.privacy import PrivacyAccountant

    x, y = mnist.x_train[:256], mnist.y_train[:256]
    dp = DPParams(8.0, DELTA, 1.0, "record", rounds=2)
    accountant = PrivacyAccountant(DELTA)
    kwargs = dict(epochs=1, batch_size=64, learning_rate=0.1, optimizer="sgd", seed=1, dp=dp, accountant=accountant)
    for _ in range(2):
        device_update(spec, initial, x, y, **kwargs)
    q, per_round, _ = dpsgd_schedule(dp, len(y), 64, 1)
    assert accountant.steps == 2 * per_round and q == 0.25
    assert 8.0 * 0.99 <= accountant.epsilon() <= 8.0  # the whole budget, spent over the task's rounds
    with pytest.raises(PrivacyBudgetExhausted, match="budget"):
        device_update(spec, initial, x, y, **kwargs)  # a third round would overspend: refused
    assert accountant.steps == 2 * per_round  # and nothing was trained or recorded
    with pytest.raises(ValueError, match="SGD"):
        device_update(spec, initial, x, y, **{**kwargs, "optimizer": "adam"})


@pytest.mark.parametrize("architecture", ["small_cnn", "small_cnn_gn"])
def test_the_layerwise_clipped_sum_is_the_per_example_one(mnist, architecture):
    """The batched computation equals clipping each example's own gradient (vectorized_map), outliers included."""
    from fedoracle.learning.dpsgd import clipped_gradient_sum
    from fedoracle.learning.models import initial_weights, model_spec

    spec = model_spec(architecture, mnist.input_shape, mnist.num_classes)
    weights = initial_weights(spec, 3)
    x, y = mnist.x_train[:15].copy(), mnist.y_train[:15].copy()
    x[0], y[0] = 255, (int(y[0]) + 1) % 10  # one saturated, mislabelled record: clipped hard
    for clip in (0.05, 1e9):  # every example clipped; none clipped (the plain gradient sum)
        fast = clipped_gradient_sum(spec, weights, x, y, clip)
        slow = clipped_gradient_sum(spec, weights, x, y, clip, layerwise=False)
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(b).max())))


def test_models_with_other_layers_fall_back_to_vectorized_map():
    from fedoracle.learning.dpsgd import _layerwise_supported
    from fedoracle.learning.models import build_model

    assert _layerwise_supported(build_model("small_cnn", (28, 28, 1), 10))
    assert not _layerwise_supported(build_model("alexnet", (32, 32, 3), 10))  # dropout
