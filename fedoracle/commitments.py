"""Commitments: a submission's, and the hidden test set's (salted group leaves, a Merkle root, a seed and its shuffle).

The byte-level scheme is shared with ``contracts/FLTaskRegistry.sol`` and tested against it
(``tests/contracts/test_views.py``); every role calls these functions and none encodes its own:

- a submission's commitment is ``keccak256(abi.encode(bytes32 modelHash, address payee, uint16
  thresholdBp, uint32 numSamples))`` with its top byte cleared (the contract later writes the
  verdict into the same slot, marked by a non-zero top byte) (:func:`submission_commitment`);

- a group's hash is ``keccak256(group bytes)`` (the canonical bytes of ``fedoracle.learning.data``);
- leaf ``i`` is ``keccak256(abi.encode(uint32 i, bytes32 salt_i, bytes32 groupHash_i))`` (96 bytes,
  so a leaf can never be confused with an inner node's 64-byte preimage);
- inner nodes hash the sorted pair (OpenZeppelin ``MerkleProof``'s commutative hash); an odd node
  is carried up unchanged;
- the seed commitment is ``keccak256(abi.encode(bytes32 seed))``;
- test slot ``k`` (round ``r`` uses slots ``(r-1)*g .. r*g-1``) holds group
  ``shuffled_index(k, numGroups, seed)``, the swap-or-not shuffle of the Ethereum consensus spec.

The publisher keeps the salts and the seed secret until a round's groups are disclosed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_hash.auto import keccak

SHUFFLE_ROUNDS = 90


def submission_commitment(model_hash: bytes | str, payee: str, threshold_bp: int, num_samples: int) -> bytes:
    """keccak256(abi.encode(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)), top byte cleared.

    Args:
        model_hash: the update's content hash (32 bytes, or ``0x``-hex).
        payee: the address the reward goes to (``0x``-hex, any case).
        threshold_bp: the threshold in force when the submission was made (basis points).
        num_samples: the device's declared training examples.

    Raises:
        ValueError: for a hash that is not 32 bytes, an address that is not 20, or a value out of
            its Solidity type's range.
    """
    digest = bytes.fromhex(model_hash[2:]) if isinstance(model_hash, str) else bytes(model_hash)
    address = bytes.fromhex(str(payee).removeprefix("0x"))
    if len(digest) != 32 or len(address) != 20:
        raise ValueError("a submission commitment needs a 32-byte model hash and a 20-byte payee")
    if not (0 <= threshold_bp < 2**16 and 0 <= num_samples < 2**32):
        raise ValueError("thresholdBp is a uint16 and numSamples a uint32")
    full = keccak(
        digest + address.rjust(32, b"\0") + threshold_bp.to_bytes(32, "big") + num_samples.to_bytes(32, "big")
    )
    return b"\0" + full[1:]


def seed_commitment(seed: bytes) -> bytes:
    """keccak256(abi.encode(bytes32 seed))."""
    if len(seed) != 32:
        raise ValueError("the seed is 32 bytes")
    return keccak(seed)


def leaf_hash(index: int, salt: bytes, group_hash: bytes) -> bytes:
    """keccak256(abi.encode(uint32 index, bytes32 salt, bytes32 groupHash))."""
    return keccak(index.to_bytes(32, "big") + salt + group_hash)


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first, root last."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        nxt = [_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
    return levels


def merkle_proof(levels: list[list[bytes]], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (OpenZeppelin ``MerkleProof`` order)."""
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """What ``MerkleProof.verify`` computes, for off-chain checks."""
    node = leaf
    for sibling in proof:
        node = _pair(node, sibling)
    return node == root


