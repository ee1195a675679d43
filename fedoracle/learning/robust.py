"""Robust aggregation as a task parameter: the rule a task commits at publish, and the one function that applies it.

A task declares its aggregation rule on-chain as three integers, ``(aggregationRule,
aggregationParam, aggregationParam2)``; :class:`AggregationRule` is that declaration as a value
(validated both ways), and :func:`aggregate_updates` / :func:`robust_aggregate` is what the oracle,
``fedoracle verify`` and the experiments all call to combine a round's accepted updates with it.

The rules (codes are the on-chain table; append only):

====  ==============  ===========================  ==========================================
code  name            ``param``                    ``param2``
====  ==============  ===========================  ==========================================
0     fedavg          0                            0
1     median          0                            0
2     trimmed_mean    β per side, basis points     0
                      (0 < β < 5000)
3     multi_krum      f, the attackers assumed     m, updates selected (0: n − f)
4     fltrust         0                            0
====  ==============  ===========================  ==========================================

``fedavg``, ``median`` and ``trimmed_mean`` are the TFF computations of
:mod:`fedoracle.learning.aggregation`; ``multi_krum`` and ``fltrust`` are
``tff.tensorflow.computation`` s over the updates stacked along a new leading axis, in the same
manner, built once per tensor layout. Each rule's assumptions are stated in its builder's docstring.

Determinism: every rule is a fixed sequence of TensorFlow CPU ops on the same inputs, in the same
order, so the oracle and a re-check on the same machine (same TF build and thread settings) get
the same bytes; ties (equal Krum scores) are broken by submission order.

Importing this module is cheap (no TensorFlow): the CLI's ``status`` reads :class:`AggregationRule`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedoracle.defaults import AGGREGATIONS

RULES = AGGREGATIONS
"""The on-chain table of aggregation rules (:data:`fedoracle.defaults.AGGREGATIONS`).

