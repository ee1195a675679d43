"""An in-process oracle on its own anvil, for tests that bend the chain.

Reorgs, pending transactions, outages: start it, stop it (or drop it mid-step, like a crash),
start it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from fedoracle.blobstore import LocalBlobStore
from fedoracle.chain import Chain, TaskRegistry, dev_account
from oracle.daemon import Oracle, OracleConfig
from oracle.pool import InProcessPool
from oracle.scoring import Scorer

ORACLE = 3


@dataclass
class Harness:
    """A registry on ``rpc_url``, a blob store and a vault under ``tmp``, and the oracle's lives."""

    rpc_url: str
    registry: TaskRegistry
    tmp: Path
    blobs: LocalBlobStore = field(init=False)
    vault: Path = field(init=False)
    oracle: Oracle | None = None
    daemon: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.blobs = LocalBlobStore(self.tmp / "blobs")
        self.vault = self.tmp / "vault"

    @property
    def oracle_address(self) -> str:
        return dev_account(ORACLE).address

    async def start(
        self, from_block: int, rpc_url: str | None = None, retries: int = 5, oracle_cls: type[Oracle] = Oracle
    ) -> Oracle:
        """Starts an oracle (of ``oracle_cls``: a subclass plays a dishonest one) and waits until it is up."""
        chain = Chain(rpc_url or self.rpc_url, dev_account(ORACLE), retries=retries)
        self.oracle = oracle_cls(
            chain,
            self.registry.address,
            self.blobs,
            InProcessPool(Scorer(self.blobs, str(self.vault))),
            OracleConfig(
                vault=self.vault,
                state_dir=self.tmp / "state",
                poll_interval=0.1,
                from_block=from_block,
                max_backoff=2.0,
                threshold_margin=None,
            ),
        )
        ready = asyncio.Event()
        self.daemon = asyncio.create_task(self.oracle.run(ready))
        up = asyncio.create_task(ready.wait())
        await asyncio.wait({up, self.daemon}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not up.done():
            up.cancel()
            if self.daemon.done():  # the start-up itself died: say how
                self.daemon.result()
            raise TimeoutError("the oracle did not come up within 60 s")
        return self.oracle

    async def stop(self, crash: bool = False) -> None:
        """Stops the oracle cleanly, or (``crash``) cancels it wherever it is awaiting."""
        if self.oracle is None:
            return
        if crash:
            self.daemon.cancel()
        else:
            self.oracle.stopped.set()
        await asyncio.gather(self.daemon, return_exceptions=True)
        await self.oracle.close()
        self.oracle = self.daemon = None

    def alive(self) -> bool:
        return self.daemon is not None and not self.daemon.done()

    def __repr__(self) -> str:
        if self.daemon is not None and self.daemon.done() and not self.daemon.cancelled():
            return f"Harness(daemon died: {self.daemon.exception()!r})"
        return "Harness()"


async def deploy(rpc_url: str, tmp: Path) -> Harness:
    return Harness(rpc_url, await TaskRegistry.deploy(Chain(rpc_url, dev_account(0))), tmp)


async def rpc(registry: TaskRegistry, method: str, *params):
    return (await registry.chain.w3.provider.make_request(method, list(params)))["result"]
