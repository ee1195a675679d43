"""Front-running on a real mempool: anvil with automine off, transactions ordered by gas price.

The attack (issue 16, item 3): a device reads the threshold in force (5,000 bp), trains and
submits; the publisher (or the oracle), watching the mempool, sends ``announceThreshold(10000)``
at a higher gas price so that it is mined first. Before ``maxThresholdBp``, the submission was
bound to 10,000 bp: even a 99% candidate was then judged below threshold and the round's pool went
back to the publisher. Now the device's submit names the highest threshold it accepts, so the
front-run makes it revert: the device loses one failed call's gas, is bound to nothing, and can
decide afresh (here it resubmits knowing the new bar).
"""

import pytest

from fltask_harness import OPEN, Params, TaskDriver, h, make_testset, model_uri, provider, reverts_with

SEEN_BP = 5_000


@pytest.fixture(scope="module")
def anvil(networks):
    with provider(networks, "foundry") as p:
        yield p


@pytest.fixture
def setup(anvil, chain, project, accounts):
    snapshot = chain.snapshot()
    registry = accounts[0].deploy(project.FLTaskRegistry)
    publisher, oracle = accounts[1], accounts[2]
    ts = make_testset(num_groups=2, groups_per_round=2, seed=5)
    p = Params.for_testset(oracle, ts, maxRounds=1, thresholdBp=SEEN_BP)
    registry.publish(p.as_tuple(), value=10**18, sender=publisher)
    t = TaskDriver(registry, chain, publisher, oracle, ts, registry.taskCount())
    yield anvil.web3, registry, t, publisher, accounts[4]
    anvil.web3.provider.make_request("evm_setAutomine", [True])
    chain.restore(snapshot)


def _race(w3, registry, victim_tx: dict, attacker_tx: dict) -> tuple[dict, dict]:
    """Both transactions in the mempool, the attacker's at 20x the gas price, then one block."""
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        v = w3.eth.send_transaction(victim_tx)
        a = w3.eth.send_transaction(attacker_tx)
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    rv, ra = w3.eth.get_transaction_receipt(v), w3.eth.get_transaction_receipt(a)
    assert rv["blockNumber"] == ra["blockNumber"] and ra["transactionIndex"] < rv["transactionIndex"]  # front-run
    return rv, ra


def test_a_threshold_raise_cannot_be_slipped_in_front_of_a_submission(setup):
    w3, registry, t, publisher, device = setup
    c = w3.eth.contract(
        address=registry.address, abi=[a.model_dump(mode="json", by_alias=True) for a in registry.contract_type.abi]
    )
    assert registry.getState(t.task_id).thresholdBp == SEEN_BP  # what the device read before training
    mh = h("a 99% model")
    submit = c.functions.submit(t.task_id, mh, model_uri(mh), device.address, 600, SEEN_BP, 0).build_transaction(
        {"from": device.address, "gas": 300_000, "gasPrice": 10**9}
    )
    raise_ = c.functions.announceThreshold(t.task_id, 10_000).build_transaction(
        {"from": publisher.address, "gas": 300_000, "gasPrice": 20 * 10**9}
    )
    rv, ra = _race(w3, registry, submit, raise_)
    assert ra["status"] == 1 and registry.getState(t.task_id).thresholdBp == 10_000  # the raise landed first
    assert rv["status"] == 0  # and the submission reverted: FLTaskThresholdAboveLimit(10000, 5000)
    with reverts_with(registry.FLTaskThresholdAboveLimit, currentBp=10_000, maxBp=SEEN_BP):  # why it reverted
        registry.submit(t.task_id, mh, model_uri(mh), device, 600, SEEN_BP, 0, sender=device)
    assert int.from_bytes(registry.getCommitment(t.task_id, 1, device), "big") == 0  # bound to nothing
    assert registry.getState(t.task_id).submissions == 0 and registry.getState(t.task_id).phase == OPEN
    # The device decides afresh: it may still submit, now knowingly, against the new bar.
    t.submit(device, model_hash=mh, max_threshold_bp=10_000)
    assert registry.getState(t.task_id).submissions == 1
