"""The blob server over real TCP: round trips, every refusal of bad input, and the HTTP client.

Two servers are started per module as subprocesses (``fedoracle blobs serve --port 0``), one open
and one with an upload token; a small in-thread aiohttp app plays a flaky or hostile server for
the client's retry and size-limit checks. No mocks.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from aiohttp import web

from fedoracle.blobstore import (
    BlobStoreUnavailable,
    BlobUploadRefused,
    HttpBlobStore,
    LocalBlobStore,
    open_store,
)
from fedoracle.codec import ModelSpec, decode, encode
from fedoracle.errors import BlobHashMismatch, BlobNotFound, ModelRejected, Reason
from fedoracle.hashing import content_hash
from fedoracle.procs import stop_process_group

MAX_BYTES = 64 * 1024
TOKEN = "s3cret-token"
START_TIMEOUT = 60.0


class Server:
    """A running blob server: its URL and root folder."""

    def __init__(self, url: str, root: Path, token: str | None) -> None:
        self.url = url
        self.root = root
        self.token = token
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def request(
        self, method: str, path: str, body=None, headers: dict | None = None, chunked: bool = False
    ) -> tuple[int, bytes]:
        """Sends one raw request (path sent exactly as given) and returns status and body."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def files(self) -> set[str]:
        """Every file under the root, temporary ones included."""
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}

    def client(self, **kwargs) -> HttpBlobStore:
        return HttpBlobStore(self.url, token=self.token, **kwargs)


@contextmanager
def blob_server(root: Path, *, token: str | None = None, max_bytes: int = MAX_BYTES) -> Iterator[Server]:
    """Runs ``fedoracle blobs serve`` on a free loopback port until the block ends."""
    args = [
        sys.executable,
        "-m",
        "fedoracle.cli",
        "blobs",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--root",
        str(root),
        "--max-bytes",
        str(max_bytes),
    ]
    env = {k: v for k, v in os.environ.items() if k != "FEDORACLE_BLOB_TOKEN"}
    if token:
        env["FEDORACLE_BLOB_TOKEN"] = token  # the token travels by environment, as documented
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, start_new_session=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if "listening on " not in line:
            proc.kill()
            raise RuntimeError(f"blob server did not start: {line!r} {proc.communicate(timeout=30)[1]}")
        url = line.split("listening on ", 1)[1].split()[0]
        yield Server(url, root, token)
    finally:
        stop_process_group(proc, 30)
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with blob_server(tmp_path_factory.mktemp("open-server")) as s:
        yield s


@pytest.fixture(scope="module")
def token_server(tmp_path_factory) -> Iterator[Server]:
    with blob_server(tmp_path_factory.mktemp("token-server"), token=TOKEN) as s:
        yield s


def blob_path(digest: str) -> str:
    return f"/blobs/{digest}"


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, MAX_BYTES])
@pytest.mark.parametrize("which", ["server", "token_server"])
def test_round_trip(request, which, size):
    srv: Server = request.getfixturevalue(which)
    data = os.urandom(size)
    store = srv.client()
    digest = store.put(data)
    assert digest == content_hash(data)
    assert store.get(digest) == data
    assert store.put(data) == digest  # idempotent
    assert LocalBlobStore(srv.root).get(digest) == data  # the server's root is a plain local store
    status, body = srv.request("HEAD", blob_path(digest))
    assert status == 200 and body == b""


def test_put_status_new_then_existing(token_server):
    data = b"status codes " + os.urandom(8)
    digest = content_hash(data)
    first = token_server.request("PUT", blob_path(digest), data, token_server.auth())
    again = token_server.request("PUT", blob_path(digest), data, token_server.auth())
    assert (first[0], again[0]) == (201, 200)


def test_downloads_need_no_token(token_server):
    digest = token_server.client().put(b"public once stored")
    assert HttpBlobStore(token_server.url).get(digest) == b"public once stored"


# --- bad input at the server ---------------------------------------------------------------------

