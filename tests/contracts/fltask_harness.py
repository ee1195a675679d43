"""Helpers shared by the FLTaskRegistry tests: parameters, a round driver, strict revert checks."""

from __future__ import annotations

import contextlib
import os
import random
from ast import literal_eval
from dataclasses import dataclass, field, fields

import ape
from eth_abi import decode as abi_decode
from eth_hash.auto import keccak
from hypothesis import HealthCheck, settings

from fedoracle.commitments import TestSetCommitment
from fedoracle.units import BP

# Phase / Status enums of the contract.
NONE, OPEN, CLOSED, AWAITING_FINALIZE, FINALIZED, CANCELLED = range(6)
S_NONE, S_ACCEPTED, S_REJECTED, S_CLAIMED, S_EXPIRED = range(5)
REASON_OK, REASON_BELOW_THRESHOLD, REASON_MAX = 0, 1, 11
REASON_LOSS_ABOVE_MARGIN = 11

ROUND_DURATION = 3_600
EVALUATION_WINDOW = 1_800
ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EVALUATOR = keccak(b"fedoracle-evaluator-v1")
MAX_SAMPLES = 10_000
CLAIM_WINDOW = 7 * 24 * 3_600


def seal_secret(task_id: int, round_: int) -> bytes:
    """A stand-in X25519 secret for a round (the contract never checks it against the key)."""
    return h(f"seal-secret-{task_id}-{round_}")


def seal_key(task_id: int, round_: int) -> bytes:
    """The public seal key the tests' oracle gives a round (a label: the contract stores it as is)."""
    return h(f"seal-key-{task_id}-{round_}")


def h(label: str | bytes) -> bytes:
    """A deterministic bytes32 for a label."""
    return keccak(label.encode() if isinstance(label, str) else label)


def model_uri(model_hash: bytes) -> str:
    """A content-addressed pointer; always the same length for a bytes32 hash."""
    return "blob://" + model_hash.hex()


def make_testset(num_groups: int = 6, groups_per_round: int = 2, seed: int = 7) -> TestSetCommitment:
    rng = random.Random(seed)
    hashes = [h(f"test-group-{i}-{seed}") for i in range(num_groups)]
    uris = [f"blob://group-{i}" for i in range(num_groups)]
    return TestSetCommitment.create(hashes, groups_per_round, uris=uris, rng=rng)


@dataclass
class Params:
    """TaskParams, in the contract's field order."""

    oracle: str
    modelSpecHash: bytes = field(default_factory=lambda: h("spec"))
    initialModelHash: bytes = field(default_factory=lambda: h("model-0"))
    initialModelURI: str = field(default_factory=lambda: model_uri(h("model-0")))
    thresholdBp: int = 6_000
    targetAccuracyBp: int = 0
    maxRounds: int = 3
    maxSubmissionsPerRound: int = 0
    epsilonMilli: int = 8_000
    deltaE18: int = 10**13
    clipMicro: int = 1_000_000
    testSetRoot: bytes = ZERO32
    seedCommitment: bytes = ZERO32
    numGroups: int = 6
    groupsPerRound: int = 2
    roundDuration: int = ROUND_DURATION
    evaluationWindow: int = EVALUATION_WINDOW
    allowlistOnly: bool = False
    maxSamplesPerDevice: int = MAX_SAMPLES
    privacyMode: int = 0
    aggregationRule: int = 0
    aggregationParam: int = 0
    aggregationParam2: int = 0
    lossMarginBp: int = 0
    rootSetHash: bytes = ZERO32
    claimWindow: int = CLAIM_WINDOW

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def for_testset(cls, oracle, ts: TestSetCommitment, **kw) -> Params:
        kw.setdefault("maxRounds", ts.max_rounds)
        return cls(
            oracle=str(oracle),
            testSetRoot=ts.root,
            seedCommitment=ts.seed_commitment,
            numGroups=ts.num_groups,
            groupsPerRound=ts.groups_per_round,
            **kw,
        )


def submission(model_hash: bytes, payee, threshold_bp: int, num_samples: int) -> tuple:
    """The Submission struct tuple postVerdict takes."""
    return (model_hash, str(payee), threshold_bp, num_samples)


