"""The blob server: a content-addressed blob store over HTTP (aiohttp), for roles on other hosts.

Routes:

- ``PUT /blobs/<hash>`` stores the request body, but only when its keccak256 equals ``<hash>``
  (``201`` new, ``200`` already stored). Refusals store nothing: ``400`` malformed or path-like
  hash, ``401`` no token / ``403`` wrong token (when the server has one), ``413`` body over the
  size limit, ``422`` bytes that do not hash to the name.
- ``GET /blobs/<hash>`` (and ``HEAD``) serves the bytes (``404`` when absent, ``400`` malformed).
  The server does not vouch for them: clients verify every download (:class:`HttpBlobStore`).
- ``GET /healthz`` answers ``ok``.

Blobs are kept by a :class:`~fedoracle.blobstore.LocalBlobStore`, so the server's root folder is
also a valid local store. An upload is held in memory (at most ``max_bytes``) while it is hashed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Callable

from aiohttp import web

from fedoracle.blobstore import LocalBlobStore
from fedoracle.hashing import content_hash, is_content_hash

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the codec's default model size limit
_CHUNK = 256 * 1024

STORE = web.AppKey("store", LocalBlobStore)
MAX_BYTES = web.AppKey("max_bytes", int)
TOKEN = web.AppKey("token", str)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _digest(request: web.Request) -> str | None:
    digest = request.match_info["digest"]
    return digest if is_content_hash(digest) else None


def _authorized(request: web.Request) -> web.Response | None:
    """None when the upload may proceed, else the 401/403 response to send."""
    token = request.app[TOKEN]
    if not token:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return _error(401, "upload token required (Authorization: Bearer <token>)", **{"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(403, "wrong upload token")
    return None


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def put_blob(request: web.Request) -> web.Response:
    """Stores an upload under its content hash, after checking token, name, size and hash."""
    refusal = _authorized(request)
    if refusal is not None:
        return refusal
    digest = _digest(request)
    if digest is None:
        return _error(400, "malformed content hash (want 0x + 64 lowercase hex)")
    limit = request.app[MAX_BYTES]
    data = await _read_body(request, limit)
    if data is None:
        return _error(413, f"blob larger than the server's limit of {limit} bytes")
    actual = await asyncio.to_thread(content_hash, data)
    if actual != digest:
        return _error(422, f"bytes hash to {actual}, not {digest}")
    store = request.app[STORE]
    existed = store.path(digest).exists()
    await asyncio.to_thread(store.put, data)
    log.info("stored %s (%d bytes%s)", digest, len(data), ", already present" if existed else "")
    return web.json_response({"hash": digest, "size": len(data)}, status=200 if existed else 201)


async def get_blob(request: web.Request) -> web.StreamResponse:
    """Serves a blob's bytes by content hash (HEAD: its size only)."""
    digest = _digest(request)
    if digest is None:
        return _error(400, "malformed content hash (want 0x + 64 lowercase hex)")
    path = request.app[STORE].path(digest)
    if not path.is_file():
        return _error(404, f"no blob stored under {digest}")
    return web.FileResponse(
        path,
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "public, max-age=31536000, immutable"},
    )


async def healthz(request: web.Request) -> web.Response:
    """Liveness probe."""
    return web.Response(text="ok")


def make_app(root: str, *, max_bytes: int = DEFAULT_MAX_BYTES, token: str | None = None) -> web.Application:
    """Builds the blob server's application.

    Args:
        root: Folder of the backing :class:`LocalBlobStore` (created if absent).
        max_bytes: Largest upload accepted; bigger ones get ``413``.
        token: When set, uploads need ``Authorization: Bearer <token>``; downloads stay open.

    Returns:
        The aiohttp application (run it with :func:`serve` or any aiohttp runner).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    app = web.Application(client_max_size=max_bytes)
    app[STORE] = LocalBlobStore(root)
    app[MAX_BYTES] = max_bytes
    app[TOKEN] = token or ""
    # One catch-all route, so that every name under /blobs/ (slashes, dots, escapes) reaches the
    # handlers' hash check and gets a clear 400 instead of a router 404.
    app.router.add_put("/blobs/{digest:.*}", put_blob)
    app.router.add_get("/blobs/{digest:.*}", get_blob)  # also HEAD
    app.router.add_get("/healthz", healthz)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def serve(
    root: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    max_bytes: int = DEFAULT_MAX_BYTES,
    token: str | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Runs the blob server until interrupted (SIGINT/SIGTERM).

    Args:
        root: Folder the blobs are kept in.
        host: Address to listen on (``0.0.0.0`` for every interface).
        port: TCP port; 0 picks a free one, announced on start.
        max_bytes: Largest upload accepted.
        token: Optional upload token.
        announce: Called once with the ``http://host:port`` URL the server listens on.
    """
    app = make_app(root, max_bytes=max_bytes, token=token)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    announce(f"http://{url_host}:{bound}")
    web.run_app(app, sock=sock, print=None, shutdown_timeout=5.0)
