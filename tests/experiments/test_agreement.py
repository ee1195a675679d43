"""The fast path and the full protocol agree on a tiny task.

One task runs through :class:`fedoracle.demo.Demo` (anvil, broker, relay, oracle and fleet
processes); the fast path then replays the same config on the test groups the protocol used.

Tolerance: verdicts must be identical, and accuracies equal within 20 basis points. The two paths
run the same functions on the same inputs, and in practice agree to the basis point; what may
differ is float summation order: the oracle averages accepted updates in submission order (set by
timing), the fast path in device order, so the new global model can differ in the last bits, which
can move a prediction on at most a test example or two (1 example = 1/1,333 ≈ 7.5 bp here).
"""

from __future__ import annotations

from fedoracle.experiments.config import RunConfig
from fedoracle.experiments.protocol import agreement

TOLERANCE_BP = 20


def test_fast_path_and_protocol_agree_per_device(tmp_path):
    cfg = RunConfig(dataset="mnist", devices=5, rounds=2, samples_per_device=300, epochs=1, flip_rate=1.0, emd=1.5,
                    threshold=0.2, threshold_margin=0.05, test_examples=4_000)
    res = agreement(cfg, tmp_path, timeout=300)
    proto = res["protocol"]["rounds"]
    assert [len(r["verdicts"]) for r in proto] == [5, 5]  # every device submitted and got a verdict each round
    assert any(not v["accepted"] for r in proto for v in r["verdicts"])  # the gate did reject someone
    assert res["thresholds_bound"], res["rounds"]
    assert res["same_verdicts"], res["rounds"]
    assert res["max_candidate_diff_bp"] <= TOLERANCE_BP, res["rounds"]
    assert res["max_global_diff_bp"] <= TOLERANCE_BP, res["rounds"]
