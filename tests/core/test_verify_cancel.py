"""``verify`` on a round a stalled oracle left: settled by the contract's stall rule, not by the oracle.

Such a round has no disclosed seal secret and no global model, so there is nothing the oracle
posted to re-check; the re-check says so and agrees. A round the *oracle* settled without a secret
is its lie, and stays one.
"""

from __future__ import annotations

import pytest

from fedoracle.blobstore import open_store
from fedoracle.verify import RoundFacts, TaskFacts, check_round


@pytest.mark.parametrize("by_cancel", [True, False])
def test_a_round_settled_by_cancel_is_not_an_oracle_lie(tmp_path, by_cancel):
    rf = RoundFacts(1, settled=True, seal_key="0x" + "11" * 32, by_cancel=by_cancel)
    if not by_cancel:
        rf.updated = {"modelHash": b"\x01" * 32}  # the oracle aggregated, yet disclosed no secret
    facts = TaskFacts(1, 31337, "0x" + "00" * 20, "0x" + "22" * 32, 2, {1: rf})
    check = check_round(facts, rf, open_store(str(tmp_path)))
    assert check.cancelled is by_cancel
    assert check.agrees is by_cancel
    if by_cancel:
        assert "stall rule" in check.summary() and not check.disagreements
    else:
        assert any("no seal secret" in d.what for d in check.disagreements)