``TaskParams.aggregationRule`` is the index (append only)."""

BP = 10_000
UINT16_MAX = 2**16 - 1


@dataclass(frozen=True)
class AggregationRule:
    """A task's aggregation rule, as committed on-chain.

    Attributes:
        name: one of :data:`RULES`.
        param: ``trimmed_mean``: β per side in basis points (0 < β < 5000); ``multi_krum``: f, the
            number of attackers the rule assumes (0 ≤ f); 0 otherwise.
        param2: ``multi_krum``: m, the number of updates selected and averaged (0: n − f); 0 otherwise.
    """

    name: str = "fedavg"
    param: int = 0
    param2: int = 0

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown aggregation rule {self.name!r}; expected one of {', '.join(RULES)}")
        for label, value in (("aggregationParam", self.param), ("aggregationParam2", self.param2)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= UINT16_MAX:
                raise ValueError(f"{label} must be an integer in 0..{UINT16_MAX} (uint16), got {value!r}")
        if self.name == "trimmed_mean":
            if not 0 < self.param < BP // 2:
                raise ValueError(f"trimmed_mean needs 0 < β < 5000 basis points per side, got {self.param}")
        elif self.name != "multi_krum" and self.param != 0:
            raise ValueError(f"{self.name} takes no parameter, got aggregationParam = {self.param}")
        if self.name != "multi_krum" and self.param2 != 0:
            raise ValueError(f"{self.name} takes no second parameter, got aggregationParam2 = {self.param2}")
        if self.name == "multi_krum" and self.param2 != 0 and self.param2 < 1:
            raise ValueError("multi_krum's m must be at least 1 (or 0 for n − f)")
        object.__setattr__(self, "param", int(self.param))
        object.__setattr__(self, "param2", int(self.param2))

    @property
    def code(self) -> int:
        """The on-chain code (``aggregationRule``)."""
        return RULES.index(self.name)

    @classmethod
    def from_chain(cls, code: int, param: int = 0, param2: int = 0) -> AggregationRule:
        """The rule a task declares: ``(aggregationRule, aggregationParam, aggregationParam2)`` of ``getTask``.

        Raises:
            ValueError: for an unknown code or parameters the rule does not take.
        """
        if isinstance(code, bool) or not isinstance(code, int | np.integer) or not 0 <= code < len(RULES):
            raise ValueError(f"unknown aggregation rule code {code!r}; expected 0..{len(RULES) - 1}")
        return cls(RULES[int(code)], param, param2)

    @classmethod
    def from_task(cls, task: dict[str, Any]) -> AggregationRule:
        """The rule of a ``getTask`` view (``fedavg`` for a task that declares none)."""
        return cls.from_chain(
            int(task.get("aggregationRule", 0)),
            int(task.get("aggregationParam", 0)),
            int(task.get("aggregationParam2", 0)),
        )

    def to_chain(self) -> tuple[int, int, int]:
        """``(aggregationRule, aggregationParam, aggregationParam2)`` as ``TaskParams`` encodes them."""
        return self.code, self.param, self.param2

    @classmethod
    def parse(cls, text: str) -> AggregationRule:
        """A rule from its command-line form: ``name[:param[:param2]]``.

        E.g. ``fedavg``, ``median``, ``trimmed_mean:2000`` (β = 20% per side), ``multi_krum:10``
        (f = 10, m = n − f), ``multi_krum:10:20``, ``fltrust``.

        Raises:
            ValueError: for a malformed text or invalid parameters.
        """
        name, *rest = text.strip().split(":")
        if len(rest) > 2:
            raise ValueError(f"{text!r}: expected name[:param[:param2]]")
        try:
            values = [int(v) for v in rest]
        except ValueError:
            raise ValueError(f"{text!r}: parameters must be integers") from None
        return cls(name, *values)

    def __str__(self) -> str:
        """The command-line form (:meth:`parse` reads it back)."""
        if self.name == "multi_krum":
            return f"multi_krum:{self.param}:{self.param2}" if self.param2 else f"multi_krum:{self.param}"
        return f"trimmed_mean:{self.param}" if self.name == "trimmed_mean" else self.name

    def describe(self) -> str:
        """A human description for ``status``, e.g. ``"trimmed mean, β = 20% per side"``."""
        if self.name == "fedavg":
            return "FedAvg (mean weighted by declared sample counts)"
        if self.name == "median":
            return "coordinate-wise median"
        if self.name == "trimmed_mean":
            return f"trimmed mean, β = {self.param / 100:g}% per side"
        if self.name == "multi_krum":
            m = f"m = {self.param2}" if self.param2 else "m = n − f"
            return f"Multi-Krum, f = {self.param}, {m}"
        return "FLTrust-style (trust = ReLU(cosine to the root update), norms matched to it)"

    @property
    def trim_fraction(self) -> float:
        """β as a fraction (``trimmed_mean``; 0 otherwise)."""
        return self.param / BP if self.name == "trimmed_mean" else 0.0

    @property
    def needs_root(self) -> bool:
        """Whether aggregating needs the root update (``fltrust``: the task commits a root set)."""
        return self.name == "fltrust"

    def trim_count(self, n: int) -> int:
        """Values dropped at each end of each coordinate for ``n`` updates: ``floor(β · n)``, in integers."""
        return self.param * n // BP if self.name == "trimmed_mean" else 0

    def krum_sizes(self, n: int) -> tuple[int, int]:
        """``(k, m)`` of Multi-Krum for ``n`` updates: neighbours scored and updates selected.

        ``k = n − f − 2`` and ``m = param2`` (or ``n − f``), each clipped into what ``n`` allows
        (``1 ≤ k ≤ n − 1``, ``1 ≤ m ≤ n``), so a round with fewer updates than the rule assumes is
        still aggregated deterministically; Krum's guarantee needs ``n > 2f + 2``.
        """
        f = self.param
        k = min(max(n - f - 2, 1), max(n - 1, 1))
        m = self.param2 if self.param2 else n - f
        return k, min(max(m, 1), n)


@dataclass(frozen=True)
class Aggregation:
    """What a rule made of one round's updates.

    Attributes:
        update: the aggregate, one ``float32`` tensor per layout entry (add it to the global model).
        selected: ``multi_krum``: the indices (into the updates given) of the updates averaged,
            best score first; ``None`` for the other rules.
        trust: ``fltrust``: each update's trust score ReLU(cos(g_i, g_0)); ``None`` otherwise.
    """

    update: list[NDArray[Any]]
    selected: list[int] | None = None
    trust: list[float] | None = field(default=None)


_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Callable[..., Any]] = {}

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def _layout(update: Sequence[NDArray[Any]]) -> Layout:
    return tuple((str(np.asarray(u).dtype), tuple(np.shape(u))) for u in update)


def _flatten(stacked: Sequence[Any]) -> Any:
    """The updates as rows of one float64 matrix (``n × d``)."""
    import tensorflow as tf

    n = tf.shape(stacked[0])[0]
    return tf.concat([tf.reshape(tf.cast(t, tf.float64), [n, -1]) for t in stacked], axis=1)


def _multi_krum_computation(layout: Layout) -> Callable[..., Any]:
    """Multi-Krum (Blanchard et al., NeurIPS 2017; El Mhamdi et al., ICML 2018) over stacked updates.

    Each update's score is the sum of its squared L2 distances (float64) to its ``k = n − f − 2``
    nearest other updates; the ``m`` updates of lowest score (ties: earlier first) are averaged
    unweighted (a device could inflate its declared sample count to pull a weighted mean).

    Assumptions: at most ``f`` of the ``n`` updates are Byzantine and ``n > 2f + 2``; honest
    updates are i.i.d. around the true gradient with bounded variance. Under non-i.i.d. data the
    honest updates themselves spread, and Krum may discard honest minorities (a known cost).
    """
    import tensorflow as tf

    from fedoracle.learning.runtime import tff_runtime

    tff = tff_runtime()
    stacked_type = tff.StructType([(None, tff.TensorType(np.dtype(d), (None, *s))) for d, s in layout])

    def multi_krum(stacked: Any, k: Any, m: Any) -> Any:
        stacked = list(stacked)
        flat = _flatten(stacked)
        distances = tf.map_fn(
            lambda row: tf.reduce_sum(tf.square(flat - row), axis=1), flat, fn_output_signature=tf.float64
        )
        nearest = tf.sort(distances, axis=1)[:, 1 : k + 1]  # column 0 is the distance to itself (0)
        scores = tf.reduce_sum(nearest, axis=1)
        selected = tf.argsort(scores, stable=True)[:m]
        mean = [tf.reduce_mean(tf.gather(t, selected), axis=0) for t in stacked]
        return mean, tf.cast(selected, tf.int32)

    computation: Callable[..., Any] = tff.tensorflow.computation(stacked_type, np.int32, np.int32)(multi_krum)
    return computation


def _fltrust_computation(layout: Layout) -> Callable[..., Any]:
    """FLTrust-style aggregation (Cao et al., NDSS 2021) over stacked updates and the root update g_0.

    Trust ``TS_i = ReLU(cos(g_i, g_0))``; each update is rescaled to the root update's norm,
    ``ĝ_i = g_i · ‖g_0‖ / ‖g_i‖``; the aggregate is ``Σ TS_i ĝ_i / Σ TS_i`` (norms and cosines in
    float64). A zero update has trust 0. When every trust is 0 the aggregate is zero: the global
    model stays.

    Assumptions: the root set is clean and drawn from (close to) the task's distribution, and
    the root update (:func:`root_update`) points roughly where honest updates do; attackers may
    know the root set (it is public from publish) but cannot change it. Norm matching bounds any
    one update's pull by ‖g_0‖; an attacker aligned with g_0 still moves the model, but along g_0.
    """
    import tensorflow as tf

    from fedoracle.learning.runtime import tff_runtime

    tff = tff_runtime()
    stacked_type = tff.StructType([(None, tff.TensorType(np.dtype(d), (None, *s))) for d, s in layout])
    root_type = tff.StructType([(None, tff.TensorType(np.dtype(d), s)) for d, s in layout])

    def fltrust(stacked: Any, root: Any) -> Any:
        stacked, root = list(stacked), list(root)
        flat = _flatten(stacked)
        g0 = tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in root], axis=0)
        norms = tf.norm(flat, axis=1)
        root_norm = tf.norm(g0)
        cosine = tf.math.divide_no_nan(tf.linalg.matvec(flat, g0), norms * root_norm)
        trust = tf.nn.relu(cosine)
        coefficient = tf.math.divide_no_nan(trust * tf.math.divide_no_nan(root_norm, norms), tf.reduce_sum(trust))
        out = []
        for t in stacked:
            c = tf.reshape(coefficient, [-1] + [1] * (len(t.shape) - 1))
            out.append(tf.cast(tf.reduce_sum(c * tf.cast(t, tf.float64), axis=0), t.dtype))
        return out, trust

    computation: Callable[..., Any] = tff.tensorflow.computation(stacked_type, root_type)(fltrust)
    return computation


def _computation(layout: Layout, rule: str) -> Callable[..., Any]:
    key = (layout, rule)
    with _lock:
        if key not in _cache:
            build = _multi_krum_computation if rule == "multi_krum" else _fltrust_computation
            _cache[key] = build(layout)
        return _cache[key]


def robust_aggregate(
    rule: AggregationRule,
    updates: Sequence[Sequence[NDArray[Any]]],
    *,
    weights: Sequence[float] | None = None,
    root_update: Sequence[NDArray[Any]] | None = None,
) -> Aggregation:
    """Combines one round's accepted updates with the task's rule; the aggregate and what the rule chose.

    Args:
        rule: the task's rule.
        updates: one list of ``float32`` tensors per accepted update, all with one layout, in the
            order the oracle aggregates them (chain order).
        weights: per-update weights for ``fedavg`` (declared sample counts), ``None`` for an
            unweighted mean; the other rules ignore them.
        root_update: ``fltrust`` only: the root update g_0 (:func:`root_update`), same layout.

    Returns:
        The :class:`Aggregation` (the aggregate to add to the global model, Multi-Krum's
        selection, FLTrust's trust scores).

    Raises:
        ValueError: on an empty or inconsistent input, or a missing root update for ``fltrust``.
    """
    from fedoracle.learning.aggregation import aggregate

    if not updates:
        raise ValueError("nothing to aggregate")
    layout = _layout(updates[0])
    if any(_layout(u) != layout for u in updates):
        raise ValueError("updates differ in tensor count, shape or dtype")
    n = len(updates)
    if rule.name == "fedavg":
        return Aggregation(aggregate(updates, weights=weights, rule="fedavg"))
    if rule.name == "median":
        return Aggregation(aggregate(updates, rule="median"))
    if rule.name == "trimmed_mean":
        k = rule.trim_count(n)
        if 2 * k + 1 >= n:  # one value (odd n) left per coordinate: the median, exactly
            return Aggregation(aggregate(updates, rule="median"))
        # aggregation.aggregate trims floor(float32(fraction) · n); (k + ½)/n floors to exactly k.
        return Aggregation(aggregate(updates, rule="trimmed_mean", trim_fraction=(k + 0.5) / n))
    from fedoracle.learning.runtime import tff_runtime

    stacked = [np.stack([np.asarray(u[i]) for u in updates]) for i in range(len(layout))]
    tff_runtime()
    if rule.name == "multi_krum":
        k, m = rule.krum_sizes(n)
        if n == 1:
            return Aggregation([np.asarray(t) for t in updates[0]], selected=[0])
        mean, selected = _computation(layout, "multi_krum")(stacked, np.int32(k), np.int32(m))
        return Aggregation([np.asarray(t) for t in mean], selected=[int(i) for i in np.asarray(selected)])
    if root_update is None:
        raise ValueError("fltrust needs the root update (the task's root set trained from the global model)")
    if _layout(root_update) != layout:
        raise ValueError("the root update's layout differs from the updates'")
    out, trust = _computation(layout, "fltrust")(stacked, [np.asarray(t) for t in root_update])
    return Aggregation([np.asarray(t) for t in out], trust=[float(t) for t in np.asarray(trust)])


def aggregate_updates(
    rule: AggregationRule,
    updates: Sequence[Sequence[NDArray[Any]]],
    *,
    weights: Sequence[float] | None = None,
    root_update: Sequence[NDArray[Any]] | None = None,
) -> list[NDArray[Any]]:
    """The aggregate of one round's accepted updates under the task's rule (:func:`robust_aggregate`'s ``update``)."""
    return robust_aggregate(rule, updates, weights=weights, root_update=root_update).update


def next_global(
    rule: AggregationRule,
    global_weights: Sequence[NDArray[Any]],
    updates: Sequence[Sequence[NDArray[Any]]],
    num_samples: Sequence[int],
    *,
    root_update: Sequence[NDArray[Any]] | None = None,
) -> tuple[list[NDArray[Any]], Aggregation | None]:
    """The next global model from the accepted updates under the task's rule (the global itself when none).

    The rule-aware :func:`fedoracle.learning.rounds.aggregate_accepted`: FedAvg weights by the
    declared sample counts (unweighted when any is 0); the result is ``global + aggregate`` in the
    global model's dtypes.

    Returns:
        ``(next global model, the Aggregation)``; the aggregation is ``None`` when nothing was accepted.
    """
    if not updates:
        return [np.asarray(g) for g in global_weights], None
    weights = list(num_samples) if all(n > 0 for n in num_samples) else None
    result = robust_aggregate(rule, [list(u) for u in updates], weights=weights, root_update=root_update)
    return [np.asarray(g + m, dtype=g.dtype) for g, m in zip(global_weights, result.update, strict=True)], result


def root_update(
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    root_x: NDArray[Any],
    root_y: NDArray[Any],
    *,
    seed: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    optimizer: str | None = None,
) -> list[NDArray[Any]]:
    """FLTrust's server update g_0: the round's global model trained on the task's root set, minus the global model.

    No clipping or noise: the root set is the publisher's, public from publish, and anyone
    re-checking a round recomputes g_0 from it. The schedule's defaults are the ``root_*`` fields
    of :data:`fedoracle.defaults.DEFAULTS`.

    Determinism: :func:`fedoracle.learning.training.local_train` visits the root set in an order
    drawn from ``seed`` and ``small_cnn`` has no dropout, so the result is a function of the inputs
    on one machine (the same TF build and CPU kernels, bit for bit); across machines with other
    kernels it may differ in the last bits (then a re-check compares within a tolerance).

    Args:
        spec: the task's model spec.
        global_weights: the round's global model.
        root_x: root images.
        root_y: root labels.
        seed: the visiting order's seed.
        epochs: passes over the root set.
        batch_size: minibatch size.
        learning_rate: step size.
        optimizer: ``"sgd"`` or ``"adam"``.

    Returns:
        ``trained − global``, one tensor per weight in the global model's dtypes.
    """
    from fedoracle.defaults import DEFAULTS
    from fedoracle.learning.training import local_train

    trained = local_train(
        spec,
        global_weights,
        root_x,
        root_y,
        epochs=DEFAULTS.root_epochs if epochs is None else epochs,
        batch_size=DEFAULTS.root_batch_size if batch_size is None else batch_size,
        learning_rate=DEFAULTS.root_learning_rate if learning_rate is None else learning_rate,
        optimizer=DEFAULTS.root_optimizer if optimizer is None else optimizer,
        seed=DEFAULTS.root_seed if seed is None else seed,
    )
    return [np.asarray(t - g, dtype=g.dtype) for t, g in zip(trained, global_weights, strict=True)]


def aggregate_round(
    rule: AggregationRule,
    spec: Any,
    global_weights: Sequence[NDArray[Any]],
    updates: Sequence[Sequence[NDArray[Any]]],
    num_samples: Sequence[int],
    root_set: bytes | None = None,
) -> list[NDArray[Any]]:
    """The round's next global model under the task's rule: what the oracle commits and ``verify`` recomputes.

    Args:
        rule: the task's rule (``TaskConfig``'s, :meth:`AggregationRule.from_task`).
        spec: the task's model spec.
        global_weights: the round's global model.
        updates: the accepted updates, in chain order.
        num_samples: their declared sample counts (FedAvg's weights).
        root_set: ``fltrust`` only: the task's public root set (the blob ``rootSetHash`` names, in
            :func:`~fedoracle.learning.data.encode_group`'s encoding); the root update is trained
            from the round's global model with the defaults' fixed schedule and seed.

    Raises:
        ValueError: an ``fltrust`` task without its root set, or inconsistent updates.
    """
    root = None
    if rule.needs_root and updates:
        if root_set is None:
            raise ValueError("an fltrust task needs its root set to aggregate")
        from fedoracle.learning.data import decode_group

        x, y = decode_group(root_set)
        root = root_update(spec, global_weights, x, y)
    return next_global(rule, global_weights, updates, num_samples, root_update=root)[0]
