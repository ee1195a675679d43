"""Stateful property test: random sequences of every registry action against a Python model.

The actions come from several accounts and are checked step by step against the model of the
contract, with the money invariants.

Rules: publish, submit, announceThreshold, closeSubmissions, discloseTestData (honest and forged),
postVerdict and postVerdicts (from the oracle and from others, honest and mismatched), aggregate,
finalize, cancel, claim, claimMany, setPayee, reclaimExpired, refund, time warps, plus "advance"
rules that make the next honest move of a task so that
examples reach late phases. Every call is predicted by the model: either it must succeed (then it
is sent as a transaction and the chain's state is compared with the model) or it must revert with
the predicted custom error (checked with an eth_call, which runs the same code on the same state).

Invariants (after every step, or at the end of every example):
  * the registry's balance == total escrow - total paid out (claims + refunds);
  * every payee's balance grew by exactly what the model owes it: nobody paid twice, no claim
    above entitlement, and no task pays out more than its reward;
  * no submission is accepted once a round is closed (submit after close must revert, and the
    on-chain counters equal the model's);
  * verdicts only from the oracle (any other sender must revert; counters agree);
  * funds always recoverable: at the end every task is driven (time warps, close, cancel, claims
    or, past the claim window, expiries, then the refund, all by a stranger) to a state where all
    of its ETH has left the contract.

Speed: the test talks to the provider through web3 (ape's per-call overhead would dominate) and
restores a chain snapshot after each example. Profiles: see conftest.py (HYPOTHESIS_PROFILE).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fltask_harness import (
    AWAITING_FINALIZE,
    CANCELLED,
    CLAIM_WINDOW,
    CLOSED,
    EVALUATOR,
    FINALIZED,
    MAX_SAMPLES,
    OPEN,
    REASON_MAX,
    Params,
    h,
    make_testset,
    model_uri,
    provider,
    seal_key,
    seal_secret,
    stateful_settings,
)
from rawchain import Abi, Reverted, backend_for

MAX_BP = 10_000
ROUND_DURATION = 3_600
EVALUATION_WINDOW = 1_800
EDGE_MARGIN = 30  # never act within this many seconds of a deadline (eth_call vs block timestamp)
MAX_TASKS = 3
SEL = st.integers(0, 7)  # see RegistryMachine.pick
LEGIT = st.sampled_from([0, 0, 0, 1, 2])  # sender index: mostly the role allowed to act
SAMPLES = st.sampled_from([1, 2, 3, 1, 2, 3, 0, MAX_SAMPLES + 1])  # declared samples: 1 in 4 out of bounds
OUTCOMES: Counter = Counter()  # (function, "ok" | error name) -> count, over the whole run


# ---------------------------------------------------------------------------------------------- model


@dataclass
class RoundM:
    disclosed: bool = False
    settled: bool = False
    per_accepted: int = 0
    subs: dict = field(default_factory=dict)  # device -> (modelHash, payee, thresholdBp, numSamples)
    status: dict = field(default_factory=dict)  # device -> "A" | "R" | "C" | "E"
    payees: dict = field(default_factory=dict)  # device -> payee named later by setPayee


@dataclass
class TaskM:
    task_id: int
    publisher: str
    oracle: str
    reward: int
    max_rounds: int
    max_subs: int
    target: int
    ts: object  # TestSetCommitment
    phase: int = OPEN
    round: int = 1
    threshold: int = 6_000
    deadline: int = 0
    submissions: int = 0
    verdicts: int = 0
    accepted: int = 0
    global_hash: bytes = b""
    allocated: int = 0
    refunded: int = 0
    claimed: int = 0
    rounds: dict = field(default_factory=dict)

    def rnd(self, r: int | None = None) -> RoundM:
        return self.rounds.setdefault(self.round if r is None else r, RoundM())

    def pool(self, r: int) -> int:
        pool = self.reward // self.max_rounds
        return self.reward - pool * (self.max_rounds - 1) if r == self.max_rounds else pool


class Revert(Exception):
    def __init__(self, name: str, args: dict):
        super().__init__(f"{name}{args}")
        self.name, self.args_ = name, args


# ---------------------------------------------------------------------------------------------- machine


class RegistryMachine(RuleBasedStateMachine):
    """Configured by the test function through class attributes (ape objects, accounts)."""

    ctx: dict = {}

    def __init__(self):
        super().__init__()
        c = self.ctx
        self.chain, self.io, self.abi, self.reg = c["chain"], c["io"], c["abi"], c["address"]
        self.acc = c["accounts"]  # role -> address or list of addresses
        self.snapshot = self.chain.snapshot()
        self.tasks: list[TaskM] = []
        self.escrow = 0
        self.paid = 0
        self.owed: dict[str, int] = {p: 0 for p in self.acc["payees"]}
        self.payee_start = {p: self.io.balance(p) for p in self.acc["payees"]}
        self.start_balance = self.io.balance(self.reg)
        self._now = self.io.now()
        self.expire_at_end = False

    # -------------------------------------------------------------------------------------- plumbing

    def now(self) -> int:
        return self.io.now()

    def _avoid_edges(self):
        """Moves the clock past any deadline within EDGE_MARGIN of now, so "late" is unambiguous.

        An eth_call and the next block may see timestamps a second or two apart.
        """
        now = self.now()
        near = [t.deadline for t in self.tasks if now - 1 <= t.deadline <= now + EDGE_MARGIN]
        if near:
            now = max(near) + EDGE_MARGIN + 1
            self.chain.mine(timestamp=now)
        self._now = now

    def late(self, t: TaskM) -> bool:
        return self._now > t.deadline

    def view(self, fn: str, *args):
        return self.abi.decode_output(fn, self.io.call(self.acc["stranger"], self.reg, self.abi.encode(fn, *args)))

    def act(self, call: tuple, sender: str, expect: tuple | None, value: int = 0):
        """Calls `call` = (function, *args) from `sender`, as the model predicts in `expect`.

        `expect` None: must succeed (sent as a transaction; the decoded events are returned); else
        (ErrorName, {arg: value, ...}): must revert with exactly that error and those arguments.
        """
        fname, *args = call
        data = self.abi.encode(fname, *args)
        if expect is not None:
            name, want = expect
            OUTCOMES[(fname, name)] += 1
            try:
                self.io.call(sender, self.reg, data, value)
            except Reverted as exc:
                got, got_args = self.abi.decode_error(exc.data)
                assert got == name, f"{fname}: expected {name}{want}, got {got}{got_args}"
                for k, v in want.items():
                    g = got_args[k]
                    if isinstance(v, str):
                        g, v = str(g).lower(), v.lower()
                    assert g == v, f"{fname}: {name}.{k}: expected {v!r}, got {g!r}"
                return None
            raise AssertionError(f"{fname}: expected revert {name}{want}, but the call succeeded")
        OUTCOMES[(fname, "ok")] += 1
        receipt = self.io.send(sender, self.reg, data, value)
        assert receipt["status"] == 1, f"{fname}: transaction reverted"
        events: dict[str, list[dict]] = {}
        for ev, ev_args in self.abi.decode_logs(receipt["logs"]):
            events.setdefault(ev, []).append({k: (v.lower() if isinstance(v, str) else v) for k, v in ev_args.items()})
        return events

    def pick(self, sel: int) -> tuple[TaskM | None, int]:
        """A task by selector: 0..5 name an existing task (if any), 6..7 an unknown task id."""
        if sel < 6 and self.tasks:
            t = self.tasks[sel % len(self.tasks)]
            return t, t.task_id
        return None, len(self.tasks) + 1 + sel

    def _new_deadline(self, window: int) -> int:
        """The deadline a transaction just set: its block (the new head) + window."""
        return self.now() + window

    def check_task(self, t: TaskM, money: bool = False):
        (s,) = self.view("getState", t.task_id)
        phase, rnd, thr, _allow, subs, verdicts, accepted, _max, deadline, max_samples = s
        assert max_samples == MAX_SAMPLES
        assert (phase, rnd, thr, subs, verdicts, accepted) == (
            t.phase,
            t.round,
            t.threshold,
            t.submissions,
            t.verdicts,
            t.accepted,
        ), (s, t)
        assert deadline == t.deadline
        assert t.claimed <= t.allocated <= t.reward and t.refunded <= t.reward - t.allocated
        if money:
            (c,) = self.view("getTask", t.task_id)
            assert (c[18], c[19], c[20]) == (t.allocated, t.refunded, 0)  # allocated, refunded, privacyMode
            assert c[-2] == CLAIM_WINDOW

    # -------------------------------------------------------------------------------------- model steps

    def _settle(self, t: TaskM, pending: int = 0):
        rm = t.rnd()
        # the stall rule: submissions still without a verdict count in the division (cancel)
        per = t.pool(t.round) // (t.accepted + pending) if t.accepted else 0
        rm.settled, rm.per_accepted = True, per
        t.allocated += per * t.accepted
        assert self.view("getRound", t.task_id, t.round)[0][2] == t.submissions
        return per

    def _close(self, t: TaskM, events: dict):
        t.phase = CLOSED
        t.deadline = self._new_deadline(EVALUATION_WINDOW)
        assert [(e["round"], e["submissions"], e["evaluationDeadline"]) for e in events["SubmissionsClosed"]] == [
            (t.round, t.submissions, t.deadline)
        ]
        assert self.view("getRound", t.task_id, t.round)[0][2] == 0  # recorded at settlement

    # -------------------------------------------------------------------------------------- rules

    @initialize(
        who=st.integers(0, 1),
        oracle=st.integers(0, 1),
        reward=st.sampled_from([1, 5, 10**6 + 3, 3 * 10**18]),
        max_rounds=st.integers(1, 3),
        max_subs=st.sampled_from([0, 0, 2, 3]),
        target_bp=st.sampled_from([0, 0, 7_000]),
        expire=st.booleans(),
    )
    def first_task(self, who, oracle, reward, max_rounds, max_subs, target_bp, expire):
        self.expire_at_end = expire  # the end: claims in the window, or its expiry path
        self.publish(who, oracle, reward, max_rounds, max_subs, target_bp)

    @precondition(lambda self: len(self.tasks) < MAX_TASKS)
    @rule(
        who=st.integers(0, 1),
        oracle=st.integers(0, 1),
        reward=st.sampled_from([0, 1, 5, 10**6 + 3, 3 * 10**18]),
        max_rounds=st.integers(1, 3),
        max_subs=st.sampled_from([0, 0, 2, 3]),
        target_bp=st.sampled_from([0, 0, 7_000]),
    )
    def publish(self, who, oracle, reward, max_rounds, max_subs, target_bp):
        self._avoid_edges()
        publisher, orc = self.acc["publishers"][who], self.acc["oracles"][oracle]
        ts = make_testset(num_groups=2 * max_rounds, groups_per_round=2, seed=len(self.tasks) + 11 * max_rounds)
        p = Params.for_testset(
            orc, ts, maxRounds=max_rounds, maxSubmissionsPerRound=max_subs, targetAccuracyBp=target_bp
        )
        fn = ("publish", p.as_tuple())
        if reward == 0:
            self.act(fn, publisher, ("FLTaskNoReward", {}), value=0)
            return
        events = self.act(fn, publisher, None, value=reward)
        task_id = len(self.tasks) + 1
        t = TaskM(task_id, publisher, orc, reward, max_rounds, max_subs, target_bp, ts, global_hash=p.initialModelHash)
        t.deadline = self._new_deadline(ROUND_DURATION)
        self.tasks.append(t)
        self.escrow += reward
        assert [(e["taskId"], e["reward"]) for e in events["TaskPublished"]] == [(task_id, reward)]
        assert [(e["round"], e["deadline"]) for e in events["RoundOpened"]] == [(1, t.deadline)]
        self.check_task(t)

    def _submit(self, t: TaskM | None, task_id: int, device: str, payee: str, samples: int):
        self._avoid_edges()
        mh = h(f"update-{task_id}-{t.round if t else 0}-{device}-{samples}")
        fn = ("submit", task_id, mh, model_uri(mh), payee, samples, MAX_BP, samples * 1_000)
        if t is None:
            return self.act(fn, device, ("FLTaskUnknown", {"taskId": task_id}))
        if t.phase != OPEN:
            return self.act(fn, device, ("FLTaskWrongPhase", {"current": t.phase, "expected": OPEN}))
        if self.late(t):
            return self.act(fn, device, ("FLTaskDeadlinePassed", {"deadline": t.deadline}))
        rm = t.rnd()
        if samples == 0 or samples > MAX_SAMPLES:
            return self.act(fn, device, ("FLTaskInvalidParameter", {"name": "numSamples"}))
        if t.max_subs and t.submissions >= t.max_subs:
            return self.act(fn, device, ("FLTaskRoundFull", {"round": t.round, "maxSubmissions": t.max_subs}))
        if device in rm.subs:
            return self.act(fn, device, ("FLTaskDuplicateSubmission", {"round": t.round, "device": device}))
        events = self.act(fn, device, None)
        assert [e["epsilonSpentMilli"] for e in events["ModelSubmitted"]] == [samples * 1_000]
        assert "SubmissionsClosed" not in events  # the last submitter pays no more: a full round waits
        rm.subs[device] = (mh, payee, t.threshold, samples)
        t.submissions += 1
        self.check_task(t)

    @rule(sel=SEL, dev=st.integers(0, 3), pay=st.integers(0, 2), samples=SAMPLES)
    def submit(self, sel, dev, pay, samples):
        t, task_id = self.pick(sel)
        self._submit(t, task_id, self.acc["devices"][dev], self.acc["payees"][pay], samples)

    @rule(sel=SEL, who=st.integers(0, 2), bp=st.sampled_from([5_000, 6_000, 6_500, 8_000, 10_000, 10_001]))
    def announce_threshold(self, sel, who, bp):
        self._avoid_edges()
        t, task_id = self.pick(sel)
        fn = ("announceThreshold", task_id, bp)
        if t is None:
            return self.act(fn, self.acc["stranger"], ("FLTaskUnknown", {"taskId": task_id}))
        sender = [t.publisher, t.oracle, self.acc["stranger"]][who]
        if sender not in (t.publisher, t.oracle):
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != OPEN:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": OPEN}))
        if bp <= t.threshold or bp > MAX_BP:
            return self.act(fn, sender, ("FLTaskThresholdNotRaised", {"currentBp": t.threshold, "proposedBp": bp}))
        self.act(fn, sender, None)
        t.threshold = bp
        self.check_task(t)

    def _close_rule(self, t: TaskM | None, task_id: int, sender: str):
        self._avoid_edges()
        fn = ("closeSubmissions", task_id)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if t.phase != OPEN:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": OPEN}))
        full = t.max_subs and t.submissions >= t.max_subs
        if sender != t.oracle and not self.late(t) and not full:
            return self.act(fn, sender, ("FLTaskDeadlineNotReached", {"deadline": t.deadline}))
        events = self.act(fn, sender, None)
        self._close(t, events)
        self.check_task(t)

    @rule(sel=SEL, who=st.integers(0, 2))
    def close(self, sel, who):
        t, task_id = self.pick(sel)
        sender = self.acc["stranger"] if t is None else [t.oracle, t.publisher, self.acc["stranger"]][who]
        self._close_rule(t, task_id, sender)

    def _disclose(self, t: TaskM | None, task_id: int, sender: str, variant: str):
        self._avoid_edges()
        if t is None:
            fn = ("discloseTestData", task_id, b"\x01" * 32, [])
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        ts = t.ts
        r = min(t.round, ts.max_rounds)
        groups = [g.as_tuple() for g in ts.disclosure(r)]
        seed = ts.seed
        expect_bad = None
        if variant == "seed":
            seed = h("wrong seed")
            expect_bad = ("FLTaskBadSeed", {"taskId": task_id})
        elif variant == "count":
            groups = groups[:1]
            expect_bad = ("FLTaskWrongGroupCount", {"expected": 2, "given": 1})
        elif variant == "salt":
            g = list(groups[1])
            g[1] = h("forged salt")
            groups[1] = tuple(g)
            expect_bad = ("FLTaskInvalidGroupProof", {"index": g[0]})
        elif variant == "other-round" and ts.max_rounds > 1:
            other = r % ts.max_rounds + 1
            groups = [g.as_tuple() for g in ts.disclosure(other)]
            expect_bad = ("FLTaskWrongGroup", {"expectedIndex": ts.round_indices(r)[0], "givenIndex": groups[0][0]})
        fn = ("discloseTestData", task_id, seed, groups)
        if sender not in (t.publisher, t.oracle):
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != CLOSED:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": CLOSED}))
        if t.rnd().disclosed:
            return self.act(fn, sender, ("FLTaskAlreadyDisclosed", {"round": t.round}))
        if expect_bad:
            return self.act(fn, sender, expect_bad)
        events = self.act(fn, sender, None)
        t.rnd().disclosed = True
        ev = events["TestDataDisclosed"]
        assert [e["groupIndex"] for e in ev] == ts.round_indices(t.round)
        self.check_task(t)

    @rule(sel=SEL, who=LEGIT, variant=st.sampled_from(["ok", "ok", "seed", "count", "salt", "other-round"]))
    def disclose(self, sel, who, variant):
        t, task_id = self.pick(sel)
        sender = self.acc["stranger"] if t is None else [t.publisher, t.oracle, self.acc["stranger"]][who]
        self._disclose(t, task_id, sender, variant)

    def _verdict(self, t: TaskM | None, task_id: int, sender: str, device: str, acc: int, reason: int, tamper: bool):
        self._avoid_edges()
        rm = t.rnd() if t is not None else RoundM()
        sub = rm.subs.get(device) or (h("no such update"), device, 0, 0)
        if tamper:
            sub = (sub[0], sub[1], sub[2], sub[3] + 1)
        fn = ("postVerdict", task_id, device, sub, acc, reason, EVALUATOR)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if sender != t.oracle:
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != CLOSED:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": CLOSED}))
        if not rm.disclosed:
            return self.act(fn, sender, ("FLTaskNotDisclosed", {"round": t.round}))
        if device not in rm.subs:
            return self.act(fn, sender, ("FLTaskNoSubmission", {"round": t.round, "device": device}))
        if device in rm.status:  # the verdict has taken the commitment's slot: nothing left to match
            return self.act(fn, sender, ("FLTaskVerdictAlreadyPosted", {"round": t.round, "device": device}))
        if tamper:
            return self.act(fn, sender, ("FLTaskCommitmentMismatch", {"round": t.round, "device": device}))
        thr = sub[2]
        if acc > MAX_BP or reason > REASON_MAX or (reason == 1 and acc >= thr):
            return self.act(fn, sender, ("FLTaskInvalidVerdict", {"accuracyBp": acc, "reason": reason}))
        events = self.act(fn, sender, None)
        accepted = reason == 0 and acc >= thr
        ev = events["VerdictPosted"]
        assert [(e["device"], e["accepted"]) for e in ev] == [(device.lower(), accepted)]
        rm.status[device] = "A" if accepted else "R"
        t.verdicts += 1
        t.accepted += accepted
        self.check_task(t)

    @rule(
        sel=SEL,
        who=st.sampled_from([0, 0, 0, 0, 1, 2, 3]),
        dev=st.integers(0, 3),
        acc=st.sampled_from([0, 5_999, 6_000, 6_500, 9_000, 10_000, 10_001]),
        reason=st.sampled_from([0, 0, 0, 1, 3, 8, REASON_MAX + 1]),
        tamper=st.booleans(),
    )
    def verdict(self, sel, who, dev, acc, reason, tamper):
        t, task_id = self.pick(sel)
        others = [self.acc["stranger"], self.acc["devices"][dev]]
        if t is None:
            sender = self.acc["oracles"][0]
        else:
            sender = [t.oracle, t.publisher, *others][who]
        self._verdict(t, task_id, sender, self.acc["devices"][dev], acc, reason, tamper)

    @rule(
        sel=SEL,
        who=st.sampled_from([0, 0, 0, 1]),
        accs=st.lists(st.sampled_from([3_000, 6_500, 9_000]), min_size=1, max_size=4),
        repeat=st.booleans(),
    )
    def verdicts_batch(self, sel, who, accs, repeat):
        """Every pending verdict of a round in one postVerdicts (a repeated device reverts the whole batch)."""
        t, task_id = self.pick(sel)
        sender = self.acc["oracles"][0] if t is None else [t.oracle, self.acc["stranger"]][who]
        self._verdicts_batch(t, task_id, sender, accs, repeat)

    def _verdicts_batch(self, t: TaskM | None, task_id: int, sender: str, accs: list[int], repeat: bool):
        self._avoid_edges()
        rm = t.rnd() if t is not None else RoundM()
        pending = [d for d in rm.subs if d not in rm.status]
        batch = [(d, rm.subs[d], accs[i % len(accs)], 0) for i, d in enumerate(pending)]
        if repeat and batch:
            batch.append(batch[0])
        fn = ("postVerdicts", task_id, batch, EVALUATOR)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if sender != t.oracle:
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != CLOSED:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": CLOSED}))
        if not rm.disclosed:
            return self.act(fn, sender, ("FLTaskNotDisclosed", {"round": t.round}))
        if repeat and batch:
            return self.act(fn, sender, ("FLTaskVerdictAlreadyPosted", {"round": t.round, "device": batch[0][0]}))
        events = self.act(fn, sender, None)
        posted = [(e["device"], e["accepted"]) for e in events.get("VerdictPosted", [])]
        assert posted == [(d.lower(), acc >= sub[2]) for d, sub, acc, _ in batch]
        for d, sub, acc, _ in batch:
            rm.status[d] = "A" if acc >= sub[2] else "R"
            t.verdicts += 1
            t.accepted += acc >= sub[2]
        self.check_task(t)

    def _aggregate(self, t: TaskM | None, task_id: int, sender: str, acc: int, keep: bool):
        self._avoid_edges()
        mh = (t.global_hash if keep else h(f"global-{task_id}-{t.round}-{acc}")) if t else h("g")
        fn = (
            "aggregate",
            task_id,
            mh,
            model_uri(mh),
            acc,
            seal_secret(task_id, t.round if t else 0),
            seal_key(task_id, (t.round if t else 0) + 1),
        )
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if sender != t.oracle:
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != CLOSED:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": CLOSED}))
        if not t.rnd().disclosed:
            return self.act(fn, sender, ("FLTaskNotDisclosed", {"round": t.round}))
        if t.verdicts != t.submissions:
            pending = {"verdicts": t.verdicts, "submissions": t.submissions}
            return self.act(fn, sender, ("FLTaskVerdictsPending", pending))
        if acc > MAX_BP:
            return self.act(fn, sender, ("FLTaskInvalidParameter", {"name": "globalAccuracyBp"}))
        if t.accepted == 0 and mh != t.global_hash:
            return self.act(fn, sender, ("FLTaskInvalidParameter", {"name": "modelHash"}))
        events = self.act(fn, sender, None)
        per = self._settle(t)
        ev = events["GlobalModelUpdated"]
        assert [(e["round"], e["acceptedCount"], e["rewardPerAccepted"]) for e in ev] == [(t.round, t.accepted, per)]
        disclosed = [(e["round"], bytes(e["sealSecret"])) for e in events["SealKeyDisclosed"]]
        assert disclosed == [(t.round, seal_secret(task_id, t.round))]
        t.global_hash = mh
        if (t.target and acc >= t.target) or t.round >= t.max_rounds:
            t.phase, t.deadline = AWAITING_FINALIZE, self._new_deadline(EVALUATION_WINDOW)
            assert "RoundOpened" not in events
        else:
            t.phase, t.round, t.deadline = OPEN, t.round + 1, self._new_deadline(ROUND_DURATION)
            t.submissions = t.verdicts = t.accepted = 0
            assert [(e["round"], e["deadline"]) for e in events["RoundOpened"]] == [(t.round, t.deadline)]
            keyed = [(e["round"], bytes(e["sealKey"])) for e in events["SealKeySet"]]
            assert keyed == [(t.round, seal_key(task_id, t.round))]
        self.check_task(t, money=True)

    @rule(sel=SEL, who=LEGIT, acc=st.sampled_from([5_000, 7_000, 9_500, 10_001]), keep=st.booleans())
    def aggregate(self, sel, who, acc, keep):
        t, task_id = self.pick(sel)
        sender = self.acc["oracles"][0] if t is None else [t.oracle, t.publisher, self.acc["stranger"]][who]
        self._aggregate(t, task_id, sender, acc, keep)

    def _finalize(self, t: TaskM | None, task_id: int, sender: str, acc: int):
        self._avoid_edges()
        fn = ("finalize", task_id, acc, h("report"), "blob://report")
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if sender != t.oracle:
            return self.act(fn, sender, ("FLTaskUnauthorized", {"caller": sender}))
        if t.phase != AWAITING_FINALIZE:
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": AWAITING_FINALIZE}))
        if acc > MAX_BP:
            return self.act(fn, sender, ("FLTaskInvalidParameter", {"name": "finalAccuracyBp"}))
        self.act(fn, sender, None)
        t.phase = FINALIZED
        t.deadline = self._new_deadline(CLAIM_WINDOW)  # the claim window
        self.check_task(t)

    @rule(sel=SEL, who=LEGIT, acc=st.sampled_from([7_000, 10_001]))
    def finalize(self, sel, who, acc):
        t, task_id = self.pick(sel)
        sender = self.acc["oracles"][0] if t is None else [t.oracle, t.publisher, self.acc["stranger"]][who]
        self._finalize(t, task_id, sender, acc)

    def _cancel(self, t: TaskM | None, task_id: int, sender: str):
        self._avoid_edges()
        fn = ("cancel", task_id)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if t.phase == OPEN:
            if not (sender == t.publisher and t.round == 1 and t.submissions == 0):
                return self.act(fn, sender, ("FLTaskCannotCancel", {"phase": OPEN}))
        elif t.phase in (CLOSED, AWAITING_FINALIZE):
            if not self.late(t):
                return self.act(fn, sender, ("FLTaskDeadlineNotReached", {"deadline": t.deadline}))
        else:
            return self.act(fn, sender, ("FLTaskCannotCancel", {"phase": t.phase}))
        events = self.act(fn, sender, None)
        ev = events["TaskCancelled"]
        assert [(e["round"], e["phase"], e["by"]) for e in ev] == [(t.round, t.phase, sender.lower())]
        if t.phase == CLOSED:
            self._settle(t, pending=t.submissions - t.verdicts)
        t.phase = CANCELLED
        t.deadline = self._new_deadline(CLAIM_WINDOW)  # the claim window
        self.check_task(t, money=True)

    @rule(sel=SEL, who=st.integers(0, 2))
    def cancel(self, sel, who):
        t, task_id = self.pick(sel)
        sender = self.acc["stranger"] if t is None else [t.publisher, t.oracle, self.acc["stranger"]][who]
        self._cancel(t, task_id, sender)

    def _claim(self, t: TaskM | None, task_id: int, r: int, device: str, sender: str):
        self._avoid_edges()
        fn = ("claim", task_id, r, device)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if self.window_closed(t):
            return self.act(fn, sender, ("FLTaskClaimWindowClosed", {"claimDeadline": t.deadline}))
        rm = t.rounds.get(r, RoundM())
        if not rm.settled:
            return self.act(fn, sender, ("FLTaskRoundNotSettled", {"round": r}))
        if rm.status.get(device) != "A" or rm.per_accepted == 0:
            return self.act(fn, sender, ("FLTaskNothingToClaim", {"round": r, "device": device}))
        events = self.act(fn, sender, None)
        payee, amount = rm.payees.get(device, rm.subs[device][1]), rm.per_accepted
        ev = events["RewardClaimed"]
        assert [(e["device"], e["payee"], e["amount"]) for e in ev] == [(device.lower(), payee.lower(), amount)]
        rm.status[device] = "C"
        t.claimed += amount
        self.paid += amount
        self.owed[payee] += amount
        assert self.io.balance(payee) - self.payee_start[payee] == self.owed[payee]
        self.check_task(t, money=True)

    def window_closed(self, t: TaskM) -> bool:
        return t.phase in (FINALIZED, CANCELLED) and self.late(t)

    def _claim_many(self, t: TaskM | None, task_id: int, rounds: list[int], device: str, sender: str):
        """One claim for several rounds: paid per round exactly as single claims would be, or nothing."""
        self._avoid_edges()
        fn = ("claimMany", task_id, rounds, device)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if self.window_closed(t):
            return self.act(fn, sender, ("FLTaskClaimWindowClosed", {"claimDeadline": t.deadline}))
        seen: set[int] = set()
        for r in rounds:
            rm = t.rounds.get(r, RoundM())
            if not rm.settled:
                return self.act(fn, sender, ("FLTaskRoundNotSettled", {"round": r}))
            if rm.status.get(device) != "A" or rm.per_accepted == 0 or r in seen:
                return self.act(fn, sender, ("FLTaskNothingToClaim", {"round": r, "device": device}))
            seen.add(r)
        events = self.act(fn, sender, None)
        got = [(e["round"], e["payee"], e["amount"]) for e in events.get("RewardClaimed", [])]
        want = []
        for r in rounds:
            rm = t.rounds[r]
            payee, amount = rm.payees.get(device, rm.subs[device][1]), rm.per_accepted
            want.append((r, payee.lower(), amount))
            rm.status[device] = "C"
            t.claimed += amount
            self.paid += amount
            self.owed[payee] += amount
        assert got == want
        for p in {w[1] for w in want}:
            payee = next(q for q in self.owed if q.lower() == p)
            assert self.io.balance(payee) - self.payee_start[payee] == self.owed[payee]
        self.check_task(t, money=True)

    @rule(sel=SEL, dev=st.integers(0, 3), who=st.integers(0, 1), extra=st.sampled_from([None, 0, 1, 9]))
    def claim_many(self, sel, dev, who, extra):
        """Every open share of a device in one call (plus, sometimes, a round with nothing or a repeat)."""
        t, task_id = self.pick(sel)
        device = self.acc["devices"][dev]
        rounds = [] if t is None else [r for r, rm in sorted(t.rounds.items()) if rm.status.get(device) == "A"]
        if extra is not None:
            rounds.append(rounds[0] if extra == 0 and rounds else extra)
        self._claim_many(t, task_id, rounds, device, [self.acc["stranger"], device][who])

    def _reclaim(self, t: TaskM | None, task_id: int, r: int, devices: list[str]):
        """Past the claim window, unclaimed shares go back to the escrow (then to the publisher)."""
        self._avoid_edges()
        fn = ("reclaimExpired", task_id, r, devices)
        sender = self.acc["stranger"]
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        ended = t.phase in (FINALIZED, CANCELLED)
        if not ended or not self.late(t):
            return self.act(fn, sender, ("FLTaskClaimWindowOpen", {"claimDeadline": t.deadline if ended else 0}))
        rm = t.rounds.get(r, RoundM())
        seen: set[str] = set()
        for d in devices:
            if rm.status.get(d) != "A" or rm.per_accepted == 0 or d in seen:
                return self.act(fn, sender, ("FLTaskNothingToClaim", {"round": r, "device": d}))
            seen.add(d)
        events = self.act(fn, sender, None)
        assert [(e["device"], e["amount"]) for e in events.get("RewardExpired", [])] == [
            (d.lower(), rm.per_accepted) for d in devices
        ]
        for d in devices:
            rm.status[d] = "E"
        t.allocated -= rm.per_accepted * len(devices)
        self.check_task(t, money=True)

    @rule(sel=SEL, r=st.integers(0, 3), dev=st.integers(0, 3), aim=st.booleans())
    def reclaim_expired(self, sel, r, dev, aim):
        t, task_id = self.pick(sel)
        devices = [self.acc["devices"][dev]]
        if aim and t is not None:
            open_ = [(rr, d) for rr, rm in t.rounds.items() for d, st_ in rm.status.items() if st_ == "A"]
            if open_:
                r, d = open_[(r * 4 + dev) % len(open_)]
                devices = [d for d, st_ in t.rounds[r].status.items() if st_ == "A"]
        self._reclaim(t, task_id, r, devices)

    @rule(sel=SEL, r=st.integers(0, 3), dev=st.integers(0, 3), who=st.integers(0, 2))
    def claim(self, sel, r, dev, who):
        t, task_id = self.pick(sel)
        device = self.acc["devices"][dev]
        sender = [self.acc["stranger"], device, self.acc["publishers"][0]][who]
        self._claim(t, task_id, r, device, sender)

    @rule(sel=SEL, r=st.integers(0, 3), dev=st.integers(0, 3), pay=st.integers(0, 3), miss=st.booleans())
    def set_payee(self, sel, r, dev, pay, miss):
        """A device redirects its share; a stranger's, a zero or an unaccepted redirect reverts."""
        self._avoid_edges()
        t, task_id = self.pick(sel)
        device = self.acc["devices"][dev]
        if not miss and t is not None:  # aim at an accepted, unclaimed share (else rare by chance)
            open_ = [(rr, d) for rr, rm in t.rounds.items() for d, st_ in rm.status.items() if st_ == "A"]
            if open_:
                r, device = open_[(r * 4 + dev) % len(open_)]
        new = "0x" + "00" * 20 if pay == 3 else self.acc["payees"][pay]
        self._set_payee(t, task_id, r, device, new)

    def _set_payee(self, t: TaskM | None, task_id: int, r: int, device: str, new: str):
        self._avoid_edges()
        fn = ("setPayee", task_id, r, new)
        pay = 3 if new == "0x" + "00" * 20 else 0
        if pay == 3:
            return self.act(fn, device, ("FLTaskInvalidParameter", {"name": "newPayee"}))
        if t is None:
            return self.act(fn, device, ("FLTaskUnknown", {"taskId": task_id}))
        if self.window_closed(t):
            return self.act(fn, device, ("FLTaskClaimWindowClosed", {"claimDeadline": t.deadline}))
        rm = t.rounds.get(r, RoundM())
        if rm.status.get(device) != "A":
            return self.act(fn, device, ("FLTaskNothingToClaim", {"round": r, "device": device}))
        events = self.act(fn, device, None)
        previous = rm.payees.get(device, rm.subs[device][1])
        ev = [(e["device"], e["previousPayee"], e["newPayee"]) for e in events["PayeeChanged"]]
        assert ev == [(device.lower(), previous.lower(), new.lower())]
        rm.payees[device] = new
        self.check_task(t)

    def _refund(self, t: TaskM | None, task_id: int, sender: str):
        self._avoid_edges()
        fn = ("refund", task_id)
        if t is None:
            return self.act(fn, sender, ("FLTaskUnknown", {"taskId": task_id}))
        if t.phase not in (FINALIZED, CANCELLED):
            return self.act(fn, sender, ("FLTaskWrongPhase", {"current": t.phase, "expected": FINALIZED}))
        amount = t.reward - t.allocated - t.refunded
        if amount == 0:
            return self.act(fn, sender, ("FLTaskNothingToRefund", {"taskId": task_id}))
        events = self.act(fn, sender, None)
        ev = events["Refunded"]
        assert [(e["publisher"], e["amount"]) for e in ev] == [(t.publisher.lower(), amount)]
        t.refunded += amount
        self.paid += amount
        self.check_task(t, money=True)

    @rule(sel=SEL, who=st.integers(0, 2))
    def refund(self, sel, who):
        t, task_id = self.pick(sel)
        sender = [self.acc["stranger"], self.acc["publishers"][0], self.acc["devices"][0]][who]
        self._refund(t, task_id, sender)

    @rule(sel=SEL, extra=st.sampled_from([60, EDGE_MARGIN + 1, 600]))
    def warp(self, sel, extra):
        """Time passes: a minute, or just past one task's current deadline."""
        t, _ = self.pick(sel)
        target = (t.deadline if t is not None and t.deadline > self.now() else self.now()) + extra
        self.chain.mine(timestamp=target)

    def _advance(self, t: TaskM, choice: int):
        """The next honest move of the task's parties (so examples reach late phases)."""
        rm = t.rnd()
        if t.phase == OPEN:
            free = [d for d in self.acc["devices"] if d not in rm.subs]
            if t.submissions < 2 + choice % 2 and free and not self.late(t):
                return self._submit(t, t.task_id, free[0], self.acc["payees"][choice % 3], choice)
            return self._close_rule(t, t.task_id, t.oracle)
        if t.phase == CLOSED:
            if not rm.disclosed:
                return self._disclose(t, t.task_id, t.publisher if choice % 2 else t.oracle, "ok")
            pending = [d for d in rm.subs if d not in rm.status]
            if pending and choice % 3 == 0:  # the oracle's batch: every pending verdict at once
                return self._verdicts_batch(t, t.task_id, t.oracle, [9_000, 6_500, 3_000], False)
            if pending:
                return self._verdict(t, t.task_id, t.oracle, pending[0], [9_000, 6_500, 3_000][choice % 3], 0, False)
            return self._aggregate(t, t.task_id, t.oracle, [7_000, 9_500][choice % 2], t.accepted == 0)
        if t.phase == AWAITING_FINALIZE:
            return self._finalize(t, t.task_id, t.oracle, 7_500)
        for r, rmr in t.rounds.items():
            for d, s in rmr.status.items():
                if s == "A" and rmr.settled and rmr.per_accepted:
                    if choice % 2 == 0 and d not in rmr.payees:  # redirect first, then claim (to the new payee)
                        return self._set_payee(t, t.task_id, r, d, self.acc["payees"][choice % 3])
                    if choice % 3 == 1:  # all of the device's open rounds at once
                        due = [rr for rr, x in sorted(t.rounds.items()) if x.status.get(d) == "A" and x.per_accepted]
                        return self._claim_many(t, t.task_id, due, d, self.acc["stranger"])
                    return self._claim(t, t.task_id, r, d, self.acc["stranger"])
        return self._refund(t, t.task_id, self.acc["stranger"])

    @precondition(
        lambda self: any(s == "C" for t in self.tasks for rm in t.rounds.values() for s in rm.status.values())
    )
    @rule(data=st.data(), who=st.integers(0, 2))
    def claim_again(self, data, who):
        """Nobody paid twice: replay a claim that was already paid (must revert NothingToClaim)."""
        paid = [(t, r, d) for t in self.tasks for r, rm in t.rounds.items() for d, s in rm.status.items() if s == "C"]
        t, r, d = data.draw(st.sampled_from(paid))
        sender = [self.acc["stranger"], d, t.publisher][who]
        self._claim(t, t.task_id, r, d, sender)

    @precondition(lambda self: self.tasks)
    @rule(sel=st.integers(0, MAX_TASKS - 1), choice=st.integers(0, 5))
    def advance(self, sel, choice):
        self._advance(self.tasks[sel % len(self.tasks)], choice)

    @precondition(lambda self: self.tasks)
    @rule(sel=st.integers(0, MAX_TASKS - 1), choice=st.integers(0, 5))
    def advance_again(self, sel, choice):
        self._advance(self.tasks[sel % len(self.tasks)], choice)

    @precondition(lambda self: self.tasks)
    @rule(sel=st.integers(0, MAX_TASKS - 1), choice=st.integers(0, 5))
    def advance_more(self, sel, choice):
        self._advance(self.tasks[sel % len(self.tasks)], choice)

    # -------------------------------------------------------------------------------------- invariants

    @invariant()
    def balance_is_escrow_minus_payouts(self):
        assert self.io.balance(self.reg) - self.start_balance == self.escrow - self.paid

    def teardown(self):
        try:
            self._recover_everything()
        finally:
            self.chain.restore(self.snapshot)

    def _recover_everything(self):
        """Funds always recoverable: a stranger alone drives every task until its ETH is out."""
        stranger = self.acc["stranger"]
        for _ in range(3):  # open -> closed -> cancelled needs at most two deadline warps
            live = [t for t in self.tasks if t.phase not in (FINALIZED, CANCELLED)]
            if not live:
                break
            self.chain.mine(timestamp=max(max(t.deadline for t in live), self.now()) + EDGE_MARGIN + 1)
            for t in live:
                if t.phase == OPEN:
                    self._close_rule(t, t.task_id, stranger)
                else:
                    self._cancel(t, t.task_id, stranger)
        if self.expire_at_end:  # nobody claims: the window passes and the shares go back to the escrow
            self.chain.mine(timestamp=max(max(t.deadline for t in self.tasks), self.now()) + EDGE_MARGIN + 1)
        for t in self.tasks:
            assert t.phase in (FINALIZED, CANCELLED), t
            for r, rm in t.rounds.items():
                open_ = [d for d, s in rm.status.items() if s == "A" and rm.per_accepted]
                self._avoid_edges()  # the clock may have passed this task's claim window meanwhile
                if open_ and self.window_closed(t):  # too late to claim: the shares go back to the escrow
                    self._reclaim(t, t.task_id, r, open_)
                    continue
                for d in open_:
                    self._claim(t, t.task_id, r, d, stranger)
            if t.reward - t.allocated - t.refunded:
                self._refund(t, t.task_id, stranger)
            assert t.claimed + t.refunded == t.reward, t
        assert self.io.balance(self.reg) == self.start_balance
        assert self.paid == self.escrow
        # Nobody is paid twice: every claim already paid, and every refund, now reverts.
        for t in self.tasks:
            for r, rm in t.rounds.items():
                for d, s in rm.status.items():
                    if s == "C":
                        self._claim(t, t.task_id, r, d, self.acc["payees"][0])
            self._refund(t, t.task_id, stranger)