@contextlib.contextmanager
def reverts_with(error_cls, **inputs):
    """``ape.reverts`` plus strict checks ape skips: the error's type and *every* named input.

    ape.reverts ignores input names the error does not have and passes when a non-custom revert
    happens; here both fail the test.
    """
    with ape.reverts(error_cls, **inputs) as info:
        yield info
    err = info.value
    if type(err).__name__ == error_cls.__name__:
        actual = dict(err.inputs)
    else:
        actual = _decode_undecoded(err, error_cls)
    unknown = set(inputs) - set(actual)
    assert not unknown, f"{error_cls.__name__} has no inputs {unknown} (has {sorted(actual)})"
    for name, want in inputs.items():
        got = actual[name]
        if isinstance(want, str) and isinstance(got, str) and want.startswith("0x"):
            got, want = got.lower(), want.lower()
        assert got == want, f"{error_cls.__name__}.{name}: expected {want!r}, got {got!r}"


def _decode_undecoded(err, error_cls) -> dict:
    """Decodes a custom error ape's in-process provider left as a plain ContractLogicError.

    ape 0.8.51 (ape_test/provider.py, get_virtual_machine_error) only parses eth-tester's revert
    data when Python prints it as ``b'...'``; data containing a ``'`` byte prints as ``b"..."``
    and stays undecoded (e.g. ``FLTaskDeadlinePassed``, whose selector holds 0x27).
    """
    raw = getattr(err, "revert_message", "") or ""
    data = None
    if raw.startswith(("b'", 'b"')):
        data = literal_eval(raw)
    elif raw.startswith("0x"):
        data = bytes.fromhex(raw[2:])
    elif raw.startswith("custom error 0x"):
        # ape 0.8.51 on anvil, for reverting eth_calls: "custom error 0xSELECTOR: <raw args as text>"
        sel, _, args = raw[len("custom error 0x") :].partition(": ")
        data = bytes.fromhex(sel) + args.encode("latin-1")
    abi = error_cls.abi
    types = [i.canonical_type for i in abi.inputs]
    selector = keccak(f"{abi.name}({','.join(types)})".encode())[:4]
    assert data is not None and data[:4] == selector, f"expected {error_cls.__name__}, got {type(err).__name__}: {err}"
    values = abi_decode(types, data[4:])
    return {i.name: v for i, v in zip(abi.inputs, values, strict=True)}


def event_args(receipt, event) -> list[dict]:
    """The decoded arguments of every ``event`` log in ``receipt``."""
    return [dict(log.event_arguments) for log in receipt.decode_logs(event)]


