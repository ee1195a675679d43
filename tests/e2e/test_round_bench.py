"""``bench/round_bench.py --quick`` on this system's side: one whole protocol round at P = 10, timed from the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_round_bench_times_every_phase_of_a_protocol_round(tmp_path: Path) -> None:
    """The quick run writes round.json and round.md with one round of 10 submissions, 10 verdicts and its phases.

    The phases (training + submission, close to last verdict, aggregation) are consecutive spans of
    the round: each is positive and together they make up the round's wall time.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "bench/round_bench.py", "--quick", "--only", "fedoracle", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "round.json").read_text())
    (row,) = doc["results"]
    assert row["p"] == 10 and set(row) >= {"fedoracle", "summary"} and "flower" not in row
    (rnd,) = row["fedoracle"]["rounds"]
    assert rnd["submissions"] == rnd["verdicts"] == rnd["accepted"] == 10
    phases = [rnd["training_submission_s"], rnd["close_to_last_verdict_s"], rnd["aggregation_s"]]
    assert all(p > 0 for p in phases)
    assert abs(sum(phases) - rnd["wall_s"]) < 0.5
    assert row["summary"]["fedoracle_warm_s"] == pytest.approx(rnd["wall_s"])
    md = (tmp_path / "round.md").read_text()
    assert "| 10 | fedoracle |" in md and len(doc["load_average_end"]) == 3
