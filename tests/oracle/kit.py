"""Helpers of the oracle tests: tasks, good and bad model blobs, submissions, verdicts.

They publish tasks with a chosen spec, craft good and bad model blobs, submit from dev
accounts, and read verdicts back from the chain.

Blobs are written to a real content-addressed folder and submitted with real transactions; the
"bad" ones are crafted bytes of each kind the oracle must reject (no mocks anywhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, ChainEvent, Phase, TaskParams, TaskRegistry, dev_account
from fedoracle.codec import FORMAT, ModelSpec, encode_with_hash, header_metadata
from fedoracle.hashing import content_hash
from fedoracle.hidden import HiddenTestSet
from fedoracle.units import BP

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Models:
    """The task model of every oracle test and two really trained versions of it."""

    spec: ModelSpec
    initial: list[np.ndarray]
    trained: list[list[np.ndarray]]


@dataclass
class Published:
    task_id: int
    block: int
    hidden: HiddenTestSet
    spec_hash: str


async def publish(
    registry: TaskRegistry,
    blobs: LocalBlobStore,
    vault: Path,
    models: Models,
    mnist,
    *,
    oracle: str,
    rounds: int = 1,
    cap: int = 0,
    threshold_bp: int = 5000,
    test_examples: int = 300,
    groups_per_round: int = 2,
    spec_bytes: bytes | None = None,
    round_duration: int = 3600,
    reward_wei: int = 10**17,
    seed: int = 0,
    key_round: bool = True,
    **task: Any,
) -> Published:
    """Publishes a task on ``models.spec`` (or on raw ``spec_bytes``, e.g. a non-canonical spec).

    With ``key_round`` round 1 is keyed at once from the oracle's account (see
    :func:`key_round_as_oracle`), so devices can seal before the oracle starts. ``task`` sets
    further :class:`~fedoracle.chain.TaskParams` fields (e.g. ``aggregation``, ``loss_margin_bp``).
    """
    from fedoracle.learning.data import encode_group, hidden_test_groups

    spec_hash = blobs.put(spec_bytes if spec_bytes is not None else models.spec.canonical_json())
    data, init_hash = encode_with_hash(models.initial, models.spec)
    blobs.put(data)
    groups = [
        encode_group(x, y)
        for x, y in hidden_test_groups(
            mnist.x_test, mnist.y_test, test_examples=test_examples, num_groups=rounds * groups_per_round, seed=seed
        )
    ]
    hidden = HiddenTestSet.create(vault, groups, groups_per_round)
    params = TaskParams(
        oracle=oracle,
        model_spec_hash=spec_hash,
        initial_model_hash=init_hash,
        initial_model_uri=blobs.uri(init_hash),
        threshold_bp=threshold_bp,
        test_set_root=hidden.commitment.root,
        seed_commitment=hidden.commitment.seed_commitment,
        num_groups=hidden.commitment.num_groups,
        groups_per_round=groups_per_round,
        max_rounds=rounds,
        max_submissions_per_round=cap,
        round_duration=round_duration,
        evaluation_window=3600,
        **task,
    )
    task_id, receipt = await registry.publish(params, reward_wei)
    if key_round:
        await key_round_as_oracle(registry, oracle, task_id)
    return Published(task_id, receipt["blockNumber"], hidden, spec_hash)


async def key_round_as_oracle(registry: TaskRegistry, oracle: str, task_id: int) -> None:
    """Sets round 1's seal key from the oracle's dev account, exactly as the oracle would.

    For tests whose devices submit before the oracle runs: the key is the one the oracle derives
    (:func:`fedoracle.seal.round_keypair`), so the oracle finds it set and opens every submission.
    """
    from fedoracle.seal import round_keypair

    index = next(i for i in range(20) if dev_account(i).address.lower() == oracle.lower())
    me = TaskRegistry(Chain(registry.chain.rpc_url, dev_account(index)), registry.address)
    chain_id = await me.chain.chain_id()
    _, public = round_keypair(bytes(dev_account(index).key), chain_id, registry.address, task_id, 1)
    await me.set_seal_key(task_id, public)
    await me.chain.close()


# --- blobs ---------------------------------------------------------------------------------------


def _raw(tensors: list[np.ndarray], spec_hash: str) -> bytes:
    from safetensors.numpy import save

    return save(
        {f"w{i:04d}": np.ascontiguousarray(t) for i, t in enumerate(tensors)},
        metadata=header_metadata(FORMAT, spec_hash),
    )


_variants = iter(range(1, 1 << 30))


def make_blob(
    kind: str,
    blobs: LocalBlobStore,
    models: Models,
    global_weights: list[np.ndarray],
    which: int = 0,
    variant: int | None = None,
) -> str:
    """Stores a blob of ``kind`` and returns the content hash to submit.

    Kinds: good, unsealed (the same, for a submission that skips sealing), nudged (one weight
    moved), noise, nan, wrong_shape, wrong_dtype, wrong_spec, garbage, oversized, hash_mismatch,
    missing.

    Every call makes a different update: seeded noise of half the update's RMS per tensor, so that
    two of them are as far apart as honest devices' updates (cosine about 0.8) and the copy rule
    (:mod:`fedoracle.learning.copies`) takes neither for a copy of the other; pass ``variant`` to
    get the same bytes again (0: the trained update itself).
    """
    spec = models.spec
    delta = [w - g for w, g in zip(models.trained[which], global_weights, strict=True)]
    variant = next(_variants) if variant is None else variant
    if variant:  # a distinct update of about the same quality: seeded noise at half the RMS
        jitter = np.random.default_rng(variant)
        delta = [(d + jitter.normal(0, 0.5 * float(np.sqrt(np.mean(d**2))), d.shape)).astype(d.dtype) for d in delta]
    rng = np.random.default_rng([variant, len(kind)])
    if kind in ("good", "unsealed"):
        return blobs.put(encode_with_hash(delta, spec)[0])
    if kind == "nudged":  # the update with one weight moved: a near-copy
        moved = [d.copy() for d in delta]
        moved[0].flat[0] += 1e-3
        return blobs.put(encode_with_hash(moved, spec)[0])
    if kind == "noise":  # right shape, useless values: evaluated and found below the threshold
        return blobs.put(
            encode_with_hash([rng.normal(0, 50, g.shape).astype(g.dtype) for g in global_weights], spec)[0]
        )
    if kind == "nan":
        bad = [d.copy() for d in delta]
        bad[0].flat[3] = np.nan
        return blobs.put(encode_with_hash(bad, spec)[0])
    if kind == "wrong_shape":
        bad = [d.copy() for d in delta]
        bad[-1] = np.zeros(bad[-1].shape[0] + 1, dtype=bad[-1].dtype)
        return blobs.put(_raw(bad, spec.spec_hash))
    if kind == "wrong_dtype":
        return blobs.put(_raw([d.astype(np.float64) for d in delta], spec.spec_hash))
    if kind == "wrong_spec":  # well-formed, but claims another model spec
        return blobs.put(_raw(delta, "0x" + "ab" * 32))
    if kind == "garbage":
        return blobs.put(secrets.token_bytes(4096))
    if kind == "oversized":
        return blobs.put(secrets.token_bytes(spec.max_bytes + 1))
    if kind == "hash_mismatch":  # the store serves other bytes under the submitted hash
        good = encode_with_hash(delta, spec)[0]
        digest = content_hash(good + b"\0")
        path = blobs._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(good)
        return digest
    if kind == "missing":
        return "0x" + secrets.token_hex(32)
    raise ValueError(kind)


def good_weights(models: Models, which: int = 0) -> list[np.ndarray]:
    return models.trained[which]


async def seal_key_of(registry: TaskRegistry, task_id: int, round_: int, timeout: float = 60.0) -> str:
    """The round's seal key, waiting (up to ``timeout`` s) for the oracle to set it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        key = (await registry.get_round(task_id, round_))["sealKey"]
        if int(key, 16):
            return str(key)
        if loop.time() > deadline:
            raise TimeoutError(f"task {task_id} round {round_} has no seal key after {timeout:.0f} s (no oracle?)")
        await asyncio.sleep(0.1)


