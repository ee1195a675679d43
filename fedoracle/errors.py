"""The small exception hierarchy of fedoracle, and the reason codes a verdict carries on-chain."""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    """Why the oracle scored a submission the way it did (``reason`` in ``VerdictPosted``).

    Mirrors the ``@custom:reason-codes`` table of ``contracts/IFLTaskRegistry.sol``, the one list
    of the codes (``tests/contracts/test_interface.py`` checks names and values against it). The
    contract treats ``OK`` with an accuracy at or above the submission's threshold as accepted,
    and everything else as rejected.
    """

    OK = 0
    BELOW_THRESHOLD = 1
    HASH_MISMATCH = 2
    MISSING_BLOB = 3
    UNDECODABLE = 4
    WRONG_SPEC = 5
    NON_FINITE = 6
    TOO_LARGE = 7
    DUPLICATE = 8  # the same model bytes as an earlier submission of the round (a free rider)


class FedoracleError(Exception):
    """Base class of every error fedoracle raises on purpose."""


class ConfigError(FedoracleError):
    """A setting is missing or inconsistent."""


class ModelRejected(FedoracleError):
    """A model blob cannot be used; ``reason`` says why, in the on-chain vocabulary."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail


class BlobNotFound(ModelRejected):
    """No blob is stored under the requested content hash."""

    def __init__(self, content_hash: str) -> None:
        super().__init__(Reason.MISSING_BLOB, f"no blob stored under {content_hash}")


class BlobHashMismatch(ModelRejected):
    """The bytes found do not hash to the content hash they were asked for by."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(Reason.HASH_MISMATCH, f"expected {expected}, bytes hash to {actual}")


class ChainError(FedoracleError):
    """A transaction reverted or the node misbehaved."""


class ToolMissing(FedoracleError):
    """An external program (anvil, mosquitto, node) is not installed; run ./run once to set up."""
