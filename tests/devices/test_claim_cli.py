"""``fedoracle devices claim`` against anvil, over a round settled on-chain.

One device (``--key``) or a fleet (``--key-seed``/``--count``/``--first-index``, the keys of
``devices run``): every settled round with a reward is paid to the recorded payee, and each refusal
(nothing to claim, round not settled, unknown task) is one line naming the contract's error.
"""

from __future__ import annotations

import secrets
import uuid

from click.testing import CliRunner
from eth_account import Account

from devices.fleet import device_key, fund, payee_address
from fedoracle.chain import Chain, Submission, TaskRegistry, dev_account
from fedoracle.cli import main
from fedoracle.commitments import TestSetCommitment
from fedoracle.errors import Reason
from fedoracle.units import BP
from tests.conftest import run
from tests.core.test_chain import params

ORACLE = 1
FAUCET = 2


async def settle_round_one(registry: TaskRegistry, rpc_url: str, seed: str, accepted: list[int], rejected: list[int]):
    """Publishes a 2-round task, has fleet devices submit, and settles round 1 as the oracle would."""
    tc = TestSetCommitment.create([secrets.token_bytes(32) for _ in range(4)], 2)
    task_id, _ = await registry.publish(
        params(test_set_root=tc.root, seed_commitment=tc.seed_commitment, num_groups=4, max_rounds=2), 10**18
    )
    devices = {i: Account.from_key(device_key(seed, i)) for i in (*accepted, *rejected)}
    await fund(rpc_url, f"dev:{FAUCET}", [d.address for d in devices.values()], 10**17)
    subs = {}
    for i, account in devices.items():
        device = registry.with_chain(Chain(rpc_url, account))
        receipt = await device.submit(
            task_id, "0x" + secrets.token_hex(32), "file:///m", payee_address(seed, i), 100, max_threshold_bp=BP
        )
        (ev,) = [e for e in device.events_of(receipt) if e.name == "ModelSubmitted"]
        subs[i] = Submission.from_event(ev)
    oracle = registry.with_chain(Chain(rpc_url, dev_account(ORACLE)))
    await oracle.close_submissions(task_id)
    await oracle.disclose_test_data(task_id, tc.seed, tc.disclosure(1))
    for i in accepted:
        await oracle.post_verdict(subs[i], 9_000, Reason.OK, "0x" + "ee" * 32)
    for i in rejected:
        await oracle.post_verdict(subs[i], 1_000, Reason.BELOW_THRESHOLD, "0x" + "ee" * 32)
    await oracle.aggregate(
        task_id, "0x" + "99" * 32, "file:///global", 8_000, seal_secret=b"\x01" * 32, next_seal_key=b"\x02" * 32
    )
    assert (await registry.get_round(task_id, 1))["settled"]
    return task_id


def claim(anvil, registry, *args: str):
    result = CliRunner().invoke(
        main, ["devices", "claim", *args, "--rpc-url", anvil.rpc_url, "--registry", registry.address]
    )
    return result, [line for line in result.output.splitlines() if line]


def test_a_fleet_claims_its_settled_round_and_each_refusal_is_one_line(anvil, registry):
    seed = uuid.uuid4().hex
    task_id = run(settle_round_one(registry, anvil.rpc_url, seed, accepted=[0, 1], rejected=[2]))
    chain = Chain(anvil.rpc_url)
    payees = [payee_address(seed, i) for i in range(3)]
    before = [run(chain.balance(p)) for p in payees]
    share = (run(registry.get_round(task_id, 1)))["rewardPerAccepted"]
    assert share > 0

    result, lines = claim(anvil, registry, str(task_id), "--key-seed", seed, "--count", "3")
    assert result.exit_code == 0, result.output
    assert lines[0] == f"device-0: round 1: paid {share} wei ({share / 1e18:.6f} ETH) to {payees[0]}"
    assert lines[1] == f"device-1: round 1: paid {share} wei ({share / 1e18:.6f} ETH) to {payees[1]}"
    assert lines[2].startswith("device-2: round 1: nothing paid: ") and "FLTaskNothingToClaim(taskId=" in lines[2]
    assert lines[3] == f"task {task_id}: 2 claims, {2 * share} wei in all"
    after = [run(chain.balance(p)) for p in payees]
    assert [a - b for a, b in zip(after, before, strict=True)] == [share, share, 0]  # the payees got the money

    # Again: everything is claimed already. Exit 1, one line per device naming the error, no traceback.
    again, lines = claim(anvil, registry, str(task_id), "--key-seed", seed, "--count", "3")
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert len(lines) == 4 and all("FLTaskNothingToClaim" in line for line in lines[:3]), lines
    assert lines[3] == f"Error: nothing was paid for task {task_id}"

    # --first-index slices the fleet as devices run does: only device 1 is asked about.
    sliced, lines = claim(anvil, registry, str(task_id), "--key-seed", seed, "--count", "1", "--first-index", "1")
    assert sliced.exit_code == 1 and lines[0].startswith("device-1: round 1: nothing paid: FLTaskNothingToClaim")
    assert len(lines) == 2


def test_one_device_by_key_and_the_reverts_it_can_meet(anvil, registry):
    seed = uuid.uuid4().hex
    task_id = run(settle_round_one(registry, anvil.rpc_url, seed, accepted=[0], rejected=[]))
    key = "0x" + device_key(seed, 0).hex()
    address = Account.from_key(key).address

    # Round 2 is open: not settled, and the contract says so.
    early, lines = claim(anvil, registry, str(task_id), "--key", key, "--round", "2")
    assert early.exit_code == 1
    assert lines[0] == (f"device {address}: round 2: nothing paid: FLTaskRoundNotSettled(taskId={task_id}, round=2)"), (
        lines
    )

    paid, lines = claim(anvil, registry, str(task_id), "--key", key, "--sender", f"dev:{FAUCET}")
    assert paid.exit_code == 0, paid.output
    assert lines[0].startswith(f"device {address}: round 1: paid ") and lines[0].endswith(payee_address(seed, 0))
    assert run(registry.claimable(task_id, 1, address)) == 0

    unknown, lines = claim(anvil, registry, "999", "--key", key)
    assert unknown.exit_code == 1 and lines == [lines[0]] and "FLTaskUnknown(taskId=999)" in lines[0], lines
    assert "Traceback" not in unknown.output

    bad, lines = claim(anvil, registry, str(task_id), "--key", "dev:abc")
    assert bad.exit_code == 1 and len(lines) == 1 and "dev:<n>" in lines[0], lines
