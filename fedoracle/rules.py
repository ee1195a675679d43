"""A task's aggregation rule and loss gate as the contract records them (no TensorFlow here).

The rule is committed at publish (``TaskParams.aggregationRule``, ``aggregationParam``,
``aggregationParam2``; the interface's ``@custom:aggregation-rules``), so devices, attackers and
anyone re-checking a round know it. :class:`AggregationRule` is that triple with names and
units; the computations live in :mod:`fedoracle.learning.robust`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedoracle.defaults import AGGREGATIONS, DEFAULTS, aggregation_rule_code, aggregation_rule_name
from fedoracle.units import BP as MAX_BP


@dataclass(frozen=True)
class AggregationRule:
    """How a task combines its accepted updates.

    Attributes:
        name: one of :data:`~fedoracle.defaults.AGGREGATIONS`.
        param: ``trimmed_mean``: β per side in basis points (0 < β < 5000); ``multi_krum``: f,
            the attackers assumed; otherwise 0.
        param2: ``multi_krum``: m, the updates averaged (0: n − f); otherwise 0.
    """

    name: str = "fedavg"
    param: int = 0
    param2: int = 0

    def __post_init__(self) -> None:
        if self.name not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation rule {self.name!r} (one of {', '.join(AGGREGATIONS)})")
        takes_a = self.name in ("trimmed_mean", "multi_krum")
        if not 0 <= self.param < 2**16 or not 0 <= self.param2 < 2**16:
            raise ValueError(f"aggregation parameters must be uint16, got {self.param}, {self.param2}")
        if not takes_a and self.param:
            raise ValueError(f"{self.name} takes no parameter (got {self.param})")
        if self.name != "multi_krum" and self.param2:
            raise ValueError(f"{self.name} takes no second parameter (got {self.param2})")
        if self.name == "trimmed_mean" and not 0 < self.param < MAX_BP // 2:
            raise ValueError(f"trimmed mean needs 0 < β < 5000 bp per side, got {self.param}")

    @classmethod
    def from_chain(cls, code: int, param: int = 0, param2: int = 0) -> AggregationRule:
        """The rule a ``TaskConfig`` records.

        Raises:
            ValueError: for a code or parameters outside ``@custom:aggregation-rules``.
        """
        if not 0 <= code < len(AGGREGATIONS):
            raise ValueError(f"unknown aggregation rule code {code}")
        return cls(aggregation_rule_name(code), param, param2)

    @classmethod
    def of_task(cls, task: Mapping[str, Any]) -> AggregationRule:
        """The rule of a task as :meth:`fedoracle.chain.TaskRegistry.get_task` returns it."""
        return cls.from_chain(task["aggregationRule"], task["aggregationParam"], task["aggregationParam2"])

    @classmethod
    def from_options(
        cls,
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
            return cls(name, round(trim_fraction * MAX_BP))
        if name == "multi_krum":
            return cls(name, krum_f, krum_m)
        return cls(name)

    def to_chain(self) -> tuple[int, int, int]:
        """``(aggregationRule, aggregationParam, aggregationParam2)`` for ``publish``."""
        return aggregation_rule_code(self.name), self.param, self.param2

    @property
    def trim_fraction(self) -> float:
        """β per side as a fraction of 1 (``trimmed_mean``; 0 otherwise)."""
        return self.param / MAX_BP if self.name == "trimmed_mean" else 0.0

    def describe(self) -> str:
        """One line for ``status`` and reports, e.g. ``"trimmed mean, β = 20% per side"``."""
        if self.name == "trimmed_mean":
            return f"trimmed mean, β = {self.param / 100:g}% per side"
        if self.name == "multi_krum":
            m = f"m = {self.param2}" if self.param2 else "m = n − f"
            return f"Multi-Krum, f = {self.param}, {m}"
        return {
            "fedavg": "FedAvg (mean weighted by declared samples)",
            "median": "coordinate-wise median",
            "fltrust": "FLTrust (trust-weighted against the oracle's root update)",
        }[self.name]


def loss_margin_bp(margin: float) -> int:
    """The loss gate's relative margin (a fraction of 1) in basis points for ``TaskParams.lossMarginBp``.

    Raises:
        ValueError: outside [0, 1].
    """
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"loss margin {margin} is not in [0, 1]")
    return round(margin * MAX_BP)
