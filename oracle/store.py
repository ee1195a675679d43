"""The oracle's durable checkpoint (sqlite): where it is in the chain and what it has seen.

A cache of the chain, never a second source of truth: ``next_block`` is the low-watermark the
log follower resumes from; ``events`` holds the ``(txHash, logIndex)`` keys already applied (so a
range replayed after a crash applies nothing twice); ``submissions`` mirrors ``ModelSubmitted``
(rows of a reorged-away log are deleted); ``scores`` caches evaluation results so a restart does
not redo them; ``actions`` records every transaction the oracle sent, for audit and metrics: a row is written
as soon as the node has accepted the transaction (``status='sent'``) and completed with its
receipt (``mined`` or ``reverted``), so a crash in between leaves a row that the next start
resolves from the chain. Whether a verdict exists is always asked of the contract before one is
posted.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedoracle.chain import ChainEvent, Submission
from fedoracle.errors import StateLocked

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, block_number INTEGER NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (tx_hash, log_index));
CREATE TABLE IF NOT EXISTS submissions (
    task_id INTEGER NOT NULL, round INTEGER NOT NULL, device TEXT NOT NULL, payee TEXT NOT NULL,
    model_hash TEXT NOT NULL, model_uri TEXT NOT NULL, threshold_bp INTEGER NOT NULL,
    num_samples INTEGER NOT NULL, block_number INTEGER NOT NULL, tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL, PRIMARY KEY (task_id, round, device));
CREATE TABLE IF NOT EXISTS scores (
    task_id INTEGER NOT NULL, round INTEGER NOT NULL, device TEXT NOT NULL, model_hash TEXT NOT NULL,
    accuracy_bp INTEGER NOT NULL, reason INTEGER NOT NULL, detail TEXT NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (task_id, round, device, model_hash));
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, task_id INTEGER NOT NULL, round INTEGER NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, tx_hash TEXT NOT NULL, gas_used INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'mined', block_number INTEGER);
"""

SENT, MINED, REVERTED, DROPPED = "sent", "mined", "reverted", "dropped"


@dataclass(frozen=True)
class Score:
    """The outcome of evaluating one submission."""

    accuracy_bp: int
    reason: int
    detail: str = ""
    seconds: float = 0.0


