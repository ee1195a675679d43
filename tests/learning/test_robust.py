"""Robust aggregation as a task parameter: the chain encoding, each rule against a numpy reference, the loss gate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.learning.lossgate import loss_gate, worst_by_loss
from fedoracle.learning.robust import RULES, AggregationRule, next_global, robust_aggregate, root_update

SHAPES = [(3, 2), (4,)]


def _model(rng: np.random.Generator, loc: float = 0.0, scale: float = 1.0) -> list[np.ndarray]:
    return [(loc + rng.normal(size=s) * scale).astype(np.float32) for s in SHAPES]


def _flat(update: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in update])


# --- the chain encoding ----------------------------------------------------------------------------


def test_rule_codes_extend_the_oracle_flag_choices() -> None:
    """The on-chain table starts with the rules the oracle's flag knew, in that order (codes are append-only)."""
    from fedoracle.defaults import AGGREGATIONS

    assert RULES[: len(AGGREGATIONS)] == AGGREGATIONS
    assert RULES == ("fedavg", "median", "trimmed_mean", "multi_krum", "fltrust")


valid_rules = st.one_of(
    st.sampled_from([AggregationRule(), AggregationRule("median"), AggregationRule("fltrust")]),
    st.integers(1, 4999).map(lambda b: AggregationRule("trimmed_mean", b)),
    st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)).map(lambda p: AggregationRule("multi_krum", *p)),
)


@settings(max_examples=60, deadline=None)
@given(valid_rules)
def test_chain_encoding_round_trips(rule: AggregationRule) -> None:
    """to_chain → from_chain and str → parse give the rule back; the code is its index in RULES."""
    code, param, param2 = rule.to_chain()
    assert RULES[code] == rule.name
    assert AggregationRule.from_chain(code, param, param2) == rule
    assert AggregationRule.parse(str(rule)) == rule
    assert (
        AggregationRule.from_task({"aggregationRule": code, "aggregationParam": param, "aggregationParam2": param2})
        == rule
    )


@pytest.mark.parametrize(
    ("code", "param", "param2", "match"),
    [
        (5, 0, 0, "unknown aggregation rule code"),
        (-1, 0, 0, "unknown aggregation rule code"),
        (True, 0, 0, "unknown aggregation rule code"),
        (2, 0, 0, "0 < β < 5000"),
        (2, 5000, 0, "0 < β < 5000"),
        (2, 2000, 1, "no second parameter"),
        (0, 1, 0, "takes no parameter"),
        (1, 0, 3, "no second parameter"),
        (4, 7, 0, "takes no parameter"),
        (3, 2**16, 0, "uint16"),
        (3, -1, 0, "uint16"),
        (3, 1.5, 0, "uint16"),
    ],
)
def test_from_chain_rejects_nonsense(code, param, param2, match) -> None:
    """Codes outside the table and parameters a rule does not take raise a ValueError that says why."""
    with pytest.raises(ValueError, match=match):
        AggregationRule.from_chain(code, param, param2)


@pytest.mark.parametrize("text", ["krum", "trimmed_mean:abc", "multi_krum:1:2:3", "median:1", ""])
def test_parse_rejects_malformed_text(text: str) -> None:
    """The command-line form is name[:param[:param2]] with integer parameters of a valid rule."""
    with pytest.raises(ValueError):
        AggregationRule.parse(text)


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (AggregationRule(), "FedAvg"),
        (AggregationRule("median"), "median"),
        (AggregationRule("trimmed_mean", 2000), "β = 20% per side"),
        (AggregationRule("trimmed_mean", 1250), "β = 12.5% per side"),
        (AggregationRule("multi_krum", 10), "f = 10, m = n − f"),
        (AggregationRule("multi_krum", 10, 20), "f = 10, m = 20"),
        (AggregationRule("fltrust"), "root update"),
    ],
)
def test_description_for_status(rule: AggregationRule, text: str) -> None:
    """``describe`` names the rule and its parameters in words."""
    assert text in rule.describe()


