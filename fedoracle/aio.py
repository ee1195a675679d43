"""``asyncio.run`` for the commands: the coroutine, then the chain connections it left open are closed.

Every command of every role (and the demo) runs its event loop through :func:`run`, so that no
web3 HTTP session is left for the garbage collector (aiohttp then logs "Unclosed client session"
at exit), whatever path the command took out: done, interrupted, or failed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` on a fresh event loop, then closes every open ``Chain``; returns ``main``'s result.

    Args:
        main: the command's coroutine.
    """
    return asyncio.run(_then_close(main))


async def _then_close(main: Coroutine[Any, Any, T]) -> T:
    try:
        return await main
    finally:
        chain = sys.modules.get("fedoracle.chain")  # never imported: no connection to close (and no web3 import)
        if chain is not None:
            await chain.close_chains()
