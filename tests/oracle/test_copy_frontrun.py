"""The copy front-run, played by the attacker on anvil with automine off, against the real oracle.

The victim seals its update and sends ``submit`` at a 1 gwei gas price. The attacker watches the mempool,
reads the victim's pending transaction, and sends the very same ``modelHash`` and ``modelURI``
with its own address as payee at 20 gwei, so that it is mined first. Before sealing, the
oracle took the first submission of a model as the original and gave the victim ``DUPLICATE``:
the attacker took the victim's share. Now the blob opens only for the address that sealed it:
the copy is ``SEAL_INVALID`` and the victim is judged on its merits and paid.
"""

from __future__ import annotations

import asyncio

import pytest

from demo.services import Anvil
from fedoracle.chain import Chain, Phase, Status, TaskRegistry, dev_account
from fedoracle.errors import Reason
from fedoracle.units import BP
from tests.conftest import run
from tests.oracle.harness import deploy, rpc
from tests.oracle.kit import make_blob, publish, seal_key_of, submit, task_events, wait_phase

VICTIM, ATTACKER, HONEST = 10, 11, 12
GWEI = 10**9


@pytest.fixture
def fresh_node():
    """An anvil of this test's own: its automine is switched off and on."""
    with Anvil(accounts=20) as a:
        yield a


async def _send_submit(registry: TaskRegistry, index: int, args: tuple, price_gwei: int) -> str:
    """Signs and sends ``submit(args)`` from dev account ``index`` without waiting for it to be mined."""
    account = dev_account(index)
    me = registry.with_chain(Chain(registry.chain.rpc_url, account))
    w3 = me.chain.w3
    tx = await me.contract.functions.submit(*args).build_transaction(
        {
            "from": account.address,
            "nonce": await w3.eth.get_transaction_count(account.address),
            "gas": 200_000,
            "gasPrice": price_gwei * GWEI,
            "chainId": await w3.eth.chain_id,
        }
    )
    signed = account.sign_transaction(tx)
    sent = await w3.eth.send_raw_transaction(signed.raw_transaction)
    await me.chain.close()
    return "0x" + bytes(sent).hex()


def test_a_front_run_copy_earns_nothing_and_costs_the_victim_nothing(fresh_node, models, mnist, tmp_path):
    async def go():
        from fedoracle.codec import encode
        from fedoracle.seal import SealContext, seal

        h = await deploy(fresh_node.rpc_url, tmp_path)
        t = await publish(h.registry, h.blobs, h.vault, models, mnist, oracle=h.oracle_address, cap=3)
        reg = h.registry
        chain_id = await reg.chain.chain_id()
        key = await seal_key_of(reg, t.task_id, 1)

        def sealed_blob(index: int, which: int) -> str:
            update = [w - g for w, g in zip(models.trained[which], models.initial, strict=True)]
            ctx = SealContext(chain_id, reg.address, t.task_id, 1, dev_account(index).address)
            return h.blobs.put(seal(encode(update, models.spec), key, ctx))

        await rpc(reg, "evm_setAutomine", False)
        victim_hash = sealed_blob(VICTIM, 0)
        victim_tx = await _send_submit(
            reg, VICTIM, (t.task_id, victim_hash, h.blobs.uri(victim_hash), dev_account(VICTIM).address, 100, BP, 0), 1
        )
        # The attacker, watching the mempool: the victim's pending call, decoded, re-sent as its own.
        pending = await reg.chain.w3.eth.get_transaction(victim_tx)
        _, args = reg.contract.decode_function_input(pending["input"])
        copy = (t.task_id, args["modelHash"], args["modelURI"], dev_account(ATTACKER).address, 100, BP, 0)
        attacker_tx = await _send_submit(reg, ATTACKER, copy, 20)
        await rpc(reg, "evm_mine")
        await rpc(reg, "evm_setAutomine", True)
        block = await reg.chain.w3.eth.get_block("latest", full_transactions=True)
        order = ["0x" + bytes(tx["hash"]).hex() for tx in block["transactions"]]

        # An honest third device closes the round (cap 3) with its own, different update.
        third = make_blob("good", h.blobs, models, models.initial, which=1)
        await submit(h.rpc_url, reg.address, HONEST, t.task_id, third, h.blobs)
        await h.start(t.block)
        try:
            await wait_phase(reg, t.task_id, Phase.FINALIZED, 300, alive=h.alive)
            verdicts = {i: await reg.get_verdict(t.task_id, 1, dev_account(i).address) for i in (VICTIM, ATTACKER)}
            events = await task_events(reg, t.task_id, t.block)
            claimable = {i: await reg.claimable(t.task_id, 1, dev_account(i).address) for i in (VICTIM, ATTACKER)}
        finally:
            await h.stop()
        return order, victim_tx, attacker_tx, verdicts, events, claimable

    order, victim_tx, attacker_tx, verdicts, events, claimable = run(asyncio.wait_for(go(), 600))
    assert order.index(attacker_tx) < order.index(victim_tx)  # the front-run worked: the copy landed first
    reasons = {e.args["device"].lower(): Reason(e.args["reason"]) for e in events if e.name == "VerdictPosted"}
    assert reasons[dev_account(ATTACKER).address.lower()] == Reason.SEAL_INVALID
    assert reasons[dev_account(VICTIM).address.lower()] == Reason.OK
    assert verdicts[VICTIM]["status"] == Status.ACCEPTED and verdicts[ATTACKER]["status"] == Status.REJECTED
    assert claimable[VICTIM] > 0 and claimable[ATTACKER] == 0
