"""keccak256 content hashes, written as 0x-prefixed lowercase hex everywhere off-chain."""

from __future__ import annotations

import re

from eth_hash.auto import keccak

_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")


def content_hash(data: bytes) -> str:
    """Returns the keccak256 of ``data`` as ``0x`` + 64 lowercase hex digits (as bytes32 on-chain)."""
    return "0x" + keccak(data).hex()


def is_content_hash(value: str) -> bool:
    """True when ``value`` is a well-formed content hash (and so safe to use as a file name)."""
    return isinstance(value, str) and bool(_HASH_RE.match(value))


def normalize_hash(value: str | bytes) -> str:
    """Normalises a bytes32 (bytes or hex, any case) into the canonical ``0x...`` form.

    Raises:
        ValueError: when ``value`` is not 32 bytes of hex.
    """
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise ValueError(f"a content hash is 32 bytes, got {len(value)}")
        return "0x" + bytes(value).hex()
    text = value.lower()
    if not text.startswith("0x"):
        text = "0x" + text
    if not _HASH_RE.match(text):
        raise ValueError(f"not a 32-byte hex hash: {value!r}")
    return text


def to_bytes32(value: str | bytes) -> bytes:
    """The 32 raw bytes of a content hash, for contract calls."""
    return bytes.fromhex(normalize_hash(value)[2:])