def norm(v):
    """Normalise a decoded value for comparison (HexBytes -> bytes, addresses lower-case)."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str) and v.startswith("0x") and len(v) == 42:
        return v.lower()
    return v


def assert_event(receipt, event, expected: list[dict] | dict):
    """Asserts the exact list of ``event`` logs in ``receipt`` (all arguments, in order)."""
    if isinstance(expected, dict):
        expected = [expected]
    got = [{k: norm(v) for k, v in a.items()} for a in event_args(receipt, event)]
    want = [{k: norm(v) for k, v in e.items()} for e in expected]
    assert got == want, f"{event.name}: got {got}, want {want}"


class TaskDriver:
    """Drives one task through its rounds with the canonical honest moves."""

    def __init__(self, registry, chain, publisher, oracle, testset: TestSetCommitment, task_id: int):
        self.registry = registry
        self.chain = chain
        self.publisher = publisher
        self.oracle = oracle
        self.ts = testset
        self.task_id = task_id
        self.subs: dict[int, dict[str, tuple]] = {}  # round -> device -> submission tuple

    @property
    def state(self):
        return self.registry.getState(self.task_id)

    @property
    def round(self) -> int:
        return self.state.round

    def submit(
        self, device, *, payee=None, model_hash=None, num_samples=100, max_threshold_bp=BP, epsilon_milli=0, **tx
    ):
        r = self.round
        payee = payee or device
        model_hash = model_hash or h(f"model-{self.task_id}-{r}-{device.address}")
        threshold = self.state.thresholdBp
        receipt = self.registry.submit(
            self.task_id,
            model_hash,
            model_uri(model_hash),
            payee,
            num_samples,
            max_threshold_bp,
            epsilon_milli,
            sender=device,
            **tx,
        )
        self.subs.setdefault(r, {})[device.address] = submission(model_hash, payee, threshold, num_samples)
        return receipt

    def close(self, sender=None):
        return self.registry.closeSubmissions(self.task_id, sender=sender or self.oracle)

    def disclosure(self, round_=None):
        return [g.as_tuple() for g in self.ts.disclosure(round_ or self.round)]

    def disclose(self, sender=None):
        return self.registry.discloseTestData(
            self.task_id, self.ts.seed, self.disclosure(), sender=sender or self.publisher
        )

    def verdict(self, device, accuracy_bp: int, reason: int = REASON_OK, sender=None):
        sub = self.subs[self.round][device.address]
        return self.registry.postVerdict(
            self.task_id, device, sub, accuracy_bp, reason, EVALUATOR, sender=sender or self.oracle
        )

    def aggregate(self, accuracy_bp: int = 7_000, model_hash=None, sender=None, *, secret=None, next_key=None):
        r = self.round
        if model_hash is None:
            model_hash = (
                h(f"global-{self.task_id}-{r}")
                if self.state.accepted
                else bytes(self.registry.getTask(self.task_id).globalModelHash)
            )
        return self.registry.aggregate(
            self.task_id,
            model_hash,
            model_uri(model_hash),
            accuracy_bp,
            seal_secret(self.task_id, r) if secret is None else secret,
            seal_key(self.task_id, r + 1) if next_key is None else next_key,
            sender=sender or self.oracle,
        )

    def set_seal_key(self, key=None, sender=None):
        return self.registry.setSealKey(
            self.task_id, seal_key(self.task_id, self.round) if key is None else key, sender=sender or self.oracle
        )

    def finalize(self, accuracy_bp: int = 7_500, sender=None):
        return self.registry.finalize(
            self.task_id, accuracy_bp, h("report"), "blob://report", sender=sender or self.oracle
        )

    def run_round(self, accepted: list, rejected: list = (), accuracy_bp: int = 7_000):
        """Submit from every device, close, disclose, verdicts, aggregate."""
        for d in (*accepted, *rejected):
            self.submit(d)
        self.close()
        self.disclose()
        for d in accepted:
            self.verdict(d, 9_000)
        for d in rejected:
            self.verdict(d, 1_000)
        return self.aggregate(accuracy_bp)

    def warp(self, seconds: int):
        """Moves the clock so the next block's timestamp is ``seconds`` later than now."""
        self.chain.mine(timestamp=self.chain.pending_timestamp + seconds)

    def warp_past_deadline(self):
        self.chain.mine(timestamp=self.state.deadline + 1)


def next_block_at(chain, timestamp: int):
    """Makes the next block (the next transaction's) carry exactly `timestamp`.

    Works on the in-process chain and on anvil alike (anvil may give the next block its parent's
    timestamp, so "mine at T-1, then transact" is not enough there).
    """
    chain.pending_timestamp = timestamp


@contextlib.contextmanager
def provider(networks, name: str):
    """Runs the block on ape's `name` provider ("test": in-process, "foundry": anvil).

    Reuses the session's provider when it is already that one, else starts one and stops it
    after (so no anvil outlives the test).
    """
    active = networks.active_provider
    if active is not None and active.name == name:
        yield active
        return
    with networks.ethereum.local.use_provider(name, disconnect_after=True) as p:
        yield p


# Hypothesis profiles for the stateful test (test_stateful.py reads them with stateful_settings();
# nothing is loaded globally, so other suites keep their own settings): `default` (>= 200
# examples, the normal run), `ci-long` (thorough) and `quick`, picked with HYPOTHESIS_PROFILE.
_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
STATEFUL_PROFILES = {
    # derandomize: the suite's run is reproducible, and its check that every function succeeded
    # at least once cannot fail by chance (a random run once had no successful announceThreshold);
    # the ci-long profile keeps exploring new sequences.
    "default": settings(max_examples=200, stateful_step_count=25, derandomize=True, **_common),
    "ci-long": settings(max_examples=2_000, stateful_step_count=50, **_common),
    "quick": settings(max_examples=30, stateful_step_count=20, **_common),
}


def stateful_settings() -> settings:
    """The stateful test's settings: HYPOTHESIS_PROFILE if it names one of ours, else `default`."""
    return STATEFUL_PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "default"), STATEFUL_PROFILES["default"])
