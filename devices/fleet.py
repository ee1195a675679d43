"""Fleets: P devices in one process, honest, malicious and unreliable, as in the paper's experiments.

Each device has its own key, payee, MQTT connection and data shard; training runs on a shared
worker pool. Keys are derived from a fleet seed (``keccak256(seed, i)``) so a fleet can be
restarted with the same identities; on a dev chain the fleet funds them from a faucet account.
A fleet can be split over processes or hosts (``first_index``/``count`` slices of ``fleet_size``
devices, down to one device per process); the devices need only the RPC URL, the broker URL and
the blob store, never the oracle's files.
The fleet writes its devices' state (kind, submissions, verdicts, claims, ε spent) to a JSON
file, which the demo's report reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from devices.client import Device, TrainingConfig
from fedoracle.blobstore import BlobStore
from fedoracle.chain import Chain, load_account
from fedoracle.defaults import DEFAULTS, FleetSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetConfig(FleetSettings):
    """Who is in the fleet and how they behave (the mix and shards: :class:`~fedoracle.defaults.FleetSettings`).

    Attributes:
        count: devices in this process.
        dataset, data_path: the data set the shards are drawn from.
        key_seed: seeds the devices' keys and payees.
        first_index: the first device of this process's slice.
        seed: the fleet's seed (kinds, shards, training).
        training: how each device trains.
        train_workers: threads training at once.
        fleet_size: devices in the whole fleet when this process runs a slice of it.
        tasks: join only these task ids (``None``: every task heard of).
        attack: what the malicious devices do: ``"label_flip"`` (train on flipped labels, the
            paper's attack) or a crafted attack of :data:`fedoracle.learning.attacks.CRAFTED`
            (``fang_krum``, ``fang_trmean``, ``min_max``, ``min_sum``), colluding with each other
            only (:class:`devices.training.Coalition`).
    """

    count: int = DEFAULTS.devices
    dataset: str = DEFAULTS.dataset
    data_path: str | None = None
    key_seed: str = DEFAULTS.key_seed
    first_index: int = 0
    seed: int = DEFAULTS.fleet_seed
    training: TrainingConfig = field(default_factory=TrainingConfig)
    train_workers: int = 1
    fleet_size: int | None = None
    tasks: list[int] | None = None
    attack: str = "label_flip"

    def __post_init__(self) -> None:
        from fedoracle.learning.attacks import CRAFTED

        if self.attack not in ("label_flip", *CRAFTED):
            raise ValueError(
                f"unknown fleet attack {self.attack!r}; expected label_flip or one of {', '.join(CRAFTED)}"
            )


def device_key(key_seed: str, index: int) -> bytes:
    """Private key of fleet device ``index``."""
    return keccak(f"{key_seed}/device/{index}".encode())


def payee_address(key_seed: str, index: int) -> str:
    """Payee of fleet device ``index`` (a separate account, so rewards are easy to see)."""
    payee: LocalAccount = Account.from_key(keccak(f"{key_seed}/payee/{index}".encode()))
    return payee.address


async def fund(rpc_url: str, faucet_key: str, addresses: list[str], wei: int) -> None:
    """Tops every address up to ``wei`` from the faucet (dev chains)."""
    account = load_account(faucet_key)
    faucet = Chain(rpc_url, account)
    try:
        await _fund(faucet, account, addresses, wei)
    finally:
        await faucet.close()


async def _fund(faucet: Chain, account: LocalAccount, addresses: list[str], wei: int) -> None:
    w3 = faucet.w3
    for addr in addresses:
        missing = wei - await faucet.balance(addr)
        if missing <= 0:
            continue
        async with faucet._lock:
            if faucet._nonce is None:
                faucet._nonce = await w3.eth.get_transaction_count(account.address, "pending")
            tx: dict[str, Any] = {
                "to": addr,
                "value": missing,
                "gas": 21_000,
                "nonce": faucet._nonce,
                "chainId": await faucet.chain_id(),
                "gasPrice": await w3.eth.gas_price,
            }
            signed = account.sign_transaction(tx)
            await w3.eth.send_raw_transaction(signed.raw_transaction)
            faucet._nonce += 1
    # wait for the last one
    while any([await faucet.balance(a) < wei for a in addresses[-1:]]):
        await asyncio.sleep(0.05)


class Fleet:
    """P devices in this process.

    Args:
        config: the fleet's make-up.
        rpc_url, registry, blobs, broker_url: where the devices connect.
        status_file: where the fleet's state is written (``None``: nowhere).
    """

    def __init__(
        self,
        config: FleetConfig,
        rpc_url: str,
        registry: str,
        blobs: BlobStore,
        broker_url: str,
        status_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.rpc_url, self.registry, self.blobs, self.broker_url = rpc_url, registry, blobs, broker_url
        self.status_file = Path(status_file) if status_file else None
        self.executor = ThreadPoolExecutor(max_workers=config.train_workers, thread_name_prefix="train")
        self.devices: list[Device] = []

    def build(self) -> list[Device]:
        """Loads the data set, partitions it and creates the devices."""
        from devices.training import make_trainers

        trainers = make_trainers(self.config)
        for i, (kind, trainer) in enumerate(trainers):
            index = self.config.first_index + i
            account = Account.from_key(device_key(self.config.key_seed, index))
            self.devices.append(
                Device(
                    account,
                    self.rpc_url,
                    self.registry,
                    self.blobs,
                    self.broker_url,
                    trainer,
                    payee=payee_address(self.config.key_seed, index),
                    executor=self.executor,
                    name=f"{kind}-{index}",
                    kind=kind,
                    tasks=set(self.config.tasks) if self.config.tasks else None,
                )
            )
        return self.devices

    def snapshot(self) -> dict[str, Any]:
        """The fleet's state as JSON-able data."""
        return {
            "devices": [
                {
                    "address": d.address,
                    "payee": d.payee,
                    "kind": d.kind,
                    "name": d.name,
                    "submitted": d.stats.submitted,
                    "skipped": d.stats.skipped,
                    "claimed_wei": d.stats.claimed_wei,
                    "claims": d.stats.claims,
                    "verdicts": {f"{k[0]}/{k[1]}": v for k, v in d.stats.verdicts.items()},
                    "epsilon_spent": getattr(d.train, "epsilon_spent", None),
                    "delta": getattr(d.train, "target_delta", None),
                }
                for d in self.devices
            ]
        }

    def write_status(self) -> None:
        """Writes :meth:`snapshot` to the status file, atomically (nothing without one)."""
        if self.status_file is not None:
            tmp = self.status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.snapshot(), indent=1, default=str))
            os.replace(tmp, self.status_file)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs every device until ``stop`` is set (forever when ``None``)."""
        if not self.devices:
            self.build()
        tasks = [asyncio.create_task(d.run(), name=d.name) for d in self.devices]
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                self.write_status()
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.write_status()
            self.executor.shutdown(wait=False, cancel_futures=True)


def config_dict(config: FleetConfig) -> dict[str, Any]:
    """The fleet's configuration as plain data (nested dataclasses too, by :func:`dataclasses.asdict`)."""
    return asdict(config)
