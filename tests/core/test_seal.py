"""Sealed submissions (fedoracle.seal), attacked as a copier would: other addresses, rounds, keys, edits."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.errors import ModelRejected, Reason
from fedoracle.seal import (
    MAGIC,
    OVERHEAD,
    SealContext,
    SealInvalid,
    open_sealed,
    public_key,
    round_keypair,
    seal,
)

ORACLE_KEY = bytes(range(32))
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
VICTIM = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
COPIER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CTX = SealContext(31337, REGISTRY, 1, 1, VICTIM)
SECRET, PUBLIC = round_keypair(ORACLE_KEY, CTX.chain_id, REGISTRY, 1, 1)
UPDATE = b"the victim's canonical update bytes " * 40


def test_the_oracle_opens_what_the_device_sealed():
    blob = seal(UPDATE, PUBLIC, CTX)
    assert len(blob) == len(UPDATE) + OVERHEAD and blob.startswith(MAGIC)
    assert UPDATE not in blob  # nobody else reads the weights before the round is settled
    assert open_sealed(blob, SECRET, CTX) == UPDATE
    assert open_sealed(blob, "0x" + SECRET.hex(), CTX) == UPDATE  # the disclosed, hex form


def test_sealing_twice_gives_different_blobs():
    """Fresh ephemeral key and nonce from the OS each time: equal updates are not linkable."""
    assert seal(UPDATE, PUBLIC, CTX) != seal(UPDATE, PUBLIC, CTX)


@pytest.mark.parametrize(
    "field, value",
    [("device", COPIER), ("round", 2), ("task_id", 2), ("registry", COPIER), ("chain_id", 1)],
)
def test_a_copied_blob_does_not_open_for_anyone_else(field, value):
    """The copier resubmits the victim's exact hash and blob from its own address.

    Or into another round, task, registry or chain: it opens for nobody but the victim, so the
    copy is SEAL_INVALID.
    """
    blob = seal(UPDATE, PUBLIC, CTX)
    with pytest.raises(SealInvalid) as info:
        open_sealed(blob, SECRET, dataclasses.replace(CTX, **{field: value}))
    assert info.value.reason == Reason.SEAL_INVALID and isinstance(info.value, ModelRejected)
    assert open_sealed(blob, SECRET, CTX) == UPDATE  # and the victim's own still opens


def test_another_rounds_key_does_not_open_it():
    other, _ = round_keypair(ORACLE_KEY, CTX.chain_id, REGISTRY, 1, 2)
    with pytest.raises(SealInvalid):
        open_sealed(seal(UPDATE, PUBLIC, CTX), other, CTX)


def test_rebinding_the_header_to_the_copier_fails():
    """The copier swaps in its own ephemeral key (it cannot know the AEAD key the victim used)."""
    blob = bytearray(seal(UPDATE, PUBLIC, CTX))
    mine = seal(b"x", PUBLIC, dataclasses.replace(CTX, device=COPIER))
    blob[len(MAGIC) : len(MAGIC) + 32] = mine[len(MAGIC) : len(MAGIC) + 32]
    for ctx in (CTX, dataclasses.replace(CTX, device=COPIER)):
        with pytest.raises(SealInvalid):
            open_sealed(bytes(blob), SECRET, ctx)


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_altered_byte_is_refused(position, flip):
    blob = bytearray(seal(UPDATE[:100], PUBLIC, CTX))
    blob[position % len(blob)] ^= flip
    with pytest.raises(SealInvalid):
        open_sealed(bytes(blob), SECRET, CTX)


@pytest.mark.parametrize(
    "blob",
    [b"", b"not sealed", UPDATE, MAGIC + bytes(32 + 12), MAGIC + bytes(32) + bytes(12) + bytes(40)],
    ids=["empty", "text", "plaintext", "header-only", "low-order-point"],
)
def test_what_is_not_a_sealed_blob_is_refused(blob):
    with pytest.raises(SealInvalid):
        open_sealed(blob, SECRET, CTX)


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=2_000), task=st.integers(1, 2**64), round_=st.integers(1, 2**16 - 1))
def test_round_trip(plaintext, task, round_):
    ctx = dataclasses.replace(CTX, task_id=task, round=round_)
    secret, public = round_keypair(ORACLE_KEY, ctx.chain_id, REGISTRY, task, round_)
    assert open_sealed(seal(plaintext, public, ctx), secret, ctx) == plaintext


def test_round_keys_are_derived_per_round_and_restart_safe():
    pairs = {
        (chain, task, rnd): round_keypair(ORACLE_KEY, chain, REGISTRY, task, rnd)
        for chain in (1, 31337)
        for task in (1, 2)
        for rnd in (1, 2, 3)
    }
    assert len({secret for secret, _ in pairs.values()}) == len(pairs)  # every round its own key
    assert round_keypair(ORACLE_KEY, 31337, REGISTRY, 1, 1) == (SECRET, PUBLIC)  # a restart derives the same
    assert public_key(SECRET) == PUBLIC
    assert round_keypair(bytes(32), 31337, REGISTRY, 1, 1)[0] != SECRET  # another oracle, other keys


def test_a_zero_seal_key_is_refused_before_anything_is_sealed():
    with pytest.raises(ValueError, match="no seal key"):
        seal(UPDATE, bytes(32), CTX)
