"""Aggregation as TFF computations: FedAvg, coordinate-wise median and trimmed mean."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.learning.aggregation import aggregate, apply_update

SHAPES = [(3, 2), (4,)]


def _model(rng: np.random.Generator, scale: float = 1.0) -> list[np.ndarray]:
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in SHAPES]


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.booleans())
def test_fedavg_of_identical_models_is_that_model(n: int, seed: int, weighted: bool) -> None:
    """The (weighted) mean of n copies of a model is the model (up to float32 rounding)."""
    rng = np.random.default_rng(seed)
    model = _model(rng)
    weights = rng.integers(1, 1000, size=n).tolist() if weighted else None
    result = aggregate([model] * n, weights=weights)
    for got, want in zip(result, model, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_fedavg_weights_by_sample_counts() -> None:
    """Weighted FedAvg is sum(n_i w_i) / sum(n_i); unweighted is the plain mean."""
    rng = np.random.default_rng(0)
    models = [_model(rng) for _ in range(5)]
    counts = [10, 20, 30, 400, 5]
    for got, i in zip(aggregate(models, weights=counts), range(len(SHAPES)), strict=True):
        np.testing.assert_allclose(
            got, np.average([m[i] for m in models], axis=0, weights=counts), rtol=1e-5, atol=1e-6
        )
    for got, i in zip(aggregate(models), range(len(SHAPES)), strict=True):
        np.testing.assert_allclose(got, np.mean([m[i] for m in models], axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
@settings(max_examples=15, deadline=None)
@given(st.integers(5, 12), st.integers(0, 2**32 - 1), st.floats(1e3, 1e6), st.data())
def test_robust_rules_stay_in_the_honest_range(
    rule: str, n: int, seed: int, outlier: float, data: st.DataObject
) -> None:
    """With few enough outliers every coordinate of the aggregate lies between the honest minimum and maximum.

    Few enough: f < n/2 outliers for the median, f <= floor(0.2 n) for the trimmed mean.
    """
    f_max = (n - 1) // 2 if rule == "median" else int(np.floor(0.2 * n))
    f = data.draw(st.integers(0, f_max))
    rng = np.random.default_rng(seed)
    honest = [_model(rng) for _ in range(n - f)]
    outliers = [[np.full(s, outlier * rng.choice([-1, 1]), np.float32) for s in SHAPES] for _ in range(f)]
    result = aggregate(honest + outliers, rule=rule, trim_fraction=0.2)
    for i, got in enumerate(result):
        stack = np.stack([h[i] for h in honest])
        assert np.all(got >= stack.min(axis=0) - 1e-6) and np.all(got <= stack.max(axis=0) + 1e-6)


def test_median_and_trimmed_mean_match_numpy() -> None:
    """The order statistics equal numpy's median and a sorted-slice mean (even and odd counts)."""
    rng = np.random.default_rng(1)
    for n in (4, 5, 10):
        models = [_model(rng) for _ in range(n)]
        k = int(np.floor(0.2 * n))
        for i, got in enumerate(aggregate(models, rule="median")):
            np.testing.assert_allclose(got, np.median([m[i] for m in models], axis=0), rtol=1e-6)
        for i, got in enumerate(aggregate(models, rule="trimmed_mean", trim_fraction=0.2)):
            ranked = np.sort([m[i] for m in models], axis=0)
            np.testing.assert_allclose(got, ranked[k : n - k].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_apply_update_adds_in_the_global_dtype() -> None:
    """The next global model is global + update."""
    rng = np.random.default_rng(2)
    g, u = _model(rng), _model(rng)
    for got, a, b in zip(apply_update(g, u), g, u, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, a + b)
    with pytest.raises(ValueError):
        apply_update(g, u[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "krum"}, "unknown"),
        ({"rule": "trimmed_mean", "trim_fraction": 0.5}, "trim_fraction"),
        ({"weights": [1.0]}, "weight"),
        ({"weights": [1.0, -1.0]}, "weight"),
    ],
)
def test_bad_options_are_refused(kwargs: dict, match: str) -> None:
    """Unknown rules, bad trim fractions and bad weights raise ValueError."""
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match=match):
        aggregate([_model(rng), _model(rng)], **kwargs)


def test_mismatched_layouts_are_refused() -> None:
    """Updates with different tensor shapes cannot be aggregated."""
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="differ"):
        aggregate([_model(rng), [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]])
    with pytest.raises(ValueError, match="nothing"):
        aggregate([])


@pytest.mark.parametrize("n", [1, 7, 300])
def test_fedavg_equals_numpy_at_the_small_cnn_layout(n: int) -> None:
    """At the small CNN's layout and up to a P = 300 round, FedAvg equals numpy's weighted mean within float32 rounding.

    The updates reach TFF's worker through a temporary file: none is left behind.
    """
    from fedoracle.learning.aggregation import _shm_dir
    from fedoracle.learning.models import build_model

    shapes = [w.shape for w in build_model("small_cnn", (28, 28, 1), 10).get_weights()]
    rng = np.random.default_rng(5)
    updates = [[(rng.normal(size=s) * 0.05).astype(np.float32) for s in shapes] for _ in range(n)]
    counts = rng.integers(150, 250, size=n).tolist()
    tmp = Path(_shm_dir() or tempfile.gettempdir())
    before = set(tmp.glob("fedoracle-fedavg-*"))
    for weights in (counts, None):
        result = aggregate(updates, weights=weights)
        for i, got in enumerate(result):
            want = np.average(np.stack([u[i] for u in updates]).astype(np.float64), axis=0, weights=weights)
            assert got.dtype == np.float32 and got.shape == shapes[i]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert set(tmp.glob("fedoracle-fedavg-*")) == before


def test_fedavg_refuses_non_float32() -> None:
    """FedAvg reads float32 only; another dtype is refused, not silently rounded."""
    with pytest.raises(ValueError, match="float32"):
        aggregate([[np.zeros(3, np.float64)], [np.ones(3, np.float64)]])
