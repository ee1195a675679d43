"""A task's aggregation rule as the publisher and the CLI spell it (no TensorFlow here).

The rule is committed at publish (``TaskParams.aggregationRule``, ``aggregationParam``,
``aggregationParam2``; the interface's ``@custom:aggregation-rules``), so devices, attackers and
anyone re-checking a round know it. The value type and the computations are
:mod:`fedoracle.learning.robust`'s (:class:`~fedoracle.learning.robust.AggregationRule`, cheap to
import); this module turns the settings' units into it.
"""

from __future__ import annotations

from fedoracle.defaults import DEFAULTS
from fedoracle.learning.robust import AggregationRule
from fedoracle.units import BP

__all__ = ["AggregationRule", "rule_from_options"]


def rule_from_options(
    name: str = DEFAULTS.aggregation,
    *,
    trim_fraction: float = DEFAULTS.trim_fraction,
    krum_f: int = DEFAULTS.krum_f,
    krum_m: int = DEFAULTS.krum_m,
) -> AggregationRule:
    """The rule from the CLI's and the settings' units (β as a fraction of 1).

    Raises:
        ValueError: for an unknown rule or an out-of-range parameter.
    """
    if name == "trimmed_mean":
        return AggregationRule(name, round(trim_fraction * BP))
    if name == "multi_krum":
        return AggregationRule(name, krum_f, krum_m)
    return AggregationRule(name)
