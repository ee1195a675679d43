"""The exception hierarchy of fedoracle (one tree under :class:`FedoracleError`), and the verdict reason codes.

Every exception class of the project is defined here, so the whole tree reads in one place::

    FedoracleError
    ├── ConfigError
    │   └── StateLocked
    ├── ModelRejected                 (carries a Reason)
    │   ├── BlobNotFound
    │   ├── BlobHashMismatch
    │   └── SealInvalid
    ├── BlobStoreUnavailable
    ├── BlobUploadRefused
    ├── ChainError
    │   ├── ChainUnreachable
    │   ├── ChainReverted
    │   ├── TransactionRejected
    │   │   └── NonceTaken
    │   └── TransactionNotMined
    ├── PrivacyBudgetExhausted
    ├── PrivacyModeMismatch
    ├── EvaluationFailed
    ├── ServiceError
    │   └── ToolMissing
    └── DemoError
        └── DemoTimeout               (also a TimeoutError)

Modules that raise one re-export it where callers used to import it (``fedoracle.chain.NonceTaken``,
``fedoracle.blobstore.BlobStoreUnavailable``, ...).
"""

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
    SEAL_INVALID = 9  # does not open with the round's seal key for this device (a copied hash or blob)
    NEAR_DUPLICATE = 10  # a near-copy of an earlier update of the round (cosine above the bound)
    LOSS_ABOVE_MARGIN = 11  # the candidate's test loss exceeds the global model's by more than the task's margin


class FedoracleError(Exception):
    """Base class of every error fedoracle raises on purpose."""


class ConfigError(FedoracleError):
    """A setting is missing or inconsistent."""


class StateLocked(ConfigError):
    """Another process holds this state folder (e.g. a second oracle on the same checkpoint)."""


class ModelRejected(FedoracleError):
    """A model blob cannot be used; ``reason`` says why, in the on-chain vocabulary."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail


class SealInvalid(ModelRejected):
    """A sealed blob that does not open with the round's key for this device (a copy, or not sealed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.SEAL_INVALID, detail)


class BlobNotFound(ModelRejected):
    """No blob is stored under the requested content hash."""

    def __init__(self, content_hash: str) -> None:
        super().__init__(Reason.MISSING_BLOB, f"no blob stored under {content_hash}")


class BlobHashMismatch(ModelRejected):
    """The bytes found do not hash to the content hash they were asked for by."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(Reason.HASH_MISMATCH, f"expected {expected}, bytes hash to {actual}")


class BlobStoreUnavailable(FedoracleError):
    """The backend could not be reached or failed (after retries): not the blob's fault."""


class BlobUploadRefused(FedoracleError):
    """The backend refused an upload (bad or missing token, or the bytes did not check out)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"upload refused ({status}): {detail}")
        self.status = status
        self.detail = detail


class ChainError(FedoracleError):
    """A transaction reverted or the node misbehaved."""


class ChainUnreachable(ChainError):
    """The node could not be reached at the RPC level, after the connection's retries."""


class ChainReverted(ChainError):
    """A call or transaction reverted; the message names the contract's custom error and its arguments."""


class TransactionRejected(ChainError):
    """A signed transaction did not get into the node: refused (e.g. "already known"), or the node unreachable."""


class NonceTaken(TransactionRejected):
    """The node refused a transaction because its nonce was already used (nothing was sent)."""


class TransactionNotMined(ChainError):
    """A sent transaction got no receipt in time (dropped, or stuck behind a nonce gap)."""


class PrivacyModeMismatch(FedoracleError):
    """A device configured for one privacy mode met a task that declares another: it does not train."""


class PrivacyBudgetExhausted(FedoracleError):
    """Training once more would spend more than the task's declared privacy budget: the device does not train."""


class EvaluationFailed(FedoracleError):
    """No evaluation worker produced a score for a job (it is tried again later, never a verdict)."""


class ServiceError(FedoracleError):
    """A local service (anvil, the MQTT broker, redis) would not start, or died while starting."""


class ToolMissing(ServiceError):
    """An external program (anvil, mosquitto, node) is not installed; run ./run once to set up."""


class DemoError(FedoracleError):
    """The demo's task did not complete: a role process died, or the task was cancelled."""


class DemoTimeout(DemoError, TimeoutError):
    """The demo's task did not finish within its time limit."""
