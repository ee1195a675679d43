"""Sealed submissions: a device's update encrypted to the round's oracle key, bound to the device.

Before a round is settled nobody but the oracle can read a submission, and a submission opens only
for the device that sealed it: the associated data of the AEAD is (chain id, registry, task, round,
submitting device), so a copied hash or a copied blob submitted from another address fails to open
(``SEAL_INVALID``), whatever order the two land in; and a copier cannot re-encrypt what it cannot
read. Once the round is settled the oracle discloses the round's secret key on-chain
(``SealKeyDisclosed``), and anyone can open every submission of the round and re-check its verdict.

The construction (X25519 + HKDF-SHA256 + ChaCha20-Poly1305, an ECIES in the manner of HPKE's base
mode, from the ``cryptography`` library)::

    blob  = MAGIC (8) | ephemeral public key (32) | nonce (12) | ciphertext || tag (16)
    key   = HKDF-SHA256(X25519(ephemeral secret, round key), info = INFO | eph. public | round key)
    AD    = INFO | chain id (32, big-endian) | registry (20) | task id (32) | round (2) | device (20)

The on-chain ``modelHash`` is keccak256 of the whole sealed blob (the blob store stays
content-addressed); the plaintext is the update's canonical model bytes (:mod:`fedoracle.codec`).
The oracle's round keys are derived from its signing key (:func:`round_keypair`), so a restarted
oracle or an evaluation worker needs no extra state, and disclosing one round's secret reveals
nothing about the signing key or about any other round's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address
from eth_utils.conversions import to_bytes

from fedoracle.errors import SealInvalid

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fedoracle.blobstore import BlobStore
    from fedoracle.chain import Submission
    from fedoracle.codec import ModelSpec

MAGIC = b"FOSEAL\x00\x01"
"""Eight bytes that start every sealed blob (format version 1)."""
INFO = b"fedoracle/seal/v1"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + KEY_BYTES + NONCE_BYTES
OVERHEAD = HEADER_BYTES + TAG_BYTES
"""How many bytes sealing adds to the plaintext."""


@dataclass(frozen=True)
class SealContext:
    """What a sealed blob is bound to: the AEAD's associated data.

    Attributes:
        chain_id: the chain's id (EIP-155).
        registry: the registry's address.
        task_id: the task.
        round: the round.
        device: the submitting device's address (``msg.sender`` of ``submit``).
    """

    chain_id: int
    registry: str
    task_id: int
    round: int
    device: str

    def associated_data(self) -> bytes:
        """The AEAD's associated data (fixed-width fields, so no two contexts encode alike)."""
        return b"".join(
            (
                INFO,
                self.chain_id.to_bytes(32, "big"),
                to_bytes(hexstr=to_checksum_address(self.registry)),
                self.task_id.to_bytes(32, "big"),
                self.round.to_bytes(2, "big"),
                to_bytes(hexstr=to_checksum_address(self.device)),
            )
        )