def test_no_rule_declared_is_fedavg() -> None:
    """A task view without the fields (an older task) aggregates with FedAvg."""
    assert AggregationRule.from_task({}) == AggregationRule("fedavg")


# --- the rules against numpy -----------------------------------------------------------------------


def test_fedavg_is_the_weighted_mean() -> None:
    """FedAvg through the rule is aggregation.aggregate's weighted mean."""
    rng = np.random.default_rng(0)
    models = [_model(rng) for _ in range(5)]
    counts = [10, 20, 30, 400, 5]
    out = robust_aggregate(AggregationRule(), models, weights=counts)
    for i, got in enumerate(out.update):
        np.testing.assert_allclose(
            got, np.average([m[i] for m in models], axis=0, weights=counts), rtol=1e-5, atol=1e-6
        )
    assert out.selected is None and out.trust is None


@pytest.mark.parametrize("beta_bp", [1000, 2000, 3500, 4999])
@pytest.mark.parametrize("n", [3, 4, 7, 10, 20])
def test_trimmed_mean_drops_exactly_floor_beta_n_per_side(beta_bp: int, n: int) -> None:
    """The trim count is floor(β·n) in integers (β = 35% of 20 is 7, which float32 floors to 6)."""
    rng = np.random.default_rng(n + beta_bp)
    models = [_model(rng) for _ in range(n)]
    k = beta_bp * n // 10_000
    for i, got in enumerate(robust_aggregate(AggregationRule("trimmed_mean", beta_bp), models).update):
        ranked = np.sort([m[i] for m in models], axis=0)
        np.testing.assert_allclose(got, ranked[k : n - k].mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", [AggregationRule("median"), AggregationRule("trimmed_mean", 2000)])
@settings(max_examples=12, deadline=None)
@given(st.integers(5, 12), st.integers(0, 2**32 - 1), st.floats(1e2, 1e6), st.data())
def test_order_statistics_stay_in_the_honest_range(
    rule: AggregationRule, n: int, seed: int, outlier: float, data: st.DataObject
) -> None:
    """With f outliers (f < n/2 for the median, f <= floor(β n) for the trimmed mean) each coordinate is in range."""
    f_max = (n - 1) // 2 if rule.name == "median" else rule.trim_count(n)
    f = data.draw(st.integers(0, f_max))
    rng = np.random.default_rng(seed)
    honest = [_model(rng) for _ in range(n - f)]
    outliers = [[np.full(s, outlier * rng.choice([-1, 1]), np.float32) for s in SHAPES] for _ in range(f)]
    mixed = honest + outliers
    order = rng.permutation(n)
    for i, got in enumerate(robust_aggregate(rule, [mixed[j] for j in order]).update):
        stack = np.stack([h[i] for h in honest])
        assert np.all(got >= stack.min(axis=0) - 1e-6) and np.all(got <= stack.max(axis=0) + 1e-6)


def _numpy_multi_krum(models: list[list[np.ndarray]], f: int, m: int) -> tuple[list[int], list[np.ndarray]]:
    """Multi-Krum written out plainly: pairwise squared distances, the n − f − 2 nearest, the m lowest scores."""
    rows = np.stack([_flat(u) for u in models])
    n = len(rows)
    k = min(max(n - f - 2, 1), n - 1)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((rows[i] - rows[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[:k]))
    chosen = sorted(range(n), key=lambda i: (scores[i], i))[:m]
    return chosen, [np.mean([models[j][t] for j in chosen], axis=0) for t in range(len(SHAPES))]


@settings(max_examples=15, deadline=None)
@given(st.integers(7, 14), st.integers(0, 2**32 - 1), st.data())
def test_multi_krum_matches_numpy_and_selects_the_honest_cluster(n: int, seed: int, data: st.DataObject) -> None:
    """Multi-Krum equals the numpy reference, and with f < (n − 2)/2 far attackers it averages honest updates only."""
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(0, n - f))
    rng = np.random.default_rng(seed)
    honest = [_model(rng, 1.0, 0.1) for _ in range(n - f)]
    attackers = [_model(rng, -5.0, 0.1) for _ in range(f)]
    mixed = honest + attackers
    order = [int(i) for i in rng.permutation(n)]
    shuffled = [mixed[i] for i in order]
    out = robust_aggregate(AggregationRule("multi_krum", f, m), shuffled)
    chosen, mean = _numpy_multi_krum(shuffled, f, m or n - f)
    assert out.selected == chosen
    assert all(order[i] < n - f for i in out.selected)  # honest only
    for got, want in zip(out.update, mean, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_multi_krum_with_one_update_keeps_it() -> None:
    """A round with one accepted update under Multi-Krum aggregates to that update."""
    rng = np.random.default_rng(3)
    model = _model(rng)
    out = robust_aggregate(AggregationRule("multi_krum", 3), [model])
    assert out.selected == [0]
    for got, want in zip(out.update, model, strict=True):
        np.testing.assert_array_equal(got, want)


def _numpy_fltrust(models: list[list[np.ndarray]], root: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    g0 = _flat(root)
    rows = [_flat(u) for u in models]
    trust = np.array([max(0.0, float(r @ g0 / (np.linalg.norm(r) * np.linalg.norm(g0)))) for r in rows])
    if trust.sum() == 0:
        return trust, np.zeros_like(g0)
    return trust, sum(
        t * r * np.linalg.norm(g0) / np.linalg.norm(r) for t, r in zip(trust, rows, strict=True)
    ) / trust.sum()


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_fltrust_matches_numpy_zeroes_opposed_updates_and_matches_norms(n: int, seed: int, scale: float) -> None:
    """Trust is ReLU(cos) (0 for updates opposed to g_0), each update counts at ‖g_0‖, as the numpy reference."""
    rng = np.random.default_rng(seed)
    root = _model(rng, 0.5)
    aligned = [[(t + rng.normal(size=t.shape) * 0.3).astype(np.float32) * scale for t in root] for _ in range(n)]
    opposed = [[(-t * scale * 10).astype(np.float32) for t in root]]
    mixed = aligned + opposed
    out = robust_aggregate(AggregationRule("fltrust"), mixed, root_update=root)
    trust, want = _numpy_fltrust(mixed, root)
    assert out.trust is not None and out.trust[-1] == 0.0 and all(t > 0 for t in out.trust[:-1])
    np.testing.assert_allclose(out.trust, trust, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_flat(out.update), want, rtol=1e-4, atol=1e-6)
    # norm matching: the aggregate is a convex combination of vectors of norm ‖g_0‖, whatever `scale` is
    assert np.linalg.norm(_flat(out.update)) <= np.linalg.norm(_flat(root)) * (1 + 1e-5)
    (single,) = [robust_aggregate(AggregationRule("fltrust"), aligned[:1], root_update=root).update]
    assert np.linalg.norm(_flat(single)) == pytest.approx(np.linalg.norm(_flat(root)), rel=1e-5)


def test_fltrust_with_no_trust_keeps_the_global_model() -> None:
    """Every update opposed or orthogonal to g_0 (or zero): the aggregate is zero and the global model stays."""
    rng = np.random.default_rng(4)
    root = _model(rng, 1.0)
    updates = [[-t for t in root], [np.zeros(s, np.float32) for s in SHAPES]]
    glob = _model(rng)
    new, agg = next_global(AggregationRule("fltrust"), glob, updates, [10, 10], root_update=root)
    assert agg is not None and agg.trust == [0.0, 0.0]
    for got, want in zip(new, glob, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="root update"):
        robust_aggregate(AggregationRule("fltrust"), updates)


def test_next_global_with_nothing_accepted_is_the_global_model() -> None:
    """No accepted update: the global model stays, and there is no aggregation to report."""
    glob = _model(np.random.default_rng(5))
    new, agg = next_global(AggregationRule("median"), glob, [], [])
    assert agg is None and all(np.array_equal(a, b) for a, b in zip(new, glob, strict=True))


def test_inconsistent_layouts_are_refused() -> None:
    """Updates of different shapes, and no update at all, raise ValueError."""
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="differ"):
        robust_aggregate(AggregationRule("multi_krum", 1), [_model(rng), [np.zeros((3, 2), np.float32)]])
    with pytest.raises(ValueError, match="nothing"):
        robust_aggregate(AggregationRule("fltrust"), [], root_update=_model(rng))


def test_root_update_is_reproducible_bit_for_bit(mnist, spec, initial) -> None:
    """Two oracles training the same global model on the same root set with the default schedule get the same g_0."""
    x, y = mnist.x_train[:100], mnist.y_train[:100]
    first = root_update(spec, initial, x, y)
    second = root_update(spec, initial, x, y)
    assert any(np.any(t != 0) for t in first)
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    other = root_update(spec, initial, x, y, seed=1)
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first, other, strict=True))


