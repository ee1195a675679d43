"""Typed async client of ``FLTaskRegistry`` over web3.py: transactions, views, events, errors.

One :class:`Chain` per signing account: it owns the account's nonce (so concurrent coroutines
never race for one), signs locally, waits for receipts and retries RPC failures with backoff.
:class:`TaskRegistry` wraps the contract's functions with Python types and decodes its events
and custom errors (a revert surfaces as :class:`~fedoracle.errors.ChainError` naming the error
and its arguments, e.g. ``FLTaskWrongPhase(taskId=1, current=2, expected=1)``).

The ABI comes from ape's build output (``.build/__local__.json``), which ``./run`` keeps current.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.abi import event_abi_to_log_topic, function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.events import get_event_data
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, TimeExhausted, Web3RPCError
from web3.types import FilterParams

from fedoracle.defaults import DEFAULTS, privacy_mode_code
from fedoracle.errors import (
    ChainError,
    ChainReverted,
    ChainUnreachable,
    ConfigError,
    NonceTaken,
    TransactionNotMined,
    TransactionRejected,
)
from fedoracle.hashing import normalize_hash, to_bytes32
from fedoracle.retry import Backoff, retry_async
from fedoracle.rules import AggregationRule
from fedoracle.units import encode_dp, epsilon_milli

log = logging.getLogger(__name__)

CONTRACT = "FLTaskRegistry"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


class Phase(IntEnum):
    """``IFLTaskRegistry.Phase`` (checked against it by ``tests/contracts/test_interface.py``)."""

    NONE = 0
    OPEN = 1
    CLOSED = 2
    AWAITING_FINALIZE = 3
    FINALIZED = 4
    CANCELLED = 5


class Status(IntEnum):
    """``IFLTaskRegistry.Status`` of a verdict (checked like :class:`Phase`)."""

    NONE = 0
    ACCEPTED = 1
    REJECTED = 2
    CLAIMED = 3
    EXPIRED = 4


def project_root() -> Path:
    """The checkout fedoracle runs from (``FEDORACLE_ROOT``, else the package's parent)."""
    return Path(os.environ.get("FEDORACLE_ROOT") or Path(__file__).resolve().parent.parent)


@cache
def artifact(name: str = CONTRACT) -> dict[str, Any]:
    """ABI and deployment bytecode of a compiled contract from ape's build folder.

    Raises:
        ConfigError: when the project has not been compiled (``./run ape compile``).
    """
    path = project_root() / ".build" / "__local__.json"
    try:
        types = json.loads(path.read_text())["contractTypes"]
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: run `./run ape compile` (./run does it for you)") from None
    ct = types[name]
    return {"abi": ct["abi"], "bytecode": ct["deploymentBytecode"]["bytecode"]}


def dev_account(index: int) -> LocalAccount:
    """Account ``index`` of anvil's (and ape's test) mnemonic: for dev chains only."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def load_account(key: str) -> LocalAccount:
    """An account from a key source: ``0x<hex private key>``, ``dev:<n>``, ``file:<path>`` or ``env:<VAR>``.

    Raises:
        ConfigError: for a source that names no usable key (the message says which and why, never the key).
    """
    if key.startswith("dev:"):
        if not key[4:].isdigit():
            raise ConfigError(f"--key {key}: dev:<n> takes a dev-chain account number (dev:0, dev:1, ...)")
        return dev_account(int(key[4:]))
    if key.startswith("file:"):
        path = Path(key[5:]).expanduser()
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--key file:{path}: cannot read the key file ({exc.strerror})") from None
    if key.startswith("env:"):
        if key[4:] not in os.environ:
            raise ConfigError(f"--key {key}: the variable {key[4:]} is not set")
        key = os.environ[key[4:]]
    try:
        account: LocalAccount = Account.from_key(key)
    except Exception as exc:  # eth_account raises several types for bad keys
        raise ConfigError(f"not a usable private key source ({type(exc).__name__})") from None
    return account


@dataclass(frozen=True)
class ChainEvent:
    """A decoded contract event with its position in the chain."""

    name: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    removed: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """``(txHash, logIndex)``: unique per log, the unit of exactly-once processing."""
        return (self.tx_hash, self.log_index)


class _ErrorDecoder:
    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        for item in abi:
            if item.get("type") == "error":
                types = ",".join(_abi_type(i) for i in item["inputs"])
                self._errors[function_signature_to_4byte_selector(f"{item['name']}({types})")] = item

    def decode(self, data: str | bytes) -> str:
        raw = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
        item = self._errors.get(raw[:4])
        if item is None:
            return f"unknown revert 0x{raw.hex()}"
        values = abi_decode([_abi_type(i) for i in item["inputs"]], raw[4:])
        args = ", ".join(f"{i['name']}={_show(v)}" for i, v in zip(item["inputs"], values, strict=True))
        return f"{item['name']}({args})"


def _abi_type(item: dict[str, Any]) -> str:
    kind: str = item["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + kind[5:]
    return kind


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


# Connection-level failures (refused, reset, a dropped keep-alive connection, timeouts); aiohttp's connection
# errors are not all OSErrors.
_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, aiohttp.ClientConnectionError)


def _log_rpc_retry(exc: BaseException, attempt: int, delay: float) -> None:
    log.warning("rpc error, retrying in %.1fs: %s", delay, exc)


@dataclass(frozen=True)
class PendingTx:
    """A transaction the node has accepted and whose receipt is not awaited yet (:meth:`Chain.send`)."""

    tx_hash: str  # 0x-hex
    fn: Any  # the contract call, replayed to explain a revert
    value: int = 0
    decoder: _ErrorDecoder | None = None


class Chain:
    """A web3 connection plus one signing account with its own nonce management.

    Args:
        rpc_url: the node's HTTP JSON-RPC URL.
        account: the signer (``None`` for read-only use).
        retries: attempts for a transaction or call that fails at the RPC level.
    """

    def __init__(self, rpc_url: str, account: LocalAccount | None = None, *, retries: int = 5) -> None:
        self.rpc_url = rpc_url
        self.w3 = AsyncWeb3(_TrackedHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.account = account
        self.retries = retries
        self._nonce: int | None = None
        self._lock = asyncio.Lock()
        self._chain_id: int | None = None
        #: Hooks called with a transaction's hash just before it is sent (``on_signed``: a
        #: write-ahead record survives a crash at any later point) and right after the node
        #: accepted it, before its receipt is awaited (``on_sent``).
        self.on_signed: Callable[[str], None] | None = None
        self.on_sent: Callable[[str], None] | None = None
        #: Seconds between receipt polls (web3's default of 0.1 s dominated a verdict's latency).
        self.receipt_poll = 0.01

    @property
    def address(self) -> str:
        """The signing account's checksum address.

        Raises:
            ConfigError: when this connection has no signing account (read-only use).
        """
        if self.account is None:
            raise ConfigError("this chain connection has no signing account")
        return self.account.address

    async def close(self) -> None:
        """Closes the HTTP session of the provider (idempotent; a later call opens a new one)."""
        disconnect = getattr(self.w3.provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()

    def reset_nonce(self) -> None:
        """Forgets the cached nonce (after a reorg or an external transaction from this account)."""
        self._nonce = None

    async def chain_id(self) -> int:
        """The chain's id (``eth_chainId``), asked once and then cached."""
        if self._chain_id is None:
            self._chain_id = await self.w3.eth.chain_id
        return self._chain_id

    async def block_number(self) -> int:
        """The number of the chain's latest block.

        Raises:
            ChainUnreachable: the node could not be reached after the retries.
        """
        return int(await self._retry(lambda: self.w3.eth.block_number))

    async def balance(self, address: str) -> int:
        """The balance of ``address`` at the latest block, in wei.

        Args:
            address: the account's address (``0x``-hex, any case).

        Raises:
            ChainUnreachable: the node could not be reached after the retries.
        """
        return int(await self._retry(lambda: self.w3.eth.get_balance(to_checksum_address(address))))

    async def _retry(self, make_call: Any) -> Any:
        try:
            return await retry_async(
                make_call,
                backoff=Backoff(0.2, cap=5.0),
                retry_on=_CONNECTION_ERRORS,
                attempts=self.retries,
                on_retry=_log_rpc_retry,
            )
        except _CONNECTION_ERRORS as exc:
            raise ChainUnreachable(f"RPC {self.rpc_url} unreachable: {exc}") from exc

    async def transact(self, fn: Any, *, value: int = 0, decoder: _ErrorDecoder | None = None) -> dict[str, Any]:
        """Signs and sends a contract call, waits for its receipt and returns it (:meth:`send`, then :meth:`wait`).

        Raises:
            ChainError: the call reverts (message names the custom error), or the RPC fails.
        """
        return await self.wait(await self.send(fn, value=value, decoder=decoder))

    async def send(self, fn: Any, *, value: int = 0, decoder: _ErrorDecoder | None = None) -> PendingTx:
        """Signs a contract call with this account's next nonce and sends it; does not wait for it to be mined.

        Several calls sent one after another get consecutive nonces, so a caller can send a batch
        and then collect the receipts (:meth:`wait`) instead of paying the node's mining and
        web3's receipt polling once per transaction. :attr:`on_signed` sees each hash before the
        node does, :attr:`on_sent` after it accepted the transaction.

        When another client took this account's next nonce (the node answers "nonce too low";
        nothing was sent), the nonce is read again and the call re-sent, up to two more times.

        Raises:
            ChainError: the call reverts when its gas is estimated (message names the custom
                error), the node rejects the transaction, or the RPC fails.
        """

        def taken(exc: BaseException, attempt: int, delay: float) -> None:
            log.warning("nonce taken by another client of %s; retrying with a fresh one", self.address)

        return await retry_async(
            lambda: self._send_once(fn, value=value, decoder=decoder),
            backoff=Backoff(0.0),
            retry_on=NonceTaken,
            attempts=3,
            on_retry=taken,
        )

    async def _send_once(self, fn: Any, *, value: int = 0, decoder: _ErrorDecoder | None = None) -> PendingTx:
        """One attempt of :meth:`send`."""
        account = self.account
        if account is None:
            raise ConfigError("a transaction needs a signing account")
        async with self._lock:
            try:
                gas = await self._retry(lambda: fn.estimate_gas({"from": account.address, "value": value}))
            except (ContractCustomError, ContractPanicError, ContractLogicError) as exc:
                raise ChainReverted(_revert_message(exc, decoder)) from None
            if self._nonce is None:
                self._nonce = await self._retry(lambda: self.w3.eth.get_transaction_count(account.address, "pending"))
            tx = await fn.build_transaction(
                {
                    "from": account.address,
                    "value": value,
                    "nonce": self._nonce,
                    # Headroom: the estimate is taken on the current state, and a call's path can
                    # change before it is mined (the submission that hits the cap also closes
                    # the round). Unused gas is not charged.
                    "gas": int(gas * 1.25) + 60_000,
                    "chainId": await self.chain_id(),
                }
            )
            signed = account.sign_transaction(tx)
            if self.on_signed is not None:
                self.on_signed("0x" + bytes(signed.hash).hex())
            try:
                tx_hash = await self._retry(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
            except (ValueError, Web3RPCError, ChainError) as exc:
                # The node rejected it (nonce too low after a restart or an outside transaction,
                # "already known" after a resend) or could not be reached: ask for the nonce again.
                self._nonce = None
                if "nonce too low" in str(exc).lower():
                    raise NonceTaken(f"transaction rejected: {exc}") from exc
                raise TransactionRejected(f"transaction rejected: {exc}") from exc
            self._nonce += 1
            if self.on_sent is not None:
                self.on_sent("0x" + bytes(tx_hash).hex())
        return PendingTx("0x" + bytes(tx_hash).hex(), fn, value, decoder)

    async def wait(self, pending: PendingTx) -> dict[str, Any]:
        """Waits for a sent transaction's receipt (polling every :attr:`receipt_poll` seconds) and returns it.

        Raises:
            TransactionNotMined: not mined within two minutes (dropped, or stuck behind a nonce gap).
            ChainReverted: mined and reverted (the message names the custom error).
            ChainUnreachable: the node could not be reached after the retries.
        """
        tx_hash = HexStr(pending.tx_hash)
        try:
            receipt: dict[str, Any] = await self._retry(
                lambda: self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=self.receipt_poll)
            )
        except TimeExhausted as exc:  # dropped, or stuck behind a nonce gap (e.g. after a reorg)
            self._nonce = None
            raise TransactionNotMined(f"transaction {pending.tx_hash} not mined: {exc}") from exc
        if receipt["status"] != 1:
            why = await self._replay(pending.fn, pending.value, receipt, pending.decoder)
            raise ChainReverted(f"transaction {pending.tx_hash} reverted: {why}")
        return receipt

    async def _replay(self, fn: Any, value: int, receipt: dict[str, Any], decoder: _ErrorDecoder | None) -> str:
        """Why a mined transaction reverted: the call replayed on the state of its block."""
        try:
            await fn.call({"from": self.address, "value": value}, block_identifier=receipt["blockNumber"])
        except (ContractCustomError, ContractPanicError, ContractLogicError) as exc:
            return _revert_message(exc, decoder)
        except Exception as exc:
            return f"(replay failed: {exc})"
        return f"out of gas? (used {receipt['gasUsed']} of the limit)"


#: Every provider that has sent a request since it was last disconnected (strong references: a
#: Chain dropped by its owner still has its session closed by :func:`close_chains`).
_OPEN_PROVIDERS: set[_TrackedHTTPProvider] = set()


class _TrackedHTTPProvider(AsyncHTTPProvider):
    """web3's HTTP provider, listed in :data:`_OPEN_PROVIDERS` from a request until ``disconnect()``."""

    async def make_request(self, method: Any, params: Any) -> Any:
        """Sends one JSON-RPC request (web3's), after noting that this provider has a session to close."""
        _OPEN_PROVIDERS.add(self)
        return await super().make_request(method, params)

    async def make_batch_request(self, requests: Any) -> Any:
        """Sends a JSON-RPC batch (web3's), after noting that this provider has a session to close."""
        _OPEN_PROVIDERS.add(self)
        return await super().make_batch_request(requests)

    async def disconnect(self) -> None:
        """Closes this provider's aiohttp sessions, as web3's does, skipping those of a closed event loop."""
        _OPEN_PROVIDERS.discard(self)
        cache = self._request_session_manager.session_cache
        for key, session in cache.items():
            if not session._loop.is_closed():  # a closed loop's session cannot be closed any more (web3 fails)
                await session.close()
            cache.pop(key)


async def close_chains() -> int:
    """Closes the HTTP session of every :class:`Chain` of this process that has one open; returns how many.

    aiohttp logs "Unclosed client session" for every web3 session that is garbage-collected open; a
    command's event loop calls this before it ends (:func:`fedoracle.aio.run`), so no role leaves
    one behind, whatever path it took out.
    """
    providers = list(_OPEN_PROVIDERS)
    for provider in providers:
        await provider.disconnect()
    return len(providers)


def _revert_message(exc: Exception, decoder: _ErrorDecoder | None) -> str:
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x") and decoder is not None:
        return decoder.decode(data)
    return str(exc)


@dataclass(frozen=True)
class TaskParams:
    """Arguments of ``publish`` (``FLTaskRegistry.TaskParams``) with units spelled out."""

    oracle: str
    model_spec_hash: str
    initial_model_hash: str
    initial_model_uri: str
    threshold_bp: int
    test_set_root: bytes
    seed_commitment: bytes
    num_groups: int
    groups_per_round: int
    max_rounds: int = DEFAULTS.rounds
    target_accuracy_bp: int = 0
    max_submissions_per_round: int = DEFAULTS.max_submissions
    epsilon: float = DEFAULTS.epsilon
    delta: float = DEFAULTS.delta
    clip: float = DEFAULTS.clip
    round_duration: int = DEFAULTS.round_duration
    evaluation_window: int = DEFAULTS.evaluation_window
    allowlist_only: bool = False
    max_samples_per_device: int = DEFAULTS.max_samples_per_device
    privacy_mode: str = DEFAULTS.dp_scaling
    aggregation: AggregationRule = AggregationRule()
    loss_margin_bp: int = 0
    root_set_hash: bytes = bytes(32)
    claim_window: int = DEFAULTS.claim_window

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple ``publish`` takes (``FLTaskRegistry.TaskParams``, fields in its order).

        Addresses are checksummed, hashes made ``bytes32`` and the DP budget encoded with
        :func:`~fedoracle.units.encode_dp`.
        """
        return (
            to_checksum_address(self.oracle),
            to_bytes32(self.model_spec_hash),
            to_bytes32(self.initial_model_hash),
            self.initial_model_uri,
            self.threshold_bp,
            self.target_accuracy_bp,
            self.max_rounds,
            self.max_submissions_per_round,
            *encode_dp(self.epsilon, self.delta, self.clip),
            self.test_set_root,
            self.seed_commitment,
            self.num_groups,
            self.groups_per_round,
            self.round_duration,
            self.evaluation_window,
            self.allowlist_only,
            self.max_samples_per_device,
            privacy_mode_code(self.privacy_mode),
            *self.aggregation.to_chain(),
            self.loss_margin_bp,
            self.root_set_hash,
            self.claim_window,
        )


@dataclass(frozen=True)
class Submission:
    """A device's submission as ``ModelSubmitted`` reports it."""

    task_id: int
    round: int
    device: str
    payee: str
    model_hash: str
    model_uri: str
    threshold_bp: int
    num_samples: int
    epsilon_spent_milli: int = 0

    @classmethod
    def from_event(cls, ev: ChainEvent) -> Submission:
        """The submission a ``ModelSubmitted`` event reports.

        Args:
            ev: a decoded ``ModelSubmitted`` event.
        """
        a = ev.args
        return cls(
            task_id=a["taskId"],
            round=a["round"],
            device=a["device"],
            payee=a["payee"],
            model_hash=normalize_hash(a["modelHash"]),
            model_uri=a["modelURI"],
            threshold_bp=a["thresholdBp"],
            num_samples=a["numSamples"],
            epsilon_spent_milli=a["epsilonSpentMilli"],
        )

    def as_tuple(self) -> tuple[bytes, str, int, int]:
        """The contract's ``Submission`` struct, as ``postVerdict`` takes it.

        ``(bytes32 modelHash, address payee, uint16 thresholdBp, uint32 numSamples)``: the fields the
        stored commitment is checked against.
        """
        return (to_bytes32(self.model_hash), to_checksum_address(self.payee), self.threshold_bp, self.num_samples)


class TaskRegistry:
    """The ``FLTaskRegistry`` contract at ``address``, seen through ``chain``'s account."""

    def __init__(self, chain: Chain, address: str) -> None:
        art = artifact()
        self.chain = chain
        self.address = to_checksum_address(address)
        self.contract = chain.w3.eth.contract(address=self.address, abi=art["abi"])
        self._errors = _ErrorDecoder(art["abi"])
        self._events = {event_abi_to_log_topic(item): item for item in art["abi"] if item.get("type") == "event"}

    @classmethod
    async def deploy(cls, chain: Chain) -> TaskRegistry:
        """Deploys a new registry from ``chain``'s account."""
        art = artifact()
        factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = await chain.transact(factory.constructor())
        return cls(chain, receipt["contractAddress"])

    def with_chain(self, chain: Chain) -> TaskRegistry:
        """The same registry seen through another account."""
        return TaskRegistry(chain, self.address)

    async def _tx(self, fn: Any, value: int = 0) -> dict[str, Any]:
        return await self.chain.transact(fn, value=value, decoder=self._errors)

    async def _call(self, fn: Any) -> Any:
        try:
            return await self.chain._retry(lambda: fn.call())
        except (ContractCustomError, ContractLogicError) as exc:
            raise ChainReverted(_revert_message(exc, self._errors)) from None

    def events_of(self, receipt: dict[str, Any]) -> list[ChainEvent]:
        """Decoded events of this contract in a receipt."""
        return [ev for ev in (self.decode_log(lg) for lg in receipt["logs"]) if ev is not None]

    def decode_log(self, raw: dict[str, Any]) -> ChainEvent | None:
        """Decodes one raw log of this contract (``None`` for a foreign log)."""
        if to_checksum_address(raw["address"]) != self.address or not raw["topics"]:
            return None
        item = self._events.get(bytes(raw["topics"][0]))
        if item is None:
            return None
        data = get_event_data(self.chain.w3.codec, item, raw)
        return ChainEvent(
            name=data["event"],
            args=dict(data["args"]),
            block_number=raw["blockNumber"],
            block_hash="0x" + bytes(raw["blockHash"]).hex(),
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            log_index=raw["logIndex"],
            removed=bool(raw.get("removed", False)),
        )

    async def get_events(self, from_block: int, to_block: int) -> list[ChainEvent]:
        """Every event of this contract in ``[from_block, to_block]``, in chain order."""
        logs = await self.chain._retry(
            lambda: self.chain.w3.eth.get_logs({"address": self.address, "fromBlock": from_block, "toBlock": to_block})
        )
        return [ev for ev in (self.decode_log(lg) for lg in logs) if ev is not None]

    async def verdict_events(self, task_id: int, round_: int, from_block: int, to_block: int) -> list[ChainEvent]:
        """The ``VerdictPosted`` events of one round in ``[from_block, to_block]``, in chain order: one ``eth_getLogs``.

        Args:
            task_id: the task.
            round_: the round.
            from_block: the first block to read (e.g. the round's first submission).
            to_block: the last block to read.

        Raises:
            ChainUnreachable: the node could not be reached after the retries.
        """
        topic = next(t for t, item in self._events.items() if item["name"] == "VerdictPosted")
        query: FilterParams = {
            "address": to_checksum_address(self.address),
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [
                "0x" + topic.hex(),
                "0x" + task_id.to_bytes(32, "big").hex(),
                "0x" + round_.to_bytes(32, "big").hex(),
            ],
        }
        logs = await self.chain._retry(lambda: self.chain.w3.eth.get_logs(query))
        return [ev for ev in (self.decode_log(lg) for lg in logs) if ev is not None]

    # --- transactions -------------------------------------------------------------------------

    async def publish(self, params: TaskParams, reward_wei: int) -> tuple[int, dict[str, Any]]:
        """Publishes a task (the paper's ``init()``); returns ``(taskId, receipt)``."""
        receipt = await self._tx(self.contract.functions.publish(params.as_tuple()), value=reward_wei)
        ev = next(e for e in self.events_of(receipt) if e.name == "TaskPublished")
        return ev.args["taskId"], receipt

    async def submit(
        self,
        task_id: int,
        model_hash: str,
        model_uri: str,
        payee: str,
        num_samples: int,
        *,
        max_threshold_bp: int,
        epsilon_spent: float = 0.0,
    ) -> dict[str, Any]:
        """Submits a model-update commitment (``submit_model_update``); returns the receipt.

        Args:
            task_id: the task.
            model_hash: keccak256 of the update's blob.
            model_uri: where the blob can be fetched.
            payee: who receives the reward.
            num_samples: the declared number of local samples (the FedAvg weight).
            max_threshold_bp: the highest threshold the device accepts to be judged against,
                normally the one it read before training: a raise that lands first makes the
                call revert (``FLTaskThresholdAboveLimit``) instead of binding the device to it.
            epsilon_spent: the privacy budget the device has spent on the task so far, this
                round's training included (emitted in ``ModelSubmitted`` in 1e-3 units).

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        fn = self.contract.functions.submit(
            task_id,
            to_bytes32(model_hash),
            model_uri,
            to_checksum_address(payee),
            num_samples,
            max_threshold_bp,
            epsilon_milli(epsilon_spent),
        )
        return await self._tx(fn)

    async def set_payee(self, task_id: int, round_: int, new_payee: str) -> dict[str, Any]:
        """Redirects this account's unclaimed reward of a round to ``new_payee`` (``setPayee``); returns the receipt.

        Raises:
            ChainError: the call reverts (e.g. ``FLTaskNothingToClaim``: no accepted, unclaimed verdict).
        """
        return await self._tx(self.contract.functions.setPayee(task_id, round_, to_checksum_address(new_payee)))

    async def announce_threshold(self, task_id: int, threshold_bp: int) -> dict[str, Any]:
        """Raises the task's accuracy threshold while a round is open (``announceThreshold``); returns the receipt.

        Args:
            task_id: the task.
            threshold_bp: the new threshold, in basis points (only upward).

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        return await self._tx(self.contract.functions.announceThreshold(task_id, threshold_bp))

    async def set_allowlist(self, task_id: int, devices: Iterable[str], allowed: bool) -> dict[str, Any]:
        """Adds devices to, or removes them from, the task's allowlist (``setAllowlist``); returns the receipt.

        Args:
            task_id: the task.
            devices: the device addresses (``0x``-hex, any case).
            allowed: whether they may submit.

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        addrs = [to_checksum_address(d) for d in devices]
        return await self._tx(self.contract.functions.setAllowlist(task_id, addrs, allowed))

    async def close_submissions(self, task_id: int) -> dict[str, Any]:
        """Closes the open round to submissions (``closeSubmissions``); returns the receipt.

        Args:
            task_id: the task.

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        return await self._tx(self.contract.functions.closeSubmissions(task_id))

    async def disclose_test_data(self, task_id: int, seed: bytes, groups: Sequence[Any]) -> dict[str, Any]:
        """Reveals the seed and the round's groups (``disclosure_test_data``)."""
        fn = self.contract.functions.discloseTestData(task_id, seed, [g.as_tuple() for g in groups])
        return await self._tx(fn)

    async def post_verdict(self, sub: Submission, accuracy_bp: int, reason: int, evaluator_hash: str) -> dict[str, Any]:
        """Posts the verdict on one submission (``evaluate_local_model``) and returns its receipt."""
        return await self.chain.wait(await self.send_verdict(sub, accuracy_bp, reason, evaluator_hash))

    async def send_verdict(self, sub: Submission, accuracy_bp: int, reason: int, evaluator_hash: str) -> PendingTx:
        """Sends the verdict on one submission without waiting for it to be mined (:meth:`Chain.send`).

        Verdicts sent one after another get consecutive nonces; collect their receipts with
        :meth:`Chain.wait`.

        Raises:
            ChainError: the call reverts when its gas is estimated (e.g. ``FLTaskVerdictAlreadyPosted``),
                the node rejects it, or the RPC fails.
        """
        fn = self.contract.functions.postVerdict(
            sub.task_id,
            to_checksum_address(sub.device),
            sub.as_tuple(),
            accuracy_bp,
            reason,
            to_bytes32(evaluator_hash),
        )
        return await self.chain.send(fn, decoder=self._errors)

    async def post_verdicts(
        self, verdicts: Sequence[tuple[Submission, int, int]], evaluator_hash: str
    ) -> dict[str, Any]:
        """Posts many verdicts of one task's closed round in one transaction (``postVerdicts``).

        Args:
            verdicts: ``(submission, accuracy_bp, reason)`` per device, all of one task.
            evaluator_hash: identifies the evaluation code and configuration.

        Raises:
            ValueError: for an empty batch or one that mixes tasks.
            ChainError: the call reverts (one bad verdict reverts the batch), or the RPC fails.
        """
        tasks = {sub.task_id for sub, _, _ in verdicts}
        if len(tasks) != 1:
            raise ValueError(f"a batch of verdicts needs exactly one task, got {sorted(tasks)}")
        batch = [(to_checksum_address(sub.device), sub.as_tuple(), acc, reason) for sub, acc, reason in verdicts]
        fn = self.contract.functions.postVerdicts(tasks.pop(), batch, to_bytes32(evaluator_hash))
        return await self._tx(fn)

    async def aggregate(
        self,
        task_id: int,
        model_hash: str,
        model_uri: str,
        accuracy_bp: int,
        *,
        seal_secret: bytes,
        next_seal_key: bytes | None,
    ) -> dict[str, Any]:
        """Commits the new global model (``aggregate_model_update`` + ``evaluate_model``).

        Args:
            task_id: the task.
            model_hash: the new global model's hash.
            model_uri: where its bytes are.
            accuracy_bp: its accuracy on the round's test groups.
            seal_secret: the round's secret seal key, disclosed by the call (:mod:`fedoracle.seal`).
            next_seal_key: the next round's public seal key (``None``: no next round, or set later).

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        fn = self.contract.functions.aggregate(
            task_id,
            to_bytes32(model_hash),
            model_uri,
            accuracy_bp,
            bytes(seal_secret),
            bytes(next_seal_key) if next_seal_key is not None else bytes(32),
        )
        return await self._tx(fn)

    async def set_seal_key(self, task_id: int, seal_key: bytes) -> dict[str, Any]:
        """Sets the open round's public seal key (``setSealKey``: the oracle, once per round).

        Raises:
            ChainError: the call reverts (e.g. ``FLTaskSealKeyAlreadySet``), or the RPC fails.
        """
        return await self._tx(self.contract.functions.setSealKey(task_id, bytes(seal_key)))

    async def finalize(self, task_id: int, accuracy_bp: int, report_hash: str, report_uri: str) -> dict[str, Any]:
        """Finalizes the task with its report (``finalize_contract`` + ``post_evaluation``)."""
        fn = self.contract.functions.finalize(task_id, accuracy_bp, to_bytes32(report_hash), report_uri)
        return await self._tx(fn)

    async def cancel(self, task_id: int) -> dict[str, Any]:
        """Cancels the task (``cancel``: a missed deadline, or a task nobody submitted to); returns the receipt.

        Args:
            task_id: the task.

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        return await self._tx(self.contract.functions.cancel(task_id))

    async def claim(self, task_id: int, round_: int, device: str) -> dict[str, Any]:
        """Pays a device's reward for a settled round to its recorded payee (``claim``); returns the receipt.

        Args:
            task_id: the task.
            round_: the round.
            device: the device that submitted (``0x``-hex, any case).

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        return await self._tx(self.contract.functions.claim(task_id, round_, to_checksum_address(device)))

    async def claim_many(self, task_id: int, rounds: Sequence[int], device: str) -> dict[str, Any]:
        """Pays a device's rewards for several settled rounds at once (``claimMany``); returns the receipt.

        One transfer per run of rounds with the same payee: the cheap way to claim at the end of a task.

        Args:
            task_id: the task.
            rounds: the rounds, each at most once, each with an unclaimed accepted verdict.
            device: the device that submitted (``0x``-hex, any case).

        Raises:
            ChainError: the call reverts (``FLTaskNothingToClaim`` names the first round with
                nothing), or the RPC fails.
        """
        fn = self.contract.functions.claimMany(task_id, list(rounds), to_checksum_address(device))
        return await self._tx(fn)

    async def reclaim_expired(self, task_id: int, round_: int, devices: Iterable[str]) -> dict[str, Any]:
        """Expires unclaimed shares after the task's claim window (``reclaimExpired``); returns the receipt.

        Their wei becomes refundable to the publisher (:meth:`refund`).

        Raises:
            ChainError: the call reverts (``FLTaskClaimWindowOpen`` before the window ends,
                ``FLTaskNothingToClaim`` for a device without an unclaimed share).
        """
        fn = self.contract.functions.reclaimExpired(task_id, round_, [to_checksum_address(d) for d in devices])
        return await self._tx(fn)

    async def refund(self, task_id: int) -> dict[str, Any]:
        """Returns the unallocated escrow to the publisher (``refund``); returns the receipt.

        Args:
            task_id: the task.

        Raises:
            ChainError: the call reverts (the message names the custom error), or the RPC fails.
        """
        return await self._tx(self.contract.functions.refund(task_id))

    # --- views --------------------------------------------------------------------------------

    async def task_count(self) -> int:
        """The number of tasks published so far (task ids run from 1 to it).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        return int(await self._call(self.contract.functions.taskCount()))

    async def get_task(self, task_id: int) -> dict[str, Any]:
        """The task's configuration and money accounting (``TaskConfig``), by field name.

        ``bytes32`` fields are ``0x``-hex strings.

        Args:
            task_id: the task (all fields zero for an unknown id).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        return _named(self._struct_names("getTask"), await self._call(self.contract.functions.getTask(task_id)))

    async def get_state(self, task_id: int) -> dict[str, Any]:
        """The task's live state (``TaskState``), by field name, with ``phase`` as a :class:`Phase`.

        Args:
            task_id: the task (phase ``NONE`` for an unknown id).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        state = _named(self._struct_names("getState"), await self._call(self.contract.functions.getState(task_id)))
        state["phase"] = Phase(state["phase"])
        return state

    async def get_known_state(self, task_id: int) -> dict[str, Any]:
        """:meth:`get_state` of a task that must exist: what a command about one task reads first.

        Raises:
            ConfigError: no such task (the message names the registry's range of ids).
            ChainError: the call reverts, or the RPC fails.
        """
        state = await self.get_state(task_id)
        if state["phase"] == Phase.NONE:
            count = await self.task_count()
            raise ConfigError(f"no task {task_id} on registry {self.address} (it has tasks 1 to {count})")
        return state

    async def get_round(self, task_id: int, round_: int) -> dict[str, Any]:
        """What is recorded about one round (``RoundRecord``), by field name; ``bytes32`` fields as ``0x``-hex.

        Args:
            task_id: the task.
            round_: the round.

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        return _named(
            self._struct_names("getRound"), await self._call(self.contract.functions.getRound(task_id, round_))
        )

    async def get_verdict(self, task_id: int, round_: int, device: str) -> dict[str, Any]:
        """The verdict on a device's submission (``Verdict``), by field name, with ``status`` as a :class:`Status`.

        Args:
            task_id: the task.
            round_: the round.
            device: the device (``0x``-hex, any case).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        fn = self.contract.functions.getVerdict(task_id, round_, to_checksum_address(device))
        verdict = _named(self._struct_names("getVerdict"), await self._call(fn))
        verdict["status"] = Status(verdict["status"])
        return verdict

    async def get_commitment(self, task_id: int, round_: int, device: str) -> bytes:
        """The commitment a device submitted in a round (32 bytes; all zero if none).

        Args:
            task_id: the task.
            round_: the round.
            device: the device (``0x``-hex, any case).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        fn = self.contract.functions.getCommitment(task_id, round_, to_checksum_address(device))
        commitment: bytes = await self._call(fn)
        return commitment

    async def claimable(self, task_id: int, round_: int, device: str) -> int:
        """Wei the device can claim for a round right now (0 if nothing is claimable).

        Args:
            task_id: the task.
            round_: the round.
            device: the device (``0x``-hex, any case).

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        return int(await self._call(self.contract.functions.claimable(task_id, round_, to_checksum_address(device))))

    async def refundable(self, task_id: int) -> int:
        """Wei the publisher can have refunded right now (0 before the task is finalized or cancelled).

        Args:
            task_id: the task.

        Raises:
            ChainError: the call reverts, or the RPC fails.
        """
        return int(await self._call(self.contract.functions.refundable(task_id)))

    @cache  # noqa: B019 - one small dict per registry instance
    def _struct_names(self, fn_name: str) -> list[str]:
        abi: Sequence[Mapping[str, Any]] = self.contract.abi
        item = next(i for i in abi if i.get("type") == "function" and i["name"] == fn_name)
        return [c["name"] for c in item["outputs"][0]["components"]]


def _named(names: list[str], values: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(names, values, strict=True))
    for k, v in out.items():
        if isinstance(v, bytes) and len(v) == 32:
            out[k] = "0x" + v.hex()
    return out
