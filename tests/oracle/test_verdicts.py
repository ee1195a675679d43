"""N submissions, N verdicts: good and bad model updates scored by an in-process oracle.

A round of good and bad model updates against anvil and a real blob store, scored with TFF; bad
inputs each get their reason on-chain and the daemon goes on serving (the next good submission,
a task with a broken spec, a task whose test set reaches the vault late) while it ignores tasks
that are not its own.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, Phase, Status, dev_account
from fedoracle.errors import Reason
from fedoracle.hashing import normalize_hash
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import Scorer
from tests.conftest import run
from tests.oracle.kit import make_blob, publish, submit, task_events, verdict_counts, wait_phase

ORACLE = 1
# One device per case, in submission order: bad inputs between good ones; the last one is good,
# so the daemon must still be serving after every kind of bad input.
CASES = [
    ("good", Reason.OK),
    ("noise", Reason.BELOW_THRESHOLD),
    ("hash_mismatch", Reason.HASH_MISMATCH),
    ("nan", Reason.NON_FINITE),
    ("wrong_shape", Reason.WRONG_SPEC),
    ("wrong_dtype", Reason.WRONG_SPEC),
    ("wrong_spec", Reason.WRONG_SPEC),
    ("oversized", Reason.TOO_LARGE),
    ("missing", Reason.MISSING_BLOB),
    ("garbage", Reason.UNDECODABLE),
    ("copy", Reason.DUPLICATE),  # device 0's model bytes again: a free rider gets nothing
    ("nudged", Reason.NEAR_DUPLICATE),  # device 0's update with one weight moved: a Sybil's copy
    ("copied_hash", Reason.SEAL_INVALID),  # device 0's sealed hash and blob, submitted by another
    ("unsealed", Reason.SEAL_INVALID),  # a good update that skips sealing
    ("good", Reason.OK),
    ("good", Reason.OK),
]
FIRST_DEVICE = 10


def device(i: int) -> str:
    return dev_account(FIRST_DEVICE + i).address.lower()


@pytest.fixture(scope="module")
def served(node, reg, models, mnist, tmp_path_factory):
    """Runs the oracle through four tasks and returns what the chain and the oracle show afterwards.

    Task A (the CASES), B (non-canonical spec), C (test set handed over late), D (another
    oracle's task).
    """
    tmp = tmp_path_factory.mktemp("verdicts")
    blobs, vault = LocalBlobStore(tmp / "blobs"), tmp / "vault"
    oracle_addr = dev_account(ORACLE).address

    async def go():
        a = await publish(reg, blobs, vault, models, mnist, oracle=oracle_addr, cap=len(CASES))
        spec_json = models.spec.canonical_json().decode()
        b = await publish(
            reg,
            blobs,
            vault,
            models,
            mnist,
            oracle=oracle_addr,
            cap=2,
            seed=1,
            spec_bytes=spec_json.replace(",", ", ").encode(),
        )  # same spec, not canonical
        c = await publish(reg, blobs, vault, models, mnist, oracle=oracle_addr, cap=1, seed=2)
        away = tmp / "handover" / c.hidden.folder.name
        shutil.move(c.hidden.folder, away)  # the publisher has not handed C's test set over yet
        d = await publish(reg, blobs, vault, models, mnist, oracle=dev_account(2).address, cap=1, seed=3)
        oracle = Oracle(
            Chain(node.rpc_url, dev_account(ORACLE)),
            reg.address,
            blobs,
            InProcessPool(Scorer(blobs, str(vault))),
            OracleConfig(
                vault=vault, state_dir=tmp / "state", poll_interval=0.1, from_block=a.block, threshold_margin=None
            ),
        )
        daemon = asyncio.create_task(oracle.run())
        try:
            first_sealed = ""
            for i, (kind, _) in enumerate(CASES):
                sealed = kind not in ("copied_hash", "unsealed")
                if kind == "copy" or i == 0:  # device 0's model, and then exactly the same bytes again
                    digest = make_blob("good", blobs, models, models.initial, which=0, variant=0)
                elif kind in ("nudged", "unsealed"):
                    digest = make_blob(kind, blobs, models, models.initial, which=0, variant=0)
                elif kind == "copied_hash":  # the front-runner's copy: exactly what device 0 put on-chain
                    digest = first_sealed
                else:
                    digest = make_blob(kind, blobs, models, models.initial, which=i % 2)
                receipt = await submit(
                    node.rpc_url, reg.address, FIRST_DEVICE + i, a.task_id, digest, blobs, sealed=sealed
                )
                if i == 0:
                    (ev,) = [e for e in reg.events_of(receipt) if e.name == "ModelSubmitted"]
                    first_sealed = normalize_hash(ev.args["modelHash"])
            good = make_blob("good", blobs, models, models.initial)
            for i in range(2):  # two different models, both refused for the task's broken spec
                other = make_blob("good", blobs, models, models.initial, which=i)
                await submit(node.rpc_url, reg.address, FIRST_DEVICE + i, b.task_id, other, blobs)
            await submit(node.rpc_url, reg.address, FIRST_DEVICE, c.task_id, good, blobs)
            # D names another oracle, which never runs: nobody keys its round, the blob goes unsealed
            await submit(node.rpc_url, reg.address, FIRST_DEVICE, d.task_id, good, blobs, sealed=False)

            def alive() -> bool:
                return not daemon.done()

            for t in (a, b):
                await wait_phase(reg, t.task_id, Phase.FINALIZED, 300, alive=alive)
            c_waiting = await reg.get_state(c.task_id)
            c_verdict_before = await reg.get_verdict(c.task_id, 1, device(0))
            shutil.move(away, c.hidden.folder)  # handed over: the running daemon picks it up
            await wait_phase(reg, c.task_id, Phase.FINALIZED, 300, alive=alive)
            return {
                "tasks": (a, b, c, d),
                "events": {t.task_id: await task_events(reg, t.task_id, a.block) for t in (a, b, c, d)},
                "verdicts": [await reg.get_verdict(a.task_id, 1, device(i)) for i in range(len(CASES))],
                "round_a": await reg.get_round(a.task_id, 1),
                "c_waiting": c_waiting,
                "c_verdict_before": c_verdict_before,
                "d_state": await reg.get_state(d.task_id),
                "actions": oracle.checkpoint.action_rows(),
                "alive": not daemon.done(),
                "state_dir": tmp / "state",
            }
        finally:
            oracle.stopped.set()
            await asyncio.wait_for(daemon, 60)
            await oracle.close()

    return run(asyncio.wait_for(go(), 600))


def test_n_submissions_get_exactly_n_verdicts(served):
    a = served["tasks"][0]
    events = served["events"][a.task_id]
    submitted = [e for e in events if e.name == "ModelSubmitted"]
    assert len(submitted) == len(CASES)
    counts = verdict_counts(events)
    assert counts == {(1, device(i)): 1 for i in range(len(CASES))}
    verdict_txs = [x for x in served["actions"] if x["task_id"] == a.task_id and x["action"] == "verdict"]
    assert len(verdict_txs) == len(CASES) and {x["status"] for x in verdict_txs} == {"mined"}
    assert served["alive"]


def test_accept_and_reject_are_right(served):
    accepted = [v["status"] == Status.ACCEPTED for v in served["verdicts"]]
    assert accepted == [want == Reason.OK for _, want in CASES]
    pairs = zip(served["verdicts"], CASES, strict=True)
    assert all(v["accuracyBp"] >= 5000 for v, (_, want) in pairs if want == Reason.OK)
    assert served["round_a"]["accepted"] == 3 and served["round_a"]["settled"]
    assert served["round_a"]["globalAccuracyBp"] >= 5000


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{i}-{k}" for i, (k, _) in enumerate(CASES)])
def test_each_input_gets_its_reason_on_chain(served, index):
    a = served["tasks"][0]
    (posted,) = [
        e
        for e in served["events"][a.task_id]
        if e.name == "VerdictPosted" and e.args["device"].lower() == device(index)
    ]
    want = CASES[index][1]
    assert Reason(posted.args["reason"]) == want
    assert posted.args["accepted"] == (want == Reason.OK)
    if want not in (Reason.OK, Reason.BELOW_THRESHOLD):
        assert posted.args["accuracyBp"] == 0


def test_a_task_with_a_non_canonical_spec_is_rejected_with_wrong_spec_and_still_ends(served):
    b = served["tasks"][1]
    events = served["events"][b.task_id]
    reasons = [Reason(e.args["reason"]) for e in events if e.name == "VerdictPosted"]
    assert reasons == [Reason.WRONG_SPEC, Reason.WRONG_SPEC]
    (update,) = [e for e in events if e.name == "GlobalModelUpdated"]
    assert update.args["acceptedCount"] == 0
    assert [e.name for e in events][-1] == "TaskFinalized"


def test_a_task_whose_test_set_is_not_in_the_vault_waits_then_is_served(served):
    c = served["tasks"][2]
    # Full (its cap reached) but still open: the oracle closes a full round only once it serves the task.
    assert served["c_waiting"]["phase"] == Phase.OPEN and served["c_waiting"]["submissions"] == 1
    assert served["c_verdict_before"]["status"] == Status.NONE
    assert verdict_counts(served["events"][c.task_id]) == {(1, device(0)): 1}


def test_another_oracles_task_is_left_alone(served):
    d = served["tasks"][3]
    # Full, and left open: not even the close is this oracle's to send (anyone may close a full round).
    assert served["d_state"]["phase"] == Phase.OPEN and served["d_state"]["verdicts"] == 0
    assert not [e for e in served["events"][d.task_id] if e.name in ("VerdictPosted", "TestDataDisclosed")]
    assert not [x for x in served["actions"] if x["task_id"] == d.task_id]


def test_status_shows_phase_verdicts_and_balances(served, node, reg):
    import json

    from click.testing import CliRunner

    from fedoracle.cli import main

    a = served["tasks"][0]
    args = ["status", str(a.task_id), "--rpc-url", node.rpc_url, "--registry", reg.address]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["phase"] == "finalized"
    assert report["summary"]["submissions"] == len(CASES) and report["summary"]["pending"] == 0
    assert report["summary"]["accepted"] == 3 and report["summary"]["by_reason"]["WRONG_SPEC"] == 3
    accepted = [s for s in report["submissions"] if s["verdict"]["accepted"]]
    assert all(s["claimable_wei"] > 0 for s in accepted)
    assert report["registry_balance_wei"] > 0 and report["oracle_balance_wei"] > 0
    table = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "finalized" in table.output and "NON_FINITE" in table.output
    assert f"accepted 3, rejected {len(CASES) - 3}, awaiting a verdict 0" in table.output
    # the budget as the task declares it on-chain, with its mode, unit and rounds
    declared = "privacy mode record; budget declared on-chain: ε = 8.00 at δ = 1e-05, per device, one record"
    assert declared in table.output
    assert report["privacy"]["mode"] == "record"
    assert accepted[0]["device"] in table.output  # whole addresses, not truncated
    assert report["deadline_of"] is None and report["privacy"]["rounds"] == 1  # a finalized task has no deadline
    # A task that does not exist: one line and exit 1 (not a table of zeros).
    missing = CliRunner().invoke(main, ["status", "999", "--rpc-url", node.rpc_url, "--registry", reg.address])
    assert missing.exit_code == 1 and "no task 999 on registry" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1
    late = CliRunner().invoke(main, [*args, "--json", "--from-block", str(10**9)])  # past the head: no events
    assert late.exit_code == 0 and json.loads(late.output)["summary"]["submissions"] == 0


def test_oracle_log_shows_scores_and_transactions(served, reg):
    import json

    from click.testing import CliRunner

    from fedoracle.cli import main

    a = served["tasks"][0]
    state_dir = served["state_dir"]
    args = ["oracle", "log", "--state-dir", str(state_dir), "--registry", reg.address, "--task", str(a.task_id)]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # The round is full at its cap: the oracle closes it at once (the last submitter no longer does).
    assert [x["action"] for x in report["actions"]] == ["close", "disclose"] + ["verdict"] * len(CASES) + [
        "aggregate",
        "finalize",
    ]
    assert report["by_status"] == {"mined": len(CASES) + 4}
    # A score's reason is the evaluation's; "below threshold" is the contract's verdict on an OK score,
    # and a copy is evaluated like any other submission (the copy rule then makes its verdict DUPLICATE
    # or NEAR_DUPLICATE, once every submission of the round is scored).
    copies = (Reason.BELOW_THRESHOLD, Reason.DUPLICATE, Reason.NEAR_DUPLICATE)
    want = sorted(("OK" if r in copies else r.name) for _, r in CASES)
    assert sorted(s["reason"] for s in report["scores"]) == want
    table = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "verdict" in table.output and "mined" in table.output
    missing = CliRunner().invoke(
        main, ["oracle", "log", "--state-dir", str(state_dir / "nope"), "--registry", reg.address]
    )
    assert missing.exit_code != 0 and "no checkpoint" in missing.output
