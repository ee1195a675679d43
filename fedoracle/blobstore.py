"""Content-addressed blob store: bytes in, keccak256 hash out; every read is verified.

The store is an untrusted transport: :meth:`BlobStore.get` re-hashes what it reads and refuses
bytes that do not match. Backends:

- :class:`LocalBlobStore`: a folder (a path or ``file://`` URL); the default.
- :class:`HttpBlobStore`: a blob server (``fedoracle blobs serve``, :mod:`relay.blobserver`)
  at an ``http://`` or ``https://`` URL, for roles on other hosts. Uploads carry the token from
  ``FEDORACLE_BLOB_TOKEN`` when it is set.

:func:`open_store` picks the backend by URL scheme. Adding a backend (S3-, IPFS-style, ...):

1. Write a class with the three :class:`BlobStore` methods. ``put`` returns
   :func:`~fedoracle.hashing.content_hash` of the bytes (whatever key the backend uses inside);
   ``get`` re-hashes what it fetched, raises :class:`~fedoracle.errors.BlobNotFound` /
   :class:`~fedoracle.errors.BlobHashMismatch`, honours ``max_bytes`` with
   ``ModelRejected(Reason.TOO_LARGE, ...)`` without fetching more than the limit, and raises
   :class:`BlobStoreUnavailable` (never a ``ModelRejected``) when the backend cannot be reached,
   so that an outage is not scored against a device; ``uri`` returns a URL other hosts can open
   with :func:`open_store` plus the hash (it is recorded on-chain).
2. Register it: ``register_backend("s3", lambda url: S3BlobStore(url))``, at import time of the
   module that defines it; import that module before the role opens its store.

Methods are synchronous (roles call them from threads, or from coroutines via ``to_thread``) and
must be safe to call from several threads at once.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from fedoracle.errors import (
    BlobHashMismatch,
    BlobNotFound,
    BlobStoreUnavailable,
    BlobUploadRefused,
    ModelRejected,
    Reason,
)
from fedoracle.hashing import content_hash, is_content_hash
from fedoracle.retry import Backoff, retry_sync

if TYPE_CHECKING:
    import requests

T = TypeVar("T")


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

    def path(self, digest: str) -> Path:
        """The file a blob is (or would be) kept in.

        Raises:
            ValueError: for a malformed hash (so the result always lies under ``root``).
        """
        return self._path(_checked(digest))

    def put(self, data: bytes) -> str:
        """Stores ``data`` (written atomically; a blob already there is left alone) and returns its content hash.

        Args:
            data: the blob's bytes.
        """
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
        """Reads the blob stored under ``digest`` and verifies its hash.

        Args:
            digest: the blob's content hash (``0x`` + 64 lowercase hex).
            max_bytes: the largest blob to accept (``None``: no limit); checked before reading.

        Raises:
            ValueError: malformed hash.
            BlobNotFound: no blob under ``digest``.
            ModelRejected: ``TOO_LARGE`` past ``max_bytes``.
            BlobHashMismatch: the file's bytes do not hash to ``digest``.
        """
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
        """The blob's ``file://`` URL (an absolute path under ``root``).

        Args:
            digest: the blob's content hash.

        Raises:
            ValueError: malformed hash.
        """
        return f"file://{self._path(_checked(digest))}"

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"


class _Transient(BlobStoreUnavailable):
    """An attempt failed in a way worth retrying (connection, timeout, 5xx, 429)."""


_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 256 * 1024


def _detail(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.reason))
    except ValueError:
        return response.text[:200] or str(response.reason)


class HttpBlobStore:
    """A blob server over HTTP(S): ``PUT``/``GET <url>/blobs/<hash>``; every download verified.

    Args:
        url: The server's base URL, e.g. ``http://10.0.0.5:8600`` (a trailing ``/blobs`` is fine).
        token: Upload token sent as ``Authorization: Bearer <token>`` (``None``: none).
        timeout: Seconds to wait for a connection and between bytes read.
        retries: Extra attempts after a transient failure (connection, timeout, 5xx, 429).
        backoff: Seconds before the first retry; doubles after each.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout: float = 30.0, retries: int = 3, backoff: float = 0.25
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) blob server URL: {url!r}")
        path = parts.path.rstrip("/")
        if path.endswith("/blobs"):
            path = path[: -len("/blobs")]
        self.base_url = f"{parts.scheme}://{parts.netloc}{path}"
        self.token = token or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            import requests  # only HTTP users pay for the import

            session = self._local.session = requests.Session()
        return session

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        import requests

        transient = (_Transient, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        try:
            return retry_sync(attempt, backoff=Backoff(self.backoff), retry_on=transient, attempts=self.retries + 1)
        except transient as exc:
            raise BlobStoreUnavailable(f"{what}: {exc} (after {self.retries + 1} attempts)") from exc

    def put(self, data: bytes) -> str:
        """Uploads ``data`` under its content hash and returns the hash.

        Raises:
            ModelRejected: ``TOO_LARGE`` when the server's size limit refuses it.
            BlobUploadRefused: missing or wrong token, or any other refusal.
            BlobStoreUnavailable: the server could not be reached after the retries.
        """
        digest = content_hash(data)
        url = self.uri(digest)
        headers = {"Content-Type": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"

        def attempt() -> None:
            with self._session().put(url, data=data, headers=headers, timeout=self.timeout) as resp:
                if resp.status_code in (200, 201):
                    return None
                if resp.status_code in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {resp.status_code}")
                if resp.status_code == 413:
                    raise ModelRejected(Reason.TOO_LARGE, f"blob {digest}: {_detail(resp)}")
                raise BlobUploadRefused(resp.status_code, _detail(resp))

        self._retrying(f"PUT {url}", attempt)
        return digest

    def get(self, digest: str, *, max_bytes: int | None = None) -> bytes:
        """Downloads a blob, reading at most ``max_bytes`` (+1) bytes, and verifies its hash.

        Raises:
            ValueError: malformed hash (nothing is sent).
            BlobNotFound: the server has no such blob.
            ModelRejected: ``TOO_LARGE`` past ``max_bytes``.
            BlobHashMismatch: the bytes served do not hash to ``digest``.
            BlobStoreUnavailable: the server could not be reached after the retries.
        """
        url = self.uri(digest)

        def attempt() -> bytes:
            with self._session().get(url, stream=True, timeout=self.timeout) as resp:
                if resp.status_code == 404:
                    raise BlobNotFound(digest)
                if resp.status_code in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {resp.status_code}")
                if resp.status_code != 200:
                    raise BlobStoreUnavailable(f"GET {url}: HTTP {resp.status_code}: {_detail(resp)}")
                declared = resp.headers.get("Content-Length", "")
                if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ModelRejected(Reason.TOO_LARGE, f"blob {digest} is {declared} bytes > limit {max_bytes}")
                buf = bytearray()
                for chunk in resp.iter_content(_CHUNK):
                    buf += chunk
                    if max_bytes is not None and len(buf) > max_bytes:
                        raise ModelRejected(Reason.TOO_LARGE, f"blob {digest} is over the limit of {max_bytes} bytes")
                return bytes(buf)

        data = self._retrying(f"GET {url}", attempt)
        actual = content_hash(data)
        if actual != digest:
            raise BlobHashMismatch(digest, actual)
        return data

    def uri(self, digest: str) -> str:
        """The blob's URL on the server, ``<base_url>/blobs/<hash>``.

        Args:
            digest: the blob's content hash.

        Raises:
            ValueError: malformed hash.
        """
        return f"{self.base_url}/blobs/{_checked(digest)}"

    def __repr__(self) -> str:
        return f"HttpBlobStore({self.base_url!r}, token={'set' if self.token else 'none'})"


BackendFactory = Callable[[str], BlobStore]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Makes :func:`open_store` open ``<scheme>://...`` locations with ``factory(location)``."""
    _BACKENDS[scheme.lower()] = factory


def _open_http(url: str) -> BlobStore:
    return HttpBlobStore(url, token=os.environ.get("FEDORACLE_BLOB_TOKEN"))


register_backend("http", _open_http)
register_backend("https", _open_http)


def open_store(location: str | os.PathLike[str]) -> BlobStore:
    """Opens a blob store from a location: a folder path, ``file://`` URL or a registered scheme.

    ``http://`` and ``https://`` open an :class:`HttpBlobStore` (upload token from
    ``FEDORACLE_BLOB_TOKEN``).

    Raises:
        ValueError: for a scheme no backend serves.
    """
    text = os.fspath(location)
    if text.startswith("file://"):
        return LocalBlobStore(text[len("file://") :])
    if "://" not in text:
        return LocalBlobStore(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme in _BACKENDS:
        return _BACKENDS[scheme](text)
    raise ValueError(f"no blob store backend for {text!r}")
