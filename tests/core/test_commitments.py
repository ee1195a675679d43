"""Test-set commitments: Merkle proofs and the seed's shuffle agree with the contract."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.commitments import (
    TestSetCommitment,
    leaf_hash,
    merkle_levels,
    merkle_proof,
    shuffled_index,
    verify_proof,
)
from tests.conftest import run


# n up to 96 covers lists below, at and above every power of two the cycle walk steps over
# (a larger n only makes each example slower); the contract is checked against this in test_views.
@settings(max_examples=60)
@given(n=st.integers(1, 96), seed=st.binary(min_size=32, max_size=32))
def test_shuffle_is_a_permutation(n, seed):
    assert sorted(shuffled_index(i, n, seed) for i in range(n)) == list(range(n))


@given(leaves=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40, unique=True), data=st.data())
def test_every_leaf_proves_against_the_root(leaves, data):
    levels = merkle_levels(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    assert verify_proof(merkle_proof(levels, i), levels[-1][0], leaves[i])
    other = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b not in leaves))
    assert not verify_proof(merkle_proof(levels, i), levels[-1][0], other)


def test_rounds_use_disjoint_groups():
    tc = TestSetCommitment.create([secrets.token_bytes(32) for _ in range(12)], 3)
    used = [i for r in range(1, tc.max_rounds + 1) for i in tc.round_indices(r)]
    assert sorted(used) == list(range(12))
    with pytest.raises(ValueError):
        tc.round_indices(tc.max_rounds + 1)


def test_save_and_load(tmp_path):
    tc = TestSetCommitment.create([secrets.token_bytes(32) for _ in range(5)], 2, uris=[f"u{i}" for i in range(5)])
    tc.save(tmp_path / "s.json")
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o600
    back = TestSetCommitment.load(tmp_path / "s.json")
    assert back.root == tc.root and back.seed == tc.seed and back.uris == tc.uris


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5000), seed=st.binary(min_size=32, max_size=32), data=st.data())
def test_python_and_solidity_agree(registry, n, seed, data):
    """Same shuffle and same leaf hash on both sides of the protocol (anvil)."""
    i = data.draw(st.integers(0, n - 1))
    salt, group = data.draw(st.binary(min_size=32, max_size=32)), data.draw(st.binary(min_size=32, max_size=32))
    fns = registry.contract.functions

    async def check():
        assert await fns.shuffledIndex(i, n, seed).call() == shuffled_index(i, n, seed)
        assert await fns.testGroupLeaf(i, salt, group).call() == leaf_hash(i, salt, group)

    run(check())
