"""Following a registry's events: ``eth_getLogs`` over block ranges, confirmations, reorgs.

Polling ``eth_getLogs`` works against every node (filters and subscriptions can expire or be
unsupported), and a block range is the natural unit of a checkpoint: a consumer handles the
events of ``[start, end]`` and then stores ``end + 1``. Only blocks at least ``confirmations``
deep are read. The follower remembers the hashes of the blocks it has read; when the node's
block at one of those heights changes (a reorg), it re-emits the events it had emitted from the
replaced blocks with ``removed=True`` and reads the new branch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from web3.exceptions import BlockNotFound

from fedoracle.chain import ChainEvent, TaskRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Events of the blocks ``start..end`` (inclusive), in chain order."""

    start: int
    end: int
    events: list[ChainEvent]


class LogFollower:
    """Yields :class:`Batch` es of a registry's events, forever.

    Args:
        registry: the contract to follow.
        start_block: the first block to read.
        confirmations: how deep a block must be before its events are read (0 on a dev chain).
        poll_interval: seconds to sleep when there is no new block.
        max_range: the most blocks one ``eth_getLogs`` spans.
        reorg_depth: how many recent blocks (with events) are remembered to detect reorgs.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        start_block: int,
        *,
        confirmations: int = 0,
        poll_interval: float = 0.25,
        max_range: int = 2_000,
        reorg_depth: int = 64,
    ) -> None:
        self.registry = registry
        self.next_block = start_block
        self.confirmations = confirmations
        self.poll_interval = poll_interval
        self.max_range = max_range
        self.reorg_depth = reorg_depth
        self._seen: OrderedDict[int, tuple[str, list[ChainEvent]]] = OrderedDict()

    async def _block_hash(self, number: int) -> str | None:
        """The node's hash of block ``number``; ``None`` when the chain is shorter (after a reorg)."""
        try:
            block = await self.registry.chain._retry(lambda: self.registry.chain.w3.eth.get_block(number))
        except BlockNotFound:
            return None
        return None if block is None else "0x" + bytes(block["hash"]).hex()

    async def _check_reorg(self) -> list[ChainEvent]:
        """Rewinds past replaced blocks; returns the removed events (newest first)."""
        removed: list[ChainEvent] = []
        while self._seen:
            number, (known_hash, events) = next(reversed(self._seen.items()))
            if await self._block_hash(number) == known_hash:
                break
            log.warning("reorg: block %d was replaced; rewinding", number)
            self._seen.popitem()
            removed.extend(replace(ev, removed=True) for ev in reversed(events))
            self.next_block = number
        return removed

    async def poll(self) -> Batch | None:
        """Reads the next range of confirmed blocks; ``None`` when there is none yet."""
        removed = await self._check_reorg()
        head = await self.registry.chain.block_number()
        safe = head - self.confirmations
        if safe < self.next_block:
            return Batch(self.next_block, self.next_block - 1, removed) if removed else None
        start, end = self.next_block, min(safe, self.next_block + self.max_range - 1)
        events = await self.registry.get_events(start, end)
        by_block: dict[int, list[ChainEvent]] = {}
        for ev in events:
            by_block.setdefault(ev.block_number, []).append(ev)
        # Remember the blocks with events, and the range's last block: if a remembered block is
        # unchanged, so are all its ancestors (each block commits to its parent).
        for number, evs in by_block.items():
            self._seen[number] = (evs[0].block_hash, evs)
        if end not in self._seen:
            self._seen[end] = (await self._block_hash(end) or "", [])
        while len(self._seen) > self.reorg_depth:
            self._seen.popitem(last=False)
        self.next_block = end + 1
        return Batch(start, end, removed + events)

    async def batches(self) -> AsyncIterator[Batch]:
        """Polls forever, yielding each non-empty range (and empty ones, so checkpoints advance)."""
        while True:
            batch = await self.poll()
            if batch is None:
                await asyncio.sleep(self.poll_interval)
                continue
            yield batch
