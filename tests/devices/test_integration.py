"""Relay + oracle + a fleet of 10 devices (2 malicious, 2 unreliable) complete a 2-round task.

Real anvil, real mosquitto over TCP, real TF training with local DP and TFF scoring, with the
demo's settings (record-level DP-SGD at ε = 8 for the whole task, per-example clip 1, 2 epochs of
Poisson batches of 64, lr 0.1, flip rate 1.0, threshold 0.5, oracle threshold margin 0.05) on the
demo's 2,000-example shards (a 400-example shard takes too few DP-SGD steps to reach 0.5).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fedoracle.chain import Phase, Status
from fedoracle.defaults import DEFAULTS
from publisher.publish import TaskPlan
from tests.conftest import run
from tests.devices.conftest import fleet_config, task_harness, wait_for

REWARD = 10**18 + 7  # not a multiple of maxRounds: the last round's pool takes the remainder


def test_fleet_of_ten_completes_two_rounds_and_the_money_adds_up(anvil, broker, fresh_registry, tmp_path, mnist):
    registry = fresh_registry
    plan = TaskPlan(
        dataset="mnist",
        rounds=2,
        threshold=0.5,
        clip=DEFAULTS.clip,
        epsilon=8.0,
        delta=1e-5,
        groups_per_round=2,
        test_examples=1_000,
        max_submissions_per_round=10,
        reward_eth=REWARD / 10**18,
        round_duration=600,
    )

    async def go():
        async with task_harness(
            anvil,
            broker.url,
            registry,
            tmp_path,
            mnist,
            plan,
            fleet_config(
                10,
                f"it-{tmp_path.name}",
                malicious=0.2,
                unreliable=0.2,
                samples_per_device=DEFAULTS.max_shard,
                epochs=DEFAULTS.epochs,
            ),
        ) as h:
            reward = (await registry.get_task(h.task_id))["reward"]
            await h.wait_phase(Phase.FINALIZED, timeout=600)
            rounds = [await registry.get_round(h.task_id, r) for r in (1, 2)]
            accepted = sum(r["accepted"] for r in rounds)
            # Devices claim by themselves once they hear the task is finalized.
            await wait_for(lambda: sum(len(d.stats.claims) for d in h.devices) == accepted, timeout=120)
            await wait_for(lambda: _all_claimed(h, registry), timeout=60)
            verdicts = {
                (d.name, r): await registry.get_verdict(h.task_id, r, d.address) for d in h.devices for r in (1, 2)
            }
            submitted = Counter((e.args["device"].lower(), e.args["round"]) for e in await h.events("ModelSubmitted"))
            payees = {d.name: await registry.chain.balance(d.payee) for d in h.devices}
            raised = [e.args["thresholdBp"] for e in await h.events("ThresholdAnnounced")]
            balance_before_refund = await registry.chain.balance(registry.address)
            refundable = await registry.refundable(h.task_id)
            await registry.refund(h.task_id)
            balance_after = await registry.chain.balance(registry.address)
            return (
                h,
                reward,
                rounds,
                verdicts,
                submitted,
                payees,
                balance_before_refund,
                refundable,
                balance_after,
                raised,
            )

    h, reward, rounds, verdicts, submitted, payees, before, refundable, after, raised = run(asyncio.wait_for(go(), 900))
    kinds = Counter(d.kind for d in h.devices)
    assert kinds == {"honest": 6, "malicious": 2, "unreliable": 2}

    # Every device submitted exactly once in each round.
    assert set(submitted.values()) == {1} and len(submitted) == 20

    malicious = [d for d in h.devices if d.kind == "malicious"]
    honest = [d for d in h.devices if d.kind == "honest"]
    # Label-flipped updates never pass; honest ones do (round 1 against 0.5, round 2 against the
    # raised threshold global_1 - 0.05).
    for d in malicious:
        for r in (1, 2):
            assert verdicts[(d.name, r)]["status"] == Status.REJECTED, (d.name, r, verdicts[(d.name, r)])
    for d in honest:
        assert verdicts[(d.name, 1)]["status"] == Status.CLAIMED, (d.name, verdicts[(d.name, 1)])
    assert sum(verdicts[(d.name, 2)]["status"] == Status.CLAIMED for d in honest) >= 5
    # The oracle raised round 2's threshold to global_1 - 5 points (the dynamic threshold).
    assert raised == [rounds[0]["globalAccuracyBp"] - 500]

    # The split rule: per-round pool = reward / maxRounds (the last round takes the remainder),
    # shared equally by that round's accepted submissions.
    pools = [reward // 2, reward // 2 + reward % 2]
    for rec, pool in zip(rounds, pools, strict=True):
        assert rec["settled"] and rec["accepted"] >= 6
        assert rec["rewardPerAccepted"] == pool // rec["accepted"]
    allocated = sum(rec["rewardPerAccepted"] * rec["accepted"] for rec in rounds)
    # Each device's payee holds exactly its accepted rounds' shares (payees start empty).
    for d in h.devices:
        expected = sum(
            rounds[r - 1]["rewardPerAccepted"] for r in (1, 2) if verdicts[(d.name, r)]["status"] == Status.CLAIMED
        )
        assert payees[d.name] == expected == d.stats.claimed_wei, d.name
    # After every claim the contract holds exactly the unallocated escrow; after the refund, nothing.
    assert before == refundable == reward - allocated
    assert after == 0


def _all_claimed(h, registry):
    async def check():
        for d in h.devices:
            for r in (1, 2):
                if await registry.claimable(h.task_id, r, d.address):
                    return False
        return True

    return check()