def shuffled_index(index: int, count: int, seed: bytes) -> int:
    """``compute_shuffled_index`` of the consensus spec (and of ``FLTaskRegistry.shuffledIndex``)."""
    if not 0 <= index < count:
        raise ValueError(f"index {index} outside 0..{count - 1}")
    for r in range(SHUFFLE_ROUNDS):
        rb = r.to_bytes(1, "little")
        pivot = int.from_bytes(keccak(seed + rb)[:8], "little") % count
        flip = (pivot + count - index) % count
        position = max(index, flip)
        source = keccak(seed + rb + (position // 256).to_bytes(4, "little"))
        if (source[(position % 256) // 8] >> (position % 8)) & 1:
            index = flip
    return index


@dataclass(frozen=True)
class DisclosedGroup:
    """One group as ``discloseTestData`` takes it (``TestGroup`` in the contract)."""

    index: int
    salt: bytes
    group_hash: bytes
    uri: str
    proof: list[bytes]

    def as_tuple(self) -> tuple[int, bytes, bytes, str, list[bytes]]:
        """ABI tuple ``(uint32, bytes32, bytes32, string, bytes32[])``."""
        return (self.index, self.salt, self.group_hash, self.uri, list(self.proof))


@dataclass
class TestSetCommitment:
    """The publisher's secret: salts, seed and group hashes of a hidden test set.

    Build one with :meth:`create`, publish :attr:`root` and :attr:`seed_commitment`, keep the
    object (:meth:`save`) to disclose round by round with :meth:`disclosure`.
    """

    __test__ = False  # not a pytest test class, despite its name

    group_hashes: list[bytes]
    salts: list[bytes]
    seed: bytes
    groups_per_round: int
    uris: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        group_hashes: Sequence[bytes | str],
        groups_per_round: int,
        *,
        uris: Sequence[str] | None = None,
        rng: secrets.SystemRandom | None = None,
    ) -> TestSetCommitment:
        """Commits to groups with fresh random salts and seed (``secrets`` unless ``rng`` given)."""
        draw: Callable[[], bytes] = (
            (lambda: rng.randbytes(32)) if rng is not None else (lambda: secrets.token_bytes(32))
        )
        hashes = [bytes.fromhex(h[2:]) if isinstance(h, str) else bytes(h) for h in group_hashes]
        if groups_per_round < 1 or groups_per_round > len(hashes):
            raise ValueError("groups_per_round must be between 1 and the number of groups")
        return cls(
            group_hashes=hashes,
            salts=[draw() for _ in hashes],
            seed=draw(),
            groups_per_round=groups_per_round,
            uris=list(uris) if uris is not None else [""] * len(hashes),
        )

    @property
    def num_groups(self) -> int:
        """How many groups the test set has (leaves of the tree)."""
        return len(self.group_hashes)

    @property
    def max_rounds(self) -> int:
        """How many rounds the groups can serve without reuse."""
        return self.num_groups // self.groups_per_round

    @property
    def leaves(self) -> list[bytes]:
        """The Merkle leaves, one per group in index order (:func:`leaf_hash` of index, salt and group hash)."""
        return [leaf_hash(i, s, h) for i, (s, h) in enumerate(zip(self.salts, self.group_hashes, strict=True))]

    @property
    def root(self) -> bytes:
        """The Merkle root of :attr:`leaves`: the ``testSetRoot`` published with the task."""
        return merkle_levels(self.leaves)[-1][0]

    @property
    def seed_commitment(self) -> bytes:
        """The commitment to :attr:`seed` (:func:`seed_commitment`), published with the task."""
        return seed_commitment(self.seed)

    def round_indices(self, round_: int) -> list[int]:
        """Group indices that round ``round_`` (1-based) is evaluated on."""
        if not 1 <= round_ <= self.max_rounds:
            raise ValueError(f"round {round_} outside 1..{self.max_rounds}")
        first = (round_ - 1) * self.groups_per_round
        return [shuffled_index(first + j, self.num_groups, self.seed) for j in range(self.groups_per_round)]

    def disclosure(self, round_: int) -> list[DisclosedGroup]:
        """The round's groups with salts and proofs, ready for ``discloseTestData``."""
        levels = merkle_levels(self.leaves)
        return [
            DisclosedGroup(i, self.salts[i], self.group_hashes[i], self.uris[i], merkle_proof(levels, i))
            for i in self.round_indices(round_)
        ]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the secret to ``path`` (mode 0600)."""
        doc = {
            "group_hashes": ["0x" + h.hex() for h in self.group_hashes],
            "salts": ["0x" + s.hex() for s in self.salts],
            "seed": "0x" + self.seed.hex(),
            "groups_per_round": self.groups_per_round,
            "uris": self.uris,
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TestSetCommitment:
        """Reads a secret written by :meth:`save`."""
        doc = json.loads(Path(path).read_text())

        def unhex(xs: list[str]) -> list[bytes]:
            return [bytes.fromhex(x[2:]) for x in xs]

        return cls(
            group_hashes=unhex(doc["group_hashes"]),
            salts=unhex(doc["salts"]),
            seed=bytes.fromhex(doc["seed"][2:]),
            groups_per_round=int(doc["groups_per_round"]),
            uris=list(doc["uris"]),
        )
