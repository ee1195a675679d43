"""The hidden test set on disk: the groups' bytes plus the commitment secret (salts and seed).

The publisher creates it before publishing (the paper's Steps 2-3) and hands the folder to the
oracle, which evaluates on it and discloses each round's groups once that round closes. It lives
in a private folder (never the public blob store) named after its Merkle root, so one oracle can
serve many tasks: ``<vault>/<root>/secret.json`` and ``<vault>/<root>/groups/<groupHash>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fedoracle.commitments import TestSetCommitment
from fedoracle.errors import ConfigError
from fedoracle.hashing import content_hash


class HiddenTestSet:
    """A committed test set in its vault folder.

    Args:
        folder: the set's folder (``<vault>/<root>``), holding ``secret.json`` and ``groups/``.

    Raises:
        ConfigError: when the folder holds no ``secret.json``.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        secret = self.folder / "secret.json"
        if not secret.exists():
            raise ConfigError(f"no hidden test set at {self.folder}")
        self.commitment = TestSetCommitment.load(secret)

    @classmethod
    def create(cls, vault: str | os.PathLike[str], groups: Sequence[bytes], groups_per_round: int) -> HiddenTestSet:
        """Commits to ``groups`` (canonical group bytes) and stores everything under ``vault``."""
        hashes = [content_hash(g) for g in groups]
        commitment = TestSetCommitment.create(hashes, groups_per_round)
        folder = Path(vault) / ("0x" + commitment.root.hex())
        (folder / "groups").mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for h, data in zip(hashes, groups, strict=True):
            (folder / "groups" / h).write_bytes(data)
        commitment.save(folder / "secret.json")
        return cls(folder)

    @classmethod
    def find(cls, vault: str | os.PathLike[str], root: str) -> HiddenTestSet:
        """The test set whose Merkle root is ``root`` (as committed on-chain)."""
        return cls(Path(vault) / root.lower())

    @property
    def root(self) -> str:
        """The Merkle root committed on-chain, as ``0x``-prefixed hex (also the folder's name)."""
        return "0x" + self.commitment.root.hex()

    def group_bytes(self, index: int) -> bytes:
        """The bytes of group ``index``, checked against the committed hash."""
        h = "0x" + self.commitment.group_hashes[index].hex()
        data = (self.folder / "groups" / h).read_bytes()
        if content_hash(data) != h:
            raise ConfigError(f"group {index} in {self.folder} no longer matches its committed hash")
        return data

    def round_groups(self, round_: int) -> list[bytes]:
        """The bytes of the groups round ``round_`` is evaluated on."""
        return [self.group_bytes(i) for i in self.commitment.round_indices(round_)]
