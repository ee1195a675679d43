"""The node goes away and comes back; a nonce is taken behind the oracle's back.

RPC calls retry with backoff, the daemon waits out an outage longer than its retries and then
finishes the round; a nonce taken by an outside transaction from the oracle's account is
recovered from ("nonce too low").
"""

from __future__ import annotations

import asyncio

import pytest

from demo.services import free_port
from fedoracle.chain import Chain, ChainError, Phase, Status, dev_account
from fedoracle.errors import Reason
from tests.conftest import run
from tests.core.test_chain import params
from tests.oracle.harness import Harness
from tests.oracle.kit import make_blob, publish, submit, task_events, verdict_counts, wait_phase


class Outage:
    """A TCP relay in front of the node that can be taken down and brought back on the same port.

    Taken down, it refuses new connections and cuts the open ones.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_calls_retry_with_backoff_until_the_node_is_back(node, caplog):
    async def go():
        relay = Outage(node.port)
        await relay.up()
        chain = Chain(relay.url)
        before = await chain.block_number()
        await relay.down()

        async def back_later():
            await asyncio.sleep(1.0)
            await relay.up()

        asyncio.get_running_loop().create_task(back_later())
        after = await chain.block_number()  # fails first, then succeeds once the node is back
        await relay.down()
        with pytest.raises(ChainError, match="unreachable"):
            await Chain(relay.url, retries=3).block_number()
        return before, after

    before, after = run(go())
    assert after >= before
    assert caplog.text.count("rpc error, retrying") >= 2


def test_the_daemon_waits_out_an_outage_longer_than_its_retries(node, reg, models, mnist, tmp_path, caplog):
    async def go():
        relay = Outage(node.port)
        await relay.up()
        h = Harness(node.rpc_url, reg, tmp_path)
        t = await publish(reg, h.blobs, h.vault, models, mnist, oracle=h.oracle_address, cap=2)
        # Two attempts (each with web3's own five quick retries): gives up after ~4 s.
        await h.start(t.block, rpc_url=relay.url, retries=2)
        try:
            await relay.down()
            await submit(
                node.rpc_url, reg.address, 50, t.task_id, make_blob("good", h.blobs, models, models.initial), h.blobs
            )
            await submit(
                node.rpc_url, reg.address, 51, t.task_id, make_blob("noise", h.blobs, models, models.initial), h.blobs
            )
            await asyncio.sleep(9)  # longer than the client's retries: the daemon must wait on
            alive_in_outage = h.alive()
            await relay.up()
            await wait_phase(reg, t.task_id, Phase.FINALIZED, 300, alive=h.alive)
            return (
                t,
                alive_in_outage,
                await task_events(reg, t.task_id, t.block),
                [await reg.get_verdict(t.task_id, 1, dev_account(i).address) for i in (50, 51)],
            )
        finally:
            await h.stop()
            await relay.down()

    t, alive_in_outage, events, (good, noise) = run(asyncio.wait_for(go(), 600))
    assert alive_in_outage
    assert "rpc error, retrying" in caplog.text and "action=rpc_wait" in caplog.text
    assert sorted(verdict_counts(events).values()) == [1, 1]
    assert good["status"] == Status.ACCEPTED
    assert noise["status"] == Status.REJECTED and noise["reason"] == Reason.BELOW_THRESHOLD


def test_a_nonce_taken_behind_the_clients_back_is_recovered(node, reg):
    from fedoracle.chain import TaskRegistry

    async def go():
        mine = TaskRegistry(Chain(node.rpc_url, dev_account(60)), reg.address)
        other = TaskRegistry(Chain(node.rpc_url, dev_account(60)), reg.address)  # same key, another process
        await mine.publish(params(), 10**15)  # caches the next nonce
        await other.publish(params(), 10**15)  # takes it
        # "nonce too low": nothing was sent; the client re-reads its nonce and sends again itself.
        task_id, receipt = await mine.publish(params(), 10**15)
        return receipt["status"]

    assert run(go()) == 1