class Checkpoint:
    """The oracle's checkpoint: one sqlite file in WAL mode, every write durable (``synchronous=FULL``).

    Args:
        path: the sqlite file; it and its folder are created with the schema on first use, and a
            file written by an older version gains the columns it lacks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(actions)")}
        if "status" not in columns:  # a checkpoint written before actions had a status
            self.db.execute("ALTER TABLE actions ADD COLUMN status TEXT NOT NULL DEFAULT 'mined'")
            self.db.execute("ALTER TABLE actions ADD COLUMN block_number INTEGER")

    def close(self) -> None:
        """Closes the database connection."""
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: a batch of events and the watermark move together."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- watermark and applied events ----------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value stored under ``key`` in the ``meta`` table, or ``default``."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        """Stores ``value`` under ``key`` in the ``meta`` table (replacing any earlier value)."""
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    @property
    def next_block(self) -> int | None:
        """The first block whose events are not applied yet; ``None`` before the first batch."""
        value = self.get("next_block")
        return None if value is None else int(value)

    def apply(self, ev: ChainEvent) -> bool:
        """Records ``ev`` (or undoes it when ``removed``); False when it was already applied.

        Must run inside :meth:`transaction` together with the watermark update.
        """
        if ev.removed:
            cur = self.db.execute("DELETE FROM events WHERE tx_hash=? AND log_index=?", (ev.tx_hash, ev.log_index))
            if cur.rowcount and ev.name == "ModelSubmitted":
                self.db.execute("DELETE FROM submissions WHERE tx_hash=? AND log_index=?", (ev.tx_hash, ev.log_index))
            return bool(cur.rowcount)
        cur = self.db.execute(
            "INSERT OR IGNORE INTO events(tx_hash, log_index, block_number, name) VALUES(?, ?, ?, ?)",
            (ev.tx_hash, ev.log_index, ev.block_number, ev.name),
        )
        if not cur.rowcount:
            return False
        if ev.name == "ModelSubmitted":
            s = Submission.from_event(ev)
            self.db.execute(
                "INSERT OR REPLACE INTO submissions VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.task_id,
                    s.round,
                    s.device.lower(),
                    s.payee,
                    s.model_hash,
                    s.model_uri,
                    s.threshold_bp,
                    s.num_samples,
                    ev.block_number,
                    ev.tx_hash,
                    ev.log_index,
                ),
            )
        return True

    def applied_count(self, name: str | None = None) -> int:
        """How many events have been applied (only those called ``name``, when given)."""
        if name is None:
            return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM events WHERE name=?", (name,)).fetchone()[0])

    # --- submissions and scores ----------------------------------------------------------------

    def submissions(self, task_id: int, round_: int) -> list[Submission]:
        """The mirrored submissions of a round, in chain order (block, then log index)."""
        rows = self.db.execute(
            "SELECT task_id, round, device, payee, model_hash, model_uri, threshold_bp, num_samples FROM submissions "
            "WHERE task_id=? AND round=? ORDER BY block_number, log_index",
            (task_id, round_),
        ).fetchall()
        return [Submission(*row) for row in rows]

    def submission_block(self, sub: Submission) -> int | None:
        """The block the mirrored ``ModelSubmitted`` of ``sub`` was read from."""
        row = self.db.execute(
            "SELECT block_number FROM submissions WHERE task_id=? AND round=? AND device=?",
            (sub.task_id, sub.round, sub.device.lower()),
        ).fetchone()
        return row[0] if row else None

    def forget_submission(self, sub: Submission) -> None:
        """Drops a mirrored submission the chain does not have.

        Its log was reorged away while the oracle was not watching. The event key goes too, so a
        re-read applies the chain's log.
        """
        row = self.db.execute(
            "SELECT tx_hash, log_index FROM submissions WHERE task_id=? AND round=? AND device=?",
            (sub.task_id, sub.round, sub.device.lower()),
        ).fetchone()
        if row is None:
            return
        with self.transaction():
            self.db.execute("DELETE FROM events WHERE tx_hash=? AND log_index=?", row)
            self.db.execute(
                "DELETE FROM submissions WHERE task_id=? AND round=? AND device=?",
                (sub.task_id, sub.round, sub.device.lower()),
            )

    def score(self, sub: Submission) -> Score | None:
        """The cached score of ``sub`` (same device, round and model hash), if it was evaluated."""
        row = self.db.execute(
            "SELECT accuracy_bp, reason, detail, seconds FROM scores WHERE task_id=? AND round=? AND device=? "
            "AND model_hash=?",
            (sub.task_id, sub.round, sub.device.lower(), sub.model_hash),
        ).fetchone()
        return Score(*row) if row else None

    def save_score(self, sub: Submission, score: Score) -> None:
        """Caches the score of ``sub``, replacing an earlier one for the same model."""
        self.db.execute(
            "INSERT OR REPLACE INTO scores VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sub.task_id,
                sub.round,
                sub.device.lower(),
                sub.model_hash,
                score.accuracy_bp,
                score.reason,
                score.detail,
                score.seconds,
            ),
        )

    def scores(self, task_id: int | None = None) -> list[tuple[Any, ...]]:
        """``(task, round, device, model_hash, accuracy_bp, reason, detail, seconds)`` rows."""
        q = "SELECT * FROM scores" + (" WHERE task_id=?" if task_id is not None else "")
        return self.db.execute(q + " ORDER BY task_id, round, device", () if task_id is None else (task_id,)).fetchall()

    # --- the transactions the oracle sent ------------------------------------------------------

    def sent_action(self, task_id: int, round_: int, action: str, subject: str, tx_hash: str) -> None:
        """Records a transaction the node has accepted (before its receipt is awaited)."""
        self.db.execute(
            "INSERT INTO actions(at, task_id, round, action, subject, tx_hash, gas_used, status) "
            "VALUES(?, ?, ?, ?, ?, ?, 0, ?)",
            (time.time(), task_id, round_, action, subject, tx_hash.lower(), SENT),
        )

    def finish_action(self, tx_hash: str, receipt: Mapping[str, Any] | None, status: str | None = None) -> None:
        """Completes a sent transaction's row from its receipt (or marks it ``dropped``)."""
        if receipt is None:
            self.db.execute("UPDATE actions SET status=? WHERE tx_hash=?", (status or DROPPED, tx_hash.lower()))
            return
        status = status or (MINED if receipt["status"] == 1 else REVERTED)
        self.db.execute(
            "UPDATE actions SET at=?, gas_used=?, status=?, block_number=? WHERE tx_hash=?",
            (time.time(), int(receipt["gasUsed"]), status, int(receipt["blockNumber"]), tx_hash.lower()),
        )

    def record_action(self, task_id: int, round_: int, action: str, subject: str, receipt: Mapping[str, Any]) -> None:
        """Records a mined transaction (sent and finished at once)."""
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        if not self.db.execute("SELECT 1 FROM actions WHERE tx_hash=?", (tx_hash,)).fetchone():
            self.sent_action(task_id, round_, action, subject, tx_hash)
        self.finish_action(tx_hash, receipt)

    def pending_actions(self) -> list[tuple[str, str]]:
        """``(tx_hash, action)`` of transactions sent but not known to be mined (a crash came between)."""
        return self.db.execute("SELECT tx_hash, action FROM actions WHERE status=? ORDER BY id", (SENT,)).fetchall()

    def actions(self, action: str | None = None, task_id: int | None = None) -> list[tuple[Any, ...]]:
        """``(task, round, action, subject, tx_hash, gas_used)`` rows of mined transactions, in order."""
        rows = self.action_rows(action, task_id)
        return [
            (r["task_id"], r["round"], r["action"], r["subject"], r["tx_hash"], r["gas_used"])
            for r in rows
            if r["status"] == MINED
        ]

    def action_rows(self, action: str | None = None, task_id: int | None = None) -> list[dict[str, Any]]:
        """Every recorded transaction (any status) as dicts, in the order they were sent."""
        where: list[str] = []
        args: list[str | int] = []
        if action is not None:
            where.append("action=?")
            args.append(action)
        if task_id is not None:
            where.append("task_id=?")
            args.append(task_id)
        q = (
            "SELECT id, at, task_id, round, action, subject, tx_hash, gas_used, status, block_number FROM actions"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id"
        )
        cols = ["id", "at", "task_id", "round", "action", "subject", "tx_hash", "gas_used", "status", "block_number"]
        return [dict(zip(cols, row, strict=True)) for row in self.db.execute(q, args).fetchall()]


class StateLock:
    """An exclusive, non-blocking lock on a state file (``flock``): one process per state.

    The operating system releases it when the process dies, however it dies (``kill -9``
    included), so a crashed holder never blocks its restart.

    Args:
        path: the lock file (created if missing).
        what: the holder's role, for the error message.

    Raises:
        StateLocked: when another process holds the lock.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "process") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise StateLocked(
                f"{self.path.parent} is in use by {what} {holder}; stop it first or give this one its own --state-dir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        """Releases the lock (idempotent)."""
        if not self._file.closed:
            self._file.close()
