"""Pure helpers shared with fedoracle.commitments: shuffle, leaves, submission commitments."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedoracle.commitments import leaf_hash, shuffled_index, submission_commitment

from fltask_harness import h, reverts_with

seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), count=st.one_of(st.integers(1, 300), st.integers(1, 2**32 - 1)), seed=seeds)
def test_shuffled_index_matches_python(registry, data, count, seed):
    index = data.draw(st.integers(0, count - 1))
    assert registry.shuffledIndex(index, count, seed) == shuffled_index(index, count, seed)


@pytest.mark.parametrize("count", [1, 2, 7, 33])
def test_shuffle_is_a_permutation(registry, count):
    seed = h(f"perm-{count}")
    image = [registry.shuffledIndex(i, count, seed) for i in range(count)]
    assert sorted(image) == list(range(count))
    assert image == [shuffled_index(i, count, seed) for i in range(count)]


@pytest.mark.parametrize("index,count,name", [(0, 0, "index"), (5, 5, "index"), (6, 5, "index"), (0, 2**32, "count")])
def test_shuffled_index_rejects_out_of_range(registry, index, count, name):
    with reverts_with(registry.FLTaskInvalidParameter, name=name):
        registry.shuffledIndex(index, count, h("s"))


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, 2**32 - 1), salt=seeds, group=seeds)
def test_group_leaf_matches_python(registry, index, salt, group):
    assert bytes(registry.testGroupLeaf(index, salt, group)) == leaf_hash(index, salt, group)


@settings(max_examples=25, deadline=None)
@given(mh=seeds, payee=st.binary(min_size=20, max_size=20), thr=st.integers(0, 2**16 - 1), n=st.integers(0, 2**32 - 1))
def test_submission_commitment_matches_python(registry, mh, payee, thr, n):
    """The contract against the one encoding every role calls (the oracle's mirror check included)."""
    addr = "0x" + payee.hex()
    assert bytes(registry.submissionCommitment(mh, addr, thr, n)) == submission_commitment(mh, addr, thr, n)
