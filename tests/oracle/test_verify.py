"""``fedoracle verify``: anyone re-checks a settled round from the chain alone, and catches an oracle that lies.

One real oracle on anvil serves four tasks of three sealed submissions a round (the honest one
two rounds, the others one) and is crooked in three of them, as an oracle that wants to keep a
reward or steer the model would be:

* ``honest``: it does everything right; the re-check must agree on every verdict and the model;
* ``verdict``: it posts a good device's update as scoring 1% (``BELOW_THRESHOLD``), so the
  device is paid nothing;
* ``secret``: it discloses another round's seal secret in ``SealKeyDisclosed``, so nobody can
  open the round's submissions;
* ``global``: it commits a global model that is not the FedAvg of the accepted updates (it keeps
  only the first one), with that model's own accuracy;
* ``median``: it does everything right in a task published with the coordinate-wise median as
  its on-chain aggregation rule; the oracle must aggregate with it, and the re-check must agree
  only because it reads the rule from the chain too.

The re-check reads only the chain and the public blob store (no vault, no key), through the real
command line; each lie must be named, with the device where there is one, and exit 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fedoracle.chain import Phase, dev_account
from fedoracle.cli import main
from fedoracle.errors import Reason
from fedoracle.learning.robust import AggregationRule
from fedoracle.verify import check_round, read_task
from oracle.daemon import Oracle
from tests.conftest import run
from tests.oracle.harness import deploy
from tests.oracle.kit import ROOT, make_blob, publish, submit, task_events, wait_phase

CASES = ("honest", "verdict", "secret", "global", "median")
HONEST = ("honest", "median")
DEVICES = {case: [40 + 3 * i + k for k in range(3)] for i, case in enumerate(CASES)}
CHEATED = DEVICES["verdict"][1]  # the good device the crooked oracle fails


class CrookedOracle(Oracle):
    """The real oracle, except for one lie in each crooked task (``lies``: task id -> case)."""

    lies: dict[int, str] = {}

    async def _score(self, view, round_, global_hash, sub):
        score = await super()._score(view, round_, global_hash, sub)
        if self.lies.get(view.task_id) == "verdict" and sub.device.lower() == dev_account(CHEATED).address.lower():
            return dataclasses.replace(score, accuracy_bp=100)  # "your update scored 1%"
        return score

    def _seal_rollover(self, view, round_):
        out = super()._seal_rollover(view, round_)
        if self.lies.get(view.task_id) == "secret":
            out["seal_secret"] = self.seal_keys(view.task_id, round_ + 1)[0]  # a real secret, of another round
        return out

    def _aggregate_weights(self, ctx, accepted):
        if self.lies.get(ctx.task_id) == "global":
            accepted = accepted[:1]  # the "aggregate" of the first accepted update alone
        return super()._aggregate_weights(ctx, accepted)


@pytest.fixture(scope="module")
def settled(node, models, mnist, tmp_path_factory):
    """The four tasks, each settled and finalized by the crooked oracle: ``(harness, {case: task id})``."""
    tmp = tmp_path_factory.mktemp("verify")

    async def go():
        h = await deploy(node.rpc_url, tmp)
        tasks, first_block = {}, None
        for case in CASES:
            rounds = 2 if case == "honest" else 1
            rule = {"aggregation": AggregationRule("median")} if case == "median" else {}
            t = await publish(
                h.registry, h.blobs, h.vault, models, mnist, oracle=h.oracle_address, cap=3, rounds=rounds, **rule
            )
            tasks[case] = t.task_id
            first_block = t.block if first_block is None else first_block
            for k, device in enumerate(DEVICES[case]):
                blob = make_blob("good", h.blobs, models, models.initial, which=k % 2)
                await submit(h.rpc_url, h.registry.address, device, t.task_id, blob, h.blobs, num_samples=100 + 50 * k)
        CrookedOracle.lies = {tasks[c]: c for c in CASES if c not in HONEST}
        await h.start(first_block, oracle_cls=CrookedOracle)
        try:
            # the honest task's round 2 trains from round 1's aggregate, sealed to the key the oracle set
            await wait_phase(h.registry, tasks["honest"], Phase.OPEN, 300, round_=2, alive=h.alive)
            for k, device in enumerate(DEVICES["honest"]):
                blob = make_blob("good", h.blobs, models, models.initial, which=k % 2)
                await submit(h.rpc_url, h.registry.address, device, tasks["honest"], blob, h.blobs)
            for task_id in tasks.values():
                await wait_phase(h.registry, task_id, Phase.FINALIZED, 300, alive=h.alive)
        finally:
            await h.stop()
        return h, tasks

    return run(asyncio.wait_for(go(), 600))


def verify(h, task_id: int, *extra: str):
    """``fedoracle verify TASK`` as anyone runs it: the chain and the public blob store, nothing else."""
    args = ["verify", "--rpc-url", h.rpc_url, "--registry", h.registry.address, "--blob-store", str(h.blobs.root)]
    return CliRunner().invoke(main, [*args, *extra, str(task_id)], catch_exceptions=False)


def test_honest_rounds_verify_clean(settled):
    """Through the real command line, its output piped (so a TFF worker left behind would hang it)."""
    h, tasks = settled
    argv = [sys.executable, "-m", "fedoracle.cli", "verify", "--rpc-url", h.rpc_url, "--registry", h.registry.address]
    done = subprocess.run(
        [*argv, "--blob-store", str(h.blobs.root), str(tasks["honest"])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.stdout.strip().splitlines() == [
        f"round {r}: 3 verdicts re-checked, all agree; global model agrees" for r in (1, 2)
    ], done.stderr[-2000:]
    assert done.returncode == 0
    report = json.loads(verify(h, tasks["honest"], "--json", "--round", "2").output)
    assert report["agrees"] is True and [r["round"] for r in report["rounds"]] == [2]
    assert report["rounds"][0]["disagreements"] == [] and report["rounds"][0]["verdicts"] == 3


def test_a_good_update_posted_as_failed_is_caught(settled):
    h, tasks = settled
    events = run(task_events(h.registry, tasks["verdict"]))
    cheated = dev_account(CHEATED).address
    posted = next(e.args for e in events if e.name == "VerdictPosted" and e.args["device"] == cheated)
    assert (posted["accuracyBp"], posted["reason"], posted["accepted"]) == (100, Reason.BELOW_THRESHOLD, False)
    result = verify(h, tasks["verdict"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "round 1: 3 verdicts re-checked, 1 disagree; global model agrees"
    assert len(lines) == 2 and lines[1].startswith(f"round 1: device {cheated}: posted BELOW_THRESHOLD at 100 bp")
    assert "recomputed OK at" in lines[1] and lines[1].endswith("(accepted)")


def test_a_wrong_disclosed_seal_secret_is_caught(settled):
    h, tasks = settled
    result = verify(h, tasks["secret"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "round 1: cannot be re-checked"
    assert len(lines) == 2 and lines[1].startswith("round 1: round: the disclosed seal secret is not the round's")
    report = json.loads(verify(h, tasks["secret"], "--json").output)
    assert report["agrees"] is False and report["rounds"][0]["checked"] is False


def test_a_global_model_that_is_not_the_aggregate_is_caught(settled):
    h, tasks = settled
    result = verify(h, tasks["global"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "round 1: 3 verdicts re-checked, all agree; global model DISAGREES"
    assert any("is not the fedavg aggregate of the 3 accepted updates" in line for line in lines[1:])


def test_a_task_aggregated_with_its_on_chain_rule_verifies_and_only_with_it(settled):
    """The task's rule is on-chain: the oracle used the median, and the re-check reproduces it from the chain.

    Re-checked as if the rule were FedAvg (what the oracle used before the rule was committed),
    the same round's global model disagrees: the median is what was aggregated.
    """
    h, tasks = settled
    result = verify(h, tasks["median"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == ["round 1: 3 verdicts re-checked, all agree; global model agrees"]
    facts = run(read_task(h.rpc_url, h.registry.address, tasks["median"]))
    assert facts.rule == AggregationRule("median")
    as_fedavg = check_round(dataclasses.replace(facts, rule=AggregationRule("fedavg")), facts.rounds[1], h.blobs)
    assert not as_fedavg.global_model_agrees
    assert any("is not the fedavg aggregate" in d.what for d in as_fedavg.disagreements)


def test_bad_input_is_one_line_and_exit_2(settled):
    """An unknown task or round, or an unusable blob store, is bad input: exit 2, one line (the real command line)."""
    h, tasks = settled
    base = [sys.executable, "-m", "fedoracle.cli", "verify", "--rpc-url", h.rpc_url, "--registry", h.registry.address]
    for extra, says in (
        (["999"], "no task 999"),
        (["--round", "7", str(tasks["honest"])], "has no round 7"),
        (["--blob-store", "ftp://nowhere", str(tasks["honest"])], "no blob store backend"),
    ):
        done = subprocess.run(
            [*base, "--blob-store", str(h.blobs.root), *extra], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and done.stderr.strip().splitlines() == [f"Error: {done.stderr.strip()[7:]}"]
        assert says in done.stderr and "ConfigError" in done.stderr
