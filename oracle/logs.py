"""Structured logs of the oracle's actions: one line per action, as ``key=value`` pairs or JSON.

:func:`emit` logs an action with its fields (task, round, action, device, tx, gas, reason, ...).
The message itself is the ``key=value`` rendering, so the default text format of the CLI is
already greppable; :class:`JsonFormatter` turns every record (actions and plain messages alike)
into one JSON object per line for log shippers. Standard library only.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

FIELDS = "fields"  # the LogRecord attribute that carries an action's fields


def _value(v: Any) -> str:
    text = str(v)
    return json.dumps(text) if (not text or any(c in text for c in ' ="')) else text


def render(fields: dict[str, Any]) -> str:
    """``key=value`` pairs in the given order (values with spaces or quotes are JSON-quoted)."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)


def emit(logger: logging.Logger, action: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Logs one oracle action with its fields (``None`` values are left out).

    ``logger``, ``action`` and ``level`` are positional-only, so a field may have any name; a field
    called ``action`` would hide the record's own and is refused.
    """
    if "action" in fields:
        raise TypeError("emit: name the field something other than 'action' (e.g. 'step')")
    record = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
    logger.log(level, "%s", render(record), extra={FIELDS: record})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, then the action's fields (or ``msg``)."""

    def format(self, record: logging.LogRecord) -> str:
        """Renders ``record`` as one line of JSON (values that are not JSON are stringified)."""
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, FIELDS, None)
        if fields:
            out.update(fields)
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=...`` followed by the action's fields (or ``msg=...``)."""

    def format(self, record: logging.LogRecord) -> str:
        """Renders ``record`` as one line of ``key=value`` pairs, then its traceback if any."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        head = {"ts": ts, "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, FIELDS, None) or {"msg": record.getMessage()}
        line = render({**head, **fields})
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(fmt: str) -> None:
    """Sets the format of the root logger's handlers and shows the oracle's actions.

    The ``oracle`` loggers log at INFO even when the rest of the process logs warnings only.

    Args:
        fmt: ``kv`` (:class:`KeyValueFormatter`), ``json`` (:class:`JsonFormatter`) or ``text``
            (keep the CLI's format).
    """
    logging.getLogger("oracle").setLevel(logging.INFO)
    if fmt == "text":
        return
    formatter = JsonFormatter() if fmt == "json" else KeyValueFormatter()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(formatter)