def _key_bytes(key: bytes | str) -> bytes:
    raw = to_bytes(hexstr=key) if isinstance(key, str) else bytes(key)
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 key is {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def public_key(secret: bytes | str) -> bytes:
    """The X25519 public key of ``secret`` (32 bytes, raw)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(_key_bytes(secret)).public_key().public_bytes_raw()


def round_keypair(oracle_key: bytes, chain_id: int, registry: str, task_id: int, round_: int) -> tuple[bytes, bytes]:
    """The oracle's seal key pair for one round: ``(secret, public)``, 32 raw bytes each.

    Derived (HMAC-SHA256, a PRF) from the oracle's signing key and the round's coordinates: a
    restart or an evaluation worker with the same key derives the same pair, and disclosing one
    round's secret reveals neither the signing key nor another round's secret.

    Args:
        oracle_key: the oracle account's 32-byte private key.
        chain_id: the chain's id.
        registry: the registry's address.
        task_id: the task.
        round_: the round.
    """
    msg = b"".join(
        (
            INFO + b"/round-key",
            chain_id.to_bytes(32, "big"),
            to_bytes(hexstr=to_checksum_address(registry)),
            task_id.to_bytes(32, "big"),
            round_.to_bytes(2, "big"),
        )
    )
    secret = hmac.new(bytes(oracle_key), msg, hashlib.sha256).digest()
    return secret, public_key(secret)


def _aead_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if shared == bytes(KEY_BYTES):  # a low-order point: the "shared" secret is public
        raise SealInvalid("the ephemeral key is a low-order point")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO + ephemeral + recipient).derive(shared)


def seal(plaintext: bytes, seal_key: bytes | str, context: SealContext) -> bytes:
    """Encrypts ``plaintext`` to the round's public ``seal_key``, bound to ``context``.

    A fresh ephemeral key and nonce come from the operating system's entropy for every call, so
    sealing the same bytes twice gives different blobs.

    Args:
        plaintext: the update's canonical model bytes.
        seal_key: the round's X25519 public key (``RoundRecord.sealKey``), raw or ``0x``-hex.
        context: the submission's chain, registry, task, round and submitting device.

    Returns:
        The sealed blob (``len(plaintext) + OVERHEAD`` bytes).
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    recipient = _key_bytes(seal_key)
    if recipient == bytes(KEY_BYTES):
        raise ValueError("the round has no seal key yet (it is zero)")
    ephemeral = X25519PrivateKey.generate()
    eph_public = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = secrets.token_bytes(NONCE_BYTES)
    body = ChaCha20Poly1305(_aead_key(shared, eph_public, recipient)).encrypt(
        nonce, plaintext, context.associated_data()
    )
    return MAGIC + eph_public + nonce + body


def open_sealed(blob: bytes, seal_secret: bytes | str, context: SealContext) -> bytes:
    """Decrypts a sealed blob with the round's secret key, checking what it is bound to.

    Args:
        blob: the sealed bytes as fetched (their hash already checked against ``modelHash``).
        seal_secret: the round's X25519 secret key (the oracle's, or the disclosed one).
        context: the submission as the chain records it (the submitting device is ``msg.sender``).

    Returns:
        The plaintext (the update's canonical model bytes).

    Raises:
        SealInvalid: the blob is not a sealed blob, or it was sealed to another key or for
            another chain, registry, task, round or device, or it was altered.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(blob) < OVERHEAD or not blob.startswith(MAGIC):
        raise SealInvalid("not a sealed blob (no fedoracle seal header)")
    eph_public = blob[len(MAGIC) : len(MAGIC) + KEY_BYTES]
    nonce = blob[len(MAGIC) + KEY_BYTES : HEADER_BYTES]
    secret = X25519PrivateKey.from_private_bytes(_key_bytes(seal_secret))
    recipient = secret.public_key().public_bytes_raw()
    try:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(eph_public))
    except ValueError:  # OpenSSL refuses a low-order point
        raise SealInvalid("the ephemeral key is a low-order point") from None
    try:
        return ChaCha20Poly1305(_aead_key(shared, eph_public, recipient)).decrypt(
            nonce, blob[HEADER_BYTES:], context.associated_data()
        )
    except InvalidTag:
        raise SealInvalid(
            f"does not open for device {context.device} in task {context.task_id} round {context.round} "
            "(sealed for another submitter, round or key, or altered)"
        ) from None


def submission_context(chain_id: int, registry: str, sub: Submission) -> SealContext:
    """The context a submission's blob must open in: the chain's record of who submitted it."""
    return SealContext(chain_id, registry, sub.task_id, sub.round, sub.device)


def open_update(
    blobs: BlobStore, sub: Submission, spec: ModelSpec, seal_secret: bytes | str, chain_id: int, registry: str
) -> tuple[str, list[NDArray[Any]]]:
    """Fetches, opens and decodes one submission: what the oracle and any re-checker do first.

    Args:
        blobs: where the sealed blob is (fetched by ``sub.model_hash``, its hash checked).
        sub: the submission as the chain records it.
        spec: the task's model spec (the size limit and the tensors).
        seal_secret: the round's secret seal key.
        chain_id: the chain's id.
        registry: the registry's address.

    Returns:
        ``(plaintext_hash, update)``: the content hash of the opened update bytes and its tensors.

    Raises:
        ModelRejected: with the reason of the first check that fails (``MISSING_BLOB``,
            ``HASH_MISMATCH``, ``TOO_LARGE``, ``SEAL_INVALID``, ``UNDECODABLE``, ``WRONG_SPEC``,
            ``NON_FINITE``).
    """
    from fedoracle.codec import decode
    from fedoracle.hashing import content_hash

    sealed = blobs.get(sub.model_hash, max_bytes=spec.max_bytes + OVERHEAD)
    plaintext = open_sealed(sealed, seal_secret, submission_context(chain_id, registry, sub))
    return content_hash(plaintext), decode(plaintext, spec)