# --- the loss gate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "reference", "margin", "passes"),
    [
        (1.10, 1.0, 1000, True),  # exactly at the bound: kept
        (1.1000001, 1.0, 1000, False),
        (0.5, 1.0, 1, True),
        (1.0001, 1.0, 1, True),
        (1.00011, 1.0, 1, False),
        (1e9, 1.0, 0, True),  # margin 0: no loss gate
        (float("nan"), 1.0, 500, False),
        (float("inf"), 1.0, 500, False),
        (0.0, 0.0, 500, True),
        (1e-12, 0.0, 500, False),
    ],
)
def test_loss_gate_boundary(candidate: float, reference: float, margin: int, passes: bool) -> None:
    """Rejected exactly when candidate > reference · (1 + margin/10 000); margin 0 turns the gate off."""
    assert loss_gate(candidate, reference, margin) is passes


@pytest.mark.parametrize("margin", [-1, 2**16, 1.5, True])
def test_loss_gate_refuses_margins_the_chain_cannot_hold(margin) -> None:
    """The margin is a uint16 of basis points."""
    with pytest.raises(ValueError, match="lossMarginBp"):
        loss_gate(1.0, 1.0, margin)


def test_loss_gate_needs_a_usable_reference() -> None:
    """With the gate on, a non-finite reference loss is an error, not a verdict."""
    with pytest.raises(ValueError, match="reference loss"):
        loss_gate(1.0, float("nan"), 100)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=0, max_size=12), st.integers(0, 14))
def test_worst_by_loss_rejects_the_c_highest(losses: list[float], c: int) -> None:
    """The rejected are min(c, n) updates, none with a lower loss than a kept one."""
    worst = worst_by_loss(losses, c)
    assert len(worst) == min(c, len(losses)) and worst == sorted(set(worst))
    kept = [loss for i, loss in enumerate(losses) if i not in worst]
    assert all(losses[i] >= k for i in worst for k in kept)


def test_verdicts_carry_the_candidate_loss(mnist, spec, initial) -> None:
    """score_candidates' verdicts carry the evaluator's loss of global + Δ (None when not evaluated)."""
    from fedoracle.learning.evaluation import Evaluator
    from fedoracle.learning.rounds import candidate, score_candidates

    ev = Evaluator(spec, mnist.x_test[:500], mnist.y_test[:500])
    rng = np.random.default_rng(7)
    update = [rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in initial]
    bad = [np.full(w.shape, np.inf, w.dtype) for w in initial]
    good, nonfinite = score_candidates(ev, initial, [update, bad], [0, 0])
    assert good.loss == pytest.approx(ev.evaluate(candidate(initial, update)).loss, abs=1e-9)
    assert nonfinite.loss is None