GOOD = b"good bytes"
OTHER = b"other bytes"
BIG = b"x" * (MAX_BYTES + 1)

# name, method, path, body, headers ("auth": send the right token), chunked, expected status
BAD_REQUESTS = [
    ("hash mismatch", "PUT", blob_path(content_hash(GOOD)), OTHER, "auth", False, 422),
    ("oversized", "PUT", blob_path(content_hash(BIG)), BIG, "auth", False, 413),
    ("oversized chunked", "PUT", blob_path(content_hash(BIG)), [BIG[:40000], BIG[40000:]], "auth", True, 413),
    ("much too large, declared", "PUT", blob_path(content_hash(BIG * 4)), BIG * 4, "auth", False, 413),
    ("uppercase hash", "PUT", blob_path("0x" + content_hash(GOOD)[2:].upper()), GOOD, "auth", False, 400),
    ("short hash", "PUT", blob_path(content_hash(GOOD)[:-2]), GOOD, "auth", False, 400),
    ("no 0x", "PUT", blob_path(content_hash(GOOD)[2:]), GOOD, "auth", False, 400),
    ("encoded path", "PUT", "/blobs/..%2F..%2Fetc%2Fpasswd", GOOD, "auth", False, 400),
    ("dot segments", "PUT", "/blobs/../../etc/passwd", GOOD, "auth", False, 400),
    ("nested path", "PUT", f"/blobs/{content_hash(GOOD)[2:4]}/{content_hash(GOOD)}", GOOD, "auth", False, 400),
    ("empty name", "PUT", "/blobs/", GOOD, "auth", False, 400),
    ("no token", "PUT", blob_path(content_hash(GOOD)), GOOD, {}, False, 401),
    ("wrong token", "PUT", blob_path(content_hash(GOOD)), GOOD, {"Authorization": "Bearer nope"}, False, 403),
    ("not bearer", "PUT", blob_path(content_hash(GOOD)), GOOD, {"Authorization": f"Basic {TOKEN}"}, False, 401),
    ("get malformed", "GET", "/blobs/..%2F..%2Fetc%2Fpasswd", None, {}, False, 400),
    ("get uppercase", "GET", blob_path("0x" + "AB" * 32), None, {}, False, 400),
    ("get missing", "GET", blob_path("0x" + "ab" * 32), None, {}, False, 404),
]