async def submit(
    rpc_url: str,
    registry_address: str,
    account_index: int,
    task_id: int,
    model_hash: str,
    blobs: LocalBlobStore,
    num_samples: int = 100,
    *,
    sealed: bool = True,
) -> dict:
    """Submits the blob stored under ``model_hash`` from dev account ``account_index`` (its own payee).

    As a device does, the blob is sealed first to the open round's key for this account
    (:mod:`fedoracle.seal`; waiting for the oracle to set it) and the sealed blob's hash is
    submitted. A hash with no blob (``missing``) is submitted as it is; a blob whose bytes do not
    hash to its name (``hash_mismatch``) is sealed and stored under a wrong name again.
    ``sealed=False`` submits the stored bytes unsealed, as a device that skips sealing would.
    """
    from fedoracle.errors import BlobHashMismatch, BlobNotFound
    from fedoracle.seal import SealContext, seal

    device = TaskRegistry(Chain(rpc_url, dev_account(account_index)), registry_address)
    digest = model_hash
    if sealed:
        try:
            plaintext, mismatch = blobs.get(model_hash), False
        except BlobNotFound:
            plaintext, mismatch = None, False
        except BlobHashMismatch:
            plaintext, mismatch = blobs.path(model_hash).read_bytes(), True
        if plaintext is not None:
            round_ = (await device.get_state(task_id))["round"]
            key = await seal_key_of(device, task_id, round_)
            chain_id = await device.chain.chain_id()
            ctx = SealContext(chain_id, registry_address, task_id, round_, device.chain.address)
            box = seal(plaintext, key, ctx)
            if mismatch:  # the store serves the sealed bytes under a name they do not hash to
                digest = content_hash(box + b"\0")
                path = blobs.path(digest)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(box)
            else:
                digest = blobs.put(box)
    uri = f"file://{blobs.root}/{digest[2:4]}/{digest}"
    return await device.submit(task_id, digest, uri, device.chain.address, num_samples, max_threshold_bp=BP)


