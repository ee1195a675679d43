"""The local content-addressed blob store: round trips, verification on read, bad hashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedoracle.blobstore import LocalBlobStore, open_store
from fedoracle.errors import BlobHashMismatch, BlobNotFound, ModelRejected, Reason
from fedoracle.hashing import content_hash


@given(data=st.binary(max_size=4096))
def test_put_get_round_trip(tmp_path_factory, data):
    store = LocalBlobStore(tmp_path_factory.mktemp("blobs"))
    digest = store.put(data)
    assert digest == content_hash(data)
    assert store.get(digest) == data
    assert store.put(data) == digest  # idempotent


def test_tampered_blob_is_refused(blobs):
    digest = blobs.put(b"weights")
    path = blobs._path(digest)
    path.write_bytes(b"weightz")
    with pytest.raises(BlobHashMismatch) as err:
        blobs.get(digest)
    assert err.value.reason == Reason.HASH_MISMATCH


def test_missing_blob(blobs):
    with pytest.raises(BlobNotFound) as err:
        blobs.get("0x" + "ab" * 32)
    assert err.value.reason == Reason.MISSING_BLOB


@pytest.mark.parametrize("bad", ["../../etc/passwd", "0x" + "AB" * 32, "0x1234", "ab" * 32, "0x" + "zz" * 32])
def test_malformed_hash_is_refused_before_touching_disk(blobs, bad):
    with pytest.raises(ValueError, match="malformed content hash"):
        blobs.get(bad)


def test_size_limit_on_read(blobs):
    digest = blobs.put(b"x" * 1000)
    with pytest.raises(ModelRejected) as err:
        blobs.get(digest, max_bytes=999)
    assert err.value.reason == Reason.TOO_LARGE


def test_open_store_from_url(tmp_path):
    store = open_store(f"file://{tmp_path}/s")
    digest = store.put(b"a")
    assert store.uri(digest).startswith("file://")
    assert open_store(tmp_path / "s").get(digest) == b"a"
    with pytest.raises(ValueError, match="no blob store backend"):
        open_store("ftp://host/x")
