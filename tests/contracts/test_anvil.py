"""The same contract on anvil (ape-foundry), whatever provider the session uses.

A full lifecycle with events and payouts, the gas bound, and what only a real node can test
(huge balances).

Run the *whole* suite on anvil with `ape test tests/contracts --network ethereum:local:foundry`.
"""

import pytest

from fltask_harness import (
    AWAITING_FINALIZE,
    FINALIZED,
    OPEN,
    S_CLAIMED,
    Params,
    TaskDriver,
    assert_event,
    h,
    make_testset,
    provider,
    reverts_with,
)
from rawchain import Abi, Reverted, RpcBackend
from test_gas import KB, MB, SUBMIT_GAS_LIMIT, model_blob


@pytest.fixture(scope="module")
def anvil(networks):
    """The foundry provider of ape (an anvil process on a free port) for this module's tests."""
    with provider(networks, "foundry") as p:
        yield p


@pytest.fixture
def on_anvil(anvil, chain, project, accounts):
    snapshot = chain.snapshot()
    registry = accounts[0].deploy(project.FLTaskRegistry)
    yield registry
    chain.restore(snapshot)


def test_full_lifecycle_on_anvil(anvil, on_anvil, chain, accounts):
    registry = on_anvil
    assert "foundry" in anvil.name.lower() or "anvil" in anvil.name.lower()
    publisher, oracle, stranger = accounts[1], accounts[2], accounts[3]
    devices, payees = accounts[4:8], accounts[10:14]
    ts = make_testset(num_groups=4, groups_per_round=2, seed=99)
    reward = 2 * 10**18
    p = Params.for_testset(oracle, ts, maxRounds=2)
    receipt = registry.publish(p.as_tuple(), value=reward, sender=publisher)
    assert [log.taskId for log in receipt.decode_logs(registry.TaskPublished)] == [1]
    t = TaskDriver(registry, chain, publisher, oracle, ts, 1)

    # Round 1: two accepted, one rejected.
    for d, pay in zip(devices[:3], payees[:3], strict=True):
        t.submit(d, payee=pay)
    t.close()
    receipt = t.disclose()
    assert [log.groupIndex for log in receipt.decode_logs(registry.TestDataDisclosed)] == ts.round_indices(1)
    t.verdict(devices[0], 9_000)
    t.verdict(devices[1], 7_000)
    t.verdict(devices[2], 2_000)
    receipt = t.aggregate(7_200)
    share1 = reward // 2 // 2
    assert [log.rewardPerAccepted for log in receipt.decode_logs(registry.GlobalModelUpdated)] == [share1]
    assert registry.getState(1).phase == OPEN and registry.getState(1).round == 2

    # Round 2: one accepted; a late submission is refused after close.
    t.submit(devices[3], payee=payees[3])
    t.close()
    with reverts_with(registry.FLTaskWrongPhase, taskId=1):
        t.submit(devices[0])
    t.disclose()
    t.verdict(devices[3], 8_000)
    t.aggregate(7_900)
    assert registry.getState(1).phase == AWAITING_FINALIZE
    receipt = t.finalize(7_900)
    assert_event(
        receipt,
        registry.TaskFinalized,
        dict(taskId=1, rounds=2, finalAccuracyBp=7_900, reportHash=h("report"), reportURI="blob://report"),
    )
    assert registry.getState(1).phase == FINALIZED

    # Claims (pull, triggered by a stranger) and the refund.
    expected = {(1, 0): share1, (1, 1): share1, (2, 3): reward - reward // 2}
    for (r, i), amount in expected.items():
        before = payees[i].balance
        receipt = registry.claim(1, r, devices[i], sender=stranger)
        assert_event(
            receipt,
            registry.RewardClaimed,
            dict(taskId=1, round=r, device=devices[i].address, payee=payees[i].address, amount=amount),
        )
        assert payees[i].balance == before + amount
        assert registry.getVerdict(1, r, devices[i]).status == S_CLAIMED
    with reverts_with(registry.FLTaskNothingToRefund, taskId=1):
        registry.refund(1, sender=stranger)
    assert registry.balance == 0


def test_submit_gas_on_anvil(anvil, on_anvil, chain, accounts):
    registry = on_anvil
    ts = make_testset()
    registry.publish(Params.for_testset(accounts[2], ts).as_tuple(), value=10**18, sender=accounts[1])
    t = TaskDriver(registry, chain, accounts[1], accounts[2], ts, 1)
    _, small = model_blob(10 * KB)
    _, large = model_blob(10 * MB)
    g_small = t.submit(accounts[4], model_hash=small, payee=accounts[10], num_samples=600).gas_used
    g_large = t.submit(accounts[5], model_hash=large, payee=accounts[10], num_samples=600).gas_used
    assert g_small == g_large <= SUBMIT_GAS_LIMIT


def test_reward_above_uint128_is_refused(anvil, on_anvil, accounts):
    """Shares are stored as uint128: publish refuses a larger escrow.

    Needs a balance only anvil can grant. Raw JSON-RPC, since ape's fee estimation trips over
    such values.
    """
    registry = on_anvil
    rich = accounts[18].address
    anvil.set_balance(rich, 2**200)
    abi = Abi([a.model_dump(mode="json", by_alias=True) for a in registry.contract_type.abi])
    rpc = RpcBackend(anvil.web3.provider)
    data = abi.encode("publish", Params.for_testset(accounts[2], make_testset()).as_tuple())
    with pytest.raises(Reverted) as info:
        rpc.call(rich, registry.address, data, value=2**128)
    assert abi.decode_error(info.value.data) == ("FLTaskInvalidParameter", {"name": "reward"})
    assert rpc.call(rich, registry.address, data, value=2**128 - 1)  # the largest escrow passes
    # (anvil's transaction pool itself refuses values >= 2**128, so the send uses 2**127)
    assert rpc.send(rich, registry.address, data, value=2**127)["status"] == 1
    assert registry.getTask(1).reward == 2**127