@pytest.mark.parametrize(
    "name,method,path,body,headers,chunked,expected", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_request_is_refused_and_nothing_stored(token_server, name, method, path, body, headers, chunked, expected):
    srv = token_server
    known = srv.client().put(b"still served")
    before = srv.files()
    status, reply = srv.request(method, path, body, srv.auth() if headers == "auth" else headers, chunked)
    assert status == expected, reply
    assert b"error" in reply  # a clear JSON reason
    assert srv.files() == before  # nothing stored, no temporary file left
    # the server keeps serving
    assert srv.request("GET", "/healthz")[0] == 200
    assert srv.client().get(known) == b"still served"
    data = b"after " + name.encode()
    assert srv.client().put(data) == content_hash(data)


# --- the client ----------------------------------------------------------------------------------


def test_client_refuses_tampered_download(server):
    store = server.client()
    digest = store.put(b"honest weights")
    path = LocalBlobStore(server.root).path(digest)
    path.write_bytes(b"tampered weights")  # the server serves whatever is in its folder
    with pytest.raises(BlobHashMismatch) as err:
        store.get(digest)
    assert err.value.reason == Reason.HASH_MISMATCH


def test_client_errors(server, token_server):
    with pytest.raises(BlobNotFound):
        server.client().get("0x" + "cd" * 32)
    with pytest.raises(ValueError, match="malformed content hash"):
        server.client().get("0x" + "CD" * 32)
    digest = server.client().put(b"y" * 5000)
    with pytest.raises(ModelRejected) as err:
        server.client().get(digest, max_bytes=4999)
    assert err.value.reason == Reason.TOO_LARGE
    assert server.client().get(digest, max_bytes=5000) == b"y" * 5000
    with pytest.raises(ModelRejected) as err:
        server.client().put(BIG)
    assert err.value.reason == Reason.TOO_LARGE
    with pytest.raises(BlobUploadRefused) as refused:
        HttpBlobStore(token_server.url).put(b"no token")
    assert refused.value.status == 401
    with pytest.raises(BlobUploadRefused) as refused:
        HttpBlobStore(token_server.url, token="wrong").put(b"bad token")
    assert refused.value.status == 403


def test_client_unreachable_is_not_a_verdict():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = HttpBlobStore(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=5)
    with pytest.raises(BlobStoreUnavailable) as err:
        store.get("0x" + "ab" * 32)
    assert not isinstance(err.value, ModelRejected)  # an outage is never scored against a device
    with pytest.raises(BlobStoreUnavailable):
        store.put(b"x")


class Hostile:
    """An in-thread aiohttp server that fails on purpose: 503 a few times, or endless bytes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.hits = 0
        self.data = b"served after failures"
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def flaky(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.hits <= self.failures:
            return web.Response(status=503)
        return web.Response(body=self.data)

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked, no Content-Length
        await resp.prepare(request)
        try:
            while self.sent < 64 * 1024 * 1024:
                await resp.write(b"z" * 16384)
                self.sent += 16384
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    def __enter__(self) -> str:
        app = web.Application()
        app.router.add_get("/blobs/" + content_hash(b"served after failures"), self.flaky)
        app.router.add_get("/blobs/{digest}", self.endless)
        self.runner = web.AppRunner(app)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.runner.setup(), self.loop).result(30)
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self.loop).result(30)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.mark.parametrize("failures,retries,ok", [(2, 3, True), (3, 3, True), (4, 3, False)])
def test_client_retries_transient_errors(failures, retries, ok):
    hostile = Hostile(failures)
    with hostile as url:
        store = HttpBlobStore(url, retries=retries, backoff=0.01)
        digest = content_hash(hostile.data)
        if ok:
            assert store.get(digest) == hostile.data
        else:
            with pytest.raises(BlobStoreUnavailable):
                store.get(digest)
        assert hostile.hits == min(failures + 1, retries + 1)


def test_client_stops_reading_past_max_bytes():
    hostile = Hostile(0)
    with hostile as url:
        with pytest.raises(ModelRejected) as err:
            HttpBlobStore(url).get("0x" + "ef" * 32, max_bytes=100_000)
        assert err.value.reason == Reason.TOO_LARGE
        deadline = time.monotonic() + 30
        while hostile.sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
            last = hostile.sent
            time.sleep(0.2)
            if hostile.sent == last:
                break
    assert hostile.sent < 64 * 1024 * 1024  # the client hung up long before the 64 MiB


# --- end to end through open_store ---------------------------------------------------------------


def test_open_store_http_with_model_bytes(token_server, monkeypatch):
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal((5, 4)).astype("float32"), rng.standard_normal(4).astype("float32")]
    spec = ModelSpec.from_weights("small_cnn", (5,), 4, weights, max_bytes=MAX_BYTES)
    data = encode(weights, spec)

    monkeypatch.setenv("FEDORACLE_BLOB_TOKEN", TOKEN)
    store = open_store(token_server.url + "/")
    assert isinstance(store, HttpBlobStore)
    spec_hash = store.put(spec.canonical_json())
    model_hash = store.put(data)
    assert spec_hash == spec.spec_hash
    pointer = store.uri(model_hash)
    assert pointer == f"{token_server.url}/blobs/{model_hash}"

    # another host opens the same store from the on-chain pointer's base, without a token
    monkeypatch.delenv("FEDORACLE_BLOB_TOKEN")
    reader = open_store(pointer.rsplit("/", 1)[0])
    decoded = decode(reader.get(model_hash, max_bytes=spec.max_bytes), spec, expected_hash=model_hash)
    for got, want in zip(decoded, weights, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(BlobUploadRefused):
        reader.put(b"readers cannot upload")