@pytest.mark.parametrize("provider_name", ["foundry", "test"], ids=["anvil", "in-process"])
def test_registry_state_machine(project, networks, accounts, provider_name):
    """The full run on anvil (fast raw JSON-RPC); a shorter one on the in-process EVM.

    Python signing on the in-process EVM makes each transaction ~30 ms (set
    FLTASK_STATEFUL_FULL=1 for the full count there too).
    """
    base = stateful_settings()
    examples = base.max_examples
    if provider_name == "test" and not os.environ.get("FLTASK_STATEFUL_FULL"):
        examples = max(20, examples // 10)
    with provider(networks, provider_name) as node:
        chain = networks.chain_manager
        registry = accounts[0].deploy(project.FLTaskRegistry)
        abi = [a.model_dump(mode="json", by_alias=True) for a in registry.contract_type.abi]
        RegistryMachine.ctx = dict(
            chain=chain,
            io=backend_for(node),
            abi=Abi(abi),
            address=registry.address,
            accounts=dict(
                publishers=[accounts[1].address, accounts[16].address],
                oracles=[accounts[2].address, accounts[17].address],
                stranger=accounts[3].address,
                devices=[accounts[i].address for i in range(4, 8)],
                payees=[accounts[i].address for i in range(10, 13)],
            ),
        )
        OUTCOMES.clear()
        run_state_machine_as_test(RegistryMachine, settings=settings(base, max_examples=examples))
    for key, n in sorted(OUTCOMES.items()):
        print(f"{key[0]:>18} {key[1]:<28} {n}")
    # The run must have reached every phase and every way money leaves the contract.
    if examples >= 200:
        for fn in (
            "publish",
            "submit",
            "closeSubmissions",
            "discloseTestData",
            "postVerdict",
            "aggregate",
            "finalize",
            "cancel",
            "claim",
            "refund",
            "announceThreshold",
            "setPayee",
            "claimMany",
            "postVerdicts",
        ):  # reclaimExpired's success needs a share left unclaimed to the end: test_claims.py drives it
            assert OUTCOMES[(fn, "ok")] > 0, f"no successful {fn} in the whole run"
