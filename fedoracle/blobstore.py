"""Content-addressed blob store: bytes in, keccak256 hash out; every read is verified.

The store is an untrusted transport: :meth:`BlobStore.get` re-hashes what it reads and refuses
bytes that do not match. :class:`LocalBlobStore` (a folder) is the default; other backends (HTTP,
S3- or IPFS-style) implement the same three methods. :func:`open_store` picks one from a URL.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from fedoracle.errors import BlobHashMismatch, BlobNotFound, ModelRejected, Reason
from fedoracle.hashing import content_hash, is_content_hash


@runtime_checkable
class BlobStore(Protocol):
    """What a blob backend provides."""

    def put(self, data: bytes) -> str:
        """Stores ``data`` and returns its content hash."""

    def get(self, digest: str, *, max_bytes: int | None = None) -> bytes:
        """Returns the bytes stored under ``digest``, verified against it."""

    def uri(self, digest: str) -> str:
        """A pointer to the blob that another host can resolve (recorded on-chain)."""


def _checked(digest: str) -> str:
    if not is_content_hash(digest):
        raise ValueError(f"malformed content hash {digest!r} (want 0x + 64 lowercase hex)")
    return digest


class LocalBlobStore:
    """Blobs as files under a folder: ``<root>/<hash[2:4]>/<hash>``, written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.root / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = content_hash(data)
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest

    def get(self, digest: str, *, max_bytes: int | None = None) -> bytes:
        path = self._path(_checked(digest))
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        if max_bytes is not None and size > max_bytes:
            raise ModelRejected(Reason.TOO_LARGE, f"blob {digest} is {size} bytes > limit {max_bytes}")
        data = path.read_bytes()
        actual = content_hash(data)
        if actual != digest:
            raise BlobHashMismatch(digest, actual)
        return data

    def uri(self, digest: str) -> str:
        return f"file://{self._path(_checked(digest))}"

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"


def open_store(location: str | os.PathLike[str]) -> BlobStore:
    """Opens a blob store from a location: a folder path or ``file://`` URL.

    Raises:
        ValueError: for a scheme no backend serves.
    """
    text = os.fspath(location)
    if text.startswith("file://"):
        return LocalBlobStore(text[len("file://") :])
    if "://" not in text:
        return LocalBlobStore(text)
    raise ValueError(f"no blob store backend for {text!r}")
