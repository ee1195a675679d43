"""A restart over a checkpoint that a crash left with unresolved transaction rows.

Every action the oracle sends (verdict, disclosure, aggregation, finalization) is written ahead
as ``sent`` before the node sees it. A crash can leave such a row behind for a transaction that
was then mined, mined and reverted, or never reached the node (dropped). The next start must
settle every one of them from the chain and come up on the first try. (Before the fix, the
first unresolved row crashed the start-up: ``emit() got multiple values for argument 'action'``.)
"""

from __future__ import annotations

import itertools

import pytest
from eth_account import Account

from fedoracle.chain import dev_account
from oracle.logs import emit
from oracle.store import Checkpoint
from tests.conftest import run
from tests.oracle.harness import ORACLE, deploy

ACTIONS = ["verdict", "disclose", "aggregate", "finalize"]
OUTCOMES = ["mined", "reverted", "dropped"]


async def _transaction(h, outcome: str) -> str:
    """A real transaction of the oracle's key with the given fate; its hash."""
    w3 = h.registry.chain.w3
    me = dev_account(ORACLE)
    if outcome == "dropped":  # signed, never sent: the node has never heard of it
        nonce = await w3.eth.get_transaction_count(me.address) + 10_000
        tx = {
            "to": me.address,
            "value": 1,
            "gas": 21_000,
            "gasPrice": 10**9,
            "nonce": nonce,
            "chainId": await w3.eth.chain_id,
        }
        return "0x" + bytes(Account.sign_transaction(tx, me.key).hash).hex()
    tx = {"from": me.address, "to": h.registry.address, "gas": 100_000}
    if outcome == "mined":
        tx = {"from": me.address, "to": dev_account(ORACLE + 1).address, "value": 1, "gas": 21_000}
    else:
        tx["data"] = "0xdeadbeef"  # no such function: the registry reverts
    tx_hash = await w3.eth.send_transaction(tx)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == (1 if outcome == "mined" else 0)
    return "0x" + bytes(tx_hash).hex()


def test_a_restart_settles_every_kind_of_unresolved_row_and_comes_up(node, tmp_path):
    async def go():
        h = await deploy(node.rpc_url, tmp_path)
        block = await h.registry.chain.w3.eth.block_number
        cp = Checkpoint(tmp_path / "state" / f"oracle-{h.registry.address.lower()}.sqlite")
        want = {}
        for i, (action, outcome) in enumerate(itertools.product(ACTIONS, OUTCOMES)):
            tx_hash = await _transaction(h, outcome)
            cp.sent_action(1, 1 + i % 2, action, f"subject-{i}", tx_hash)
            want[tx_hash.lower()] = (action, outcome)
        cp.close()
        oracle = await h.start(block)  # raises (or times out) if the start-up dies
        try:
            assert h.alive(), h
            rows = {r["tx_hash"]: (r["action"], r["status"]) for r in oracle.checkpoint.action_rows()}
        finally:
            await h.stop()
        return want, rows

    want, rows = run(go())
    assert rows == want  # each row settled to what the chain says, and nothing else written


def test_emit_takes_any_field_name_but_action(caplog):
    import logging

    log = logging.getLogger("fedoracle.test")
    with caplog.at_level(logging.INFO, "fedoracle.test"):
        emit(log, "recovered", logging.INFO, step="verdict", level="x", logger="y")
    assert "recovered" in caplog.text and "step=verdict" in caplog.text
    with pytest.raises(TypeError, match="action"):
        emit(log, "recovered", action="verdict")


def test_a_second_oracle_on_the_same_state_refuses_to_start(node, tmp_path):
    """A second oracle on the same checkpoint stops at once; the first is untouched.

    Two oracles on one checkpoint would race for the nonce and the watermark: the second one stops
    at once with one line naming the holder; the first is untouched, and once it is gone a new one
    starts (a SIGKILLed holder's lock goes with its process).
    """
    import subprocess

    from tests.oracle.kit import oracle_argv

    async def go():
        h = await deploy(node.rpc_url, tmp_path)
        block = await h.registry.chain.w3.eth.block_number
        await h.start(block)
        try:
            argv = oracle_argv(
                node.rpc_url, h.registry.address, f"dev:{ORACLE}", h.blobs.root, h.vault, tmp_path / "state", block
            )
            second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert h.alive(), h
        finally:
            await h.stop()
        await h.start(block)  # the lock went with the first oracle
        await h.stop()
        return second

    second = run(go())
    assert second.returncode == 1, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "in use by the oracle pid" in errors[0], second.stderr[-2000:]
    assert "Traceback" not in second.stderr