async def task_events(registry: TaskRegistry, task_id: int, from_block: int = 0) -> list[ChainEvent]:
    head = await registry.chain.block_number()
    return [e for e in await registry.get_events(from_block, head) if e.args.get("taskId") == task_id]


def verdict_counts(events: list[ChainEvent]) -> dict[tuple[int, str], int]:
    """How many ``VerdictPosted`` each (round, device) got."""
    counts: dict[tuple[int, str], int] = {}
    for e in events:
        if e.name == "VerdictPosted":
            key = (e.args["round"], e.args["device"].lower())
            counts[key] = counts.get(key, 0) + 1
    return counts


async def wait_phase(
    registry: TaskRegistry, task_id: int, phase: Phase, timeout: float, round_: int | None = None, alive=None
) -> dict:
    """Polls until the task reaches ``phase`` (and ``round_``); ``alive()`` False aborts early."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await registry.get_state(task_id)
        if state["phase"] == phase and (round_ is None or state["round"] == round_):
            return state
        if loop.time() > deadline:
            raise TimeoutError(f"task {task_id} still {state['phase'].name} round {state['round']} after {timeout}s")
        if alive is not None and not alive():
            raise RuntimeError(f"the oracle stopped while task {task_id} was {state['phase'].name}: {alive}")
        await asyncio.sleep(0.2)


def oracle_argv(
    rpc_url: str, registry: str, key: str, blobs: Path, vault: Path, state_dir: Path, from_block: int, *extra: str
) -> list[str]:
    """The command line a user runs: ``fedoracle oracle run ...``."""
    return [
        sys.executable,
        "-m",
        "fedoracle.cli",
        "oracle",
        "run",
        "--rpc-url",
        rpc_url,
        "--registry",
        registry,
        "--key",
        key,
        "--blob-store",
        str(blobs),
        "--vault",
        str(vault),
        "--state-dir",
        str(state_dir),
        "--from-block",
        str(from_block),
        "--poll-interval",
        "0.1",
        "--log-format",
        "json",
        "--static-threshold",
        *extra,
    ]


def spawn_oracle(
    argv: list[str], log_path: Path, marker: str, crash_at: str = "", *, own_group: bool = True
) -> subprocess.Popen:
    """Starts the oracle, by default in its own process group (so SIGKILL of the group takes its TFF worker).

    ``own_group=False`` starts it as a shell starts ``cmd &`` without job control: in the caller's
    group, so that only a signal to its own pid (``kill -9 $!``) reaches it.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", FEDORACLE_TEST_RUN=marker, FEDORACLE_CRASH_AT=crash_at)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            start_new_session=own_group,
        )


def user_argv(argv: list[str]) -> list[str]:
    """:func:`oracle_argv` as a user types it: ``./run fedoracle oracle run ...`` (``./run`` execs the CLI)."""
    assert argv[:3] == [sys.executable, "-m", "fedoracle.cli"], argv[:3]
    return [str(ROOT / "run"), "fedoracle", *argv[3:]]


def json_lines(path: Path) -> list[dict]:
    """The JSON log records in a log file (other lines, e.g. TensorFlow's, are skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
