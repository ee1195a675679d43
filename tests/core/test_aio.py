"""``fedoracle.aio.run``: a command's event loop leaves no web3 HTTP session open (issue 15)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SCRIPT = """
import asyncio, gc, logging, sys
logging.basicConfig(level=logging.WARNING)
from fedoracle import aio
from fedoracle.chain import Chain

async def main():
    chains = [Chain(sys.argv[1]) for _ in range(3)]
    return [await c.block_number() for c in chains]

runner = aio.run if sys.argv[2] == "aio" else asyncio.run
print(runner(main()))
import aiohttp
open_sessions = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]
print("open", len(open_sessions), flush=True)
del open_sessions
gc.collect()  # what a long-lived role does at some point: drop what the loop held
"""


@pytest.mark.parametrize("runner", ["aio", "asyncio"])
def test_no_session_is_left_open(anvil, runner):
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, anvil.rpc_url, runner], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    still_open = int(done.stdout.split("open ")[1].split()[0])
    if runner == "aio":
        assert still_open == 0 and "Unclosed client session" not in done.stderr, done.stderr[-2000:]
    else:  # the control: the same work under a bare asyncio.run leaves every session open (what roles did)
        assert still_open == 3
