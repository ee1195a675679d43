"""Crash points for fault tests: the daemon kills itself at a named point when told to.

``FEDORACLE_CRASH_AT=<point>:<action>:<n>`` makes the process SIGKILL itself (its whole process
group when it leads one, so its TFF worker goes too) the ``n``-th time it reaches ``point`` for
``action`` (``*`` matches any action). Points: ``before_send``, ``after_send`` (the node has the
transaction, its receipt is not awaited yet, nothing is recorded), ``after_receipt`` (mined, not
recorded), ``after_commit`` (a block range applied to the checkpoint), ``after_score`` (a score
saved). Several specs may be given separated by commas. Unset, :func:`crash_point` costs a dict
lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)

_SPECS: list[tuple[str, str, int]] = []
_counts: Counter[tuple[str, str]] = Counter()


def _parse(text: str) -> list[tuple[str, str, int]]:
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        point, action, n = part.split(":")
        specs.append((point, action, int(n)))
    return specs


_SPECS = _parse(os.environ.get("FEDORACLE_CRASH_AT", ""))


def crash_point(point: str, action: str = "*") -> None:
    """Dies here (SIGKILL) if a crash spec names this point, action and occurrence."""
    if not _SPECS:
        return
    for spec_point, spec_action, n in _SPECS:
        if spec_point == point and spec_action in ("*", action):
            _counts[(point, spec_action)] += 1
            if _counts[(point, spec_action)] == n:
                log.warning("crash point %s:%s:%d reached: killing this process", point, spec_action, n)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
