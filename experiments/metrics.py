"""What a run is scored by: the gate's detection quality, candidate accuracy, summaries over runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fedoracle.units import from_bp

KINDS = ("honest", "malicious", "unreliable")


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def detection(verdicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Precision and recall of the accuracy gate as a detector of bad devices, over all verdicts.

    A rejection is a positive. For ``malicious``, ``unreliable`` and ``bad`` (either):
    precision = rejected of that class / all rejected, recall = rejected of that class / verdicts of
    that class. ``honest_rejected`` is the share of honest (DP) submissions wrongly rejected, the
    paper's worry about noise.

    Args:
        verdicts: dicts with ``kind`` and ``accepted``.
    """
    total = {k: 0 for k in KINDS}
    rejected = {k: 0 for k in KINDS}
    for v in verdicts:
        total[v["kind"]] += 1
        rejected[v["kind"]] += not v["accepted"]
    all_rejected = sum(rejected.values())
    out: dict[str, Any] = {"verdicts": dict(total), "rejected": dict(rejected)}
    for name, kinds in (
        ("malicious", ("malicious",)),
        ("unreliable", ("unreliable",)),
        ("bad", ("malicious", "unreliable")),
    ):
        hit = sum(rejected[k] for k in kinds)
        out[name] = {"precision": _ratio(hit, all_rejected), "recall": _ratio(hit, sum(total[k] for k in kinds))}
    out["honest_rejected"] = _ratio(rejected["honest"], total["honest"])
    return out


def candidate_stats(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest, minimum and average candidate (local model) accuracy, overall and per class."""

    def stats(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"max": max(values), "min": min(values), "mean": sum(values) / len(values)}

    acc = [(v["kind"], from_bp(v["accuracy_bp"])) for v in verdicts]
    return {"all": stats([a for _, a in acc]), **{k: stats([a for kk, a in acc if kk == k]) for k in KINDS}}


def summarize(values: Sequence[float | None]) -> dict[str, float | None]:
    """Highest, minimum and average over runs (``None`` entries skipped), and the run count."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"max": None, "min": None, "mean": None, "n": 0}
    return {"max": max(xs), "min": min(xs), "mean": sum(xs) / len(xs), "n": len(xs)}
