"""A validator's durable pool of transactions received but not yet in a final block.

A message is written here (SQLite WAL) inside the MQTT message handler, before the client
acknowledges it to the broker, so a transaction the broker handed over survives a crash of the
node process; it leaves the pool once a final block holds it or it was refused. The pool uses
synchronous=NORMAL, not FULL: a power cut may lose its last writes, which costs nothing (every
validator holds a copy, and the agent's outbox keeps each message until a signed notice says a
final block holds it), while an fsync per message on every validator halved the network's
throughput (bench_network: 620 vs 1,114 tx/s, p95 7.96 vs 4.44 s, same machine, quiet).

On MQTT the node writes in batches (``add(raw, batch=True)``, then ``flush``): the bus hands
over every message read from the broker in one go, the node adds each to the open batch, and
the bus calls ``flush`` (one commit) before it acknowledges any of them (MqttBus.defer_acks).
So a message is still durable before the broker hears it was received, at one commit per batch
instead of one per message. Any other write made while a batch is open (``remove``,
``quarantine``, from the node's loop) joins it and is committed with it.

A message whose handling failed in an unexpected way (a bug, not a refusal with a reason) is
moved to ``quarantine`` with the error, so a restart never replays it into a crash loop; the
operator can read it there (``peerwatt node status`` counts them). The quarantine keeps the
newest QUARANTINE_KEEP messages.

A pool damaged on disk is found when it is opened (``PRAGMA quick_check``, which reads every page:
``count(*)`` alone missed a damaged data page, and the node's start then died with a traceback in
``all``) and refused with MempoolError saying to move it away. A read that fails later is a
MempoolError too, except ``len``, which the status asks for: it logs the error once and says the
last count it read.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chain.store import sqlite_hint

log = logging.getLogger("peerwatt.node")

QUARANTINE_KEEP = 1000
# what to do with a damaged pool (said when it is opened or read)
_MOVE_AWAY = (
    "it holds only messages not yet in a block, which the agents send again: move it away and "
    "start the node again"
)

# a failed write keeps the messages in memory meanwhile: said after the fix (chain.store.sqlite_hint)
_KEPT = "the messages stay in memory and the agents send them again until a block holds them"


def _write_error(path: Path, exc: sqlite3.Error | None) -> str:
    """The one line for a write that failed with ``exc`` (None: SQLite rolled a batch back after
    an earlier error), with what to do about it."""
    if exc is None:
        return f"cannot write the mempool {path}: a batch was rolled back ({_KEPT})"
    hint = sqlite_hint(exc, "mempool")
    return f"cannot write the mempool {path}: {exc} ({hint + '; ' if hint else ''}{_KEPT})"


class MempoolError(Exception):
    """The pool cannot be written (disk full, read-only); the message says why."""


class Mempool:
    """Pending raw messages keyed by SHA-256 of their bytes, in arrival order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._batch_open = False  # a transaction of add(batch=True) writes that flush() commits
        # commits of a transaction that stored a new message: the node logs that messages are
        # stored again only after one (a removal may go through on a full disk)
        self.stored_commits = 0
        self._stored = False  # an add of the open transaction stored a new message
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS pending (hash BLOB PRIMARY KEY, arrived REAL NOT NULL,"
                " raw BLOB NOT NULL, topic TEXT NOT NULL DEFAULT '')"
            )
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(pending)")}
            if "topic" not in columns:  # a pool written before the topic was kept (a129993)
                self._conn.execute("ALTER TABLE pending ADD COLUMN topic TEXT NOT NULL DEFAULT ''")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS quarantine"
                " (hash BLOB PRIMARY KEY, at REAL NOT NULL, error TEXT NOT NULL, raw BLOB NOT NULL)"
            )
            (check,) = self._conn.execute("PRAGMA quick_check(1)").fetchone()  # "ok", or the first problem
            if check != "ok":
                first = next((line for line in str(check).splitlines() if not line.startswith("***")), check)
                raise sqlite3.DatabaseError(f"it is damaged ({first})")
            self._count = self._conn.execute("SELECT count(*) FROM pending").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise MempoolError(f"cannot open the mempool {self.path}: {exc}; {_MOVE_AWAY}") from None
        self._len_failed = False  # __len__ logged a read error not followed by a good read yet

    @staticmethod
    def key(raw: bytes) -> bytes:
        return hashlib.sha256(raw).digest()

    @contextmanager
    def _write(self, batch: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, or (``batch``, or a batch is open) writes that
        join the open batch; MempoolError (with SQLite's cause) on failure."""
        with self._lock:
            try:
                if self._batch_open and not self._conn.in_transaction:
                    self._batch_open = self._stored = False  # SQLite rolled the batch back (an error)
                    raise MempoolError(_write_error(self.path, None))
                if batch and not self._batch_open:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._batch_open = True
                if self._batch_open:
                    yield self._conn  # committed by flush()
                    return
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                    self.stored_commits += self._stored
                finally:
                    self._stored = False
                    if self._conn.in_transaction:  # SQLite may already have rolled back itself
                        self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                self._stored = False
                raise MempoolError(_write_error(self.path, exc)) from None

    def add(self, raw: bytes, *, topic: str = "", batch: bool = False) -> bool:
        """Persist a message and the topic it came on; False when the same bytes are already
        pending. ``batch``: the write joins the open batch (opening one), durable once ``flush``
        returned."""
        with self._write(batch) as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO pending (hash, arrived, raw, topic) VALUES (?, ?, ?, ?)",
                (self.key(raw), time.time(), raw, topic),
            )
            stored = cur.rowcount == 1
            self._stored |= stored  # (False when the transaction began: _write and flush reset it)
            return stored

    def flush(self) -> None:
        """Commit the open batch (nothing when none is open); MempoolError if it cannot be."""
        with self._lock:
            if not self._batch_open:
                return
            self._batch_open = False
            stored, self._stored = self._stored, False
            if not self._conn.in_transaction:  # SQLite rolled it back after an error
                raise MempoolError(_write_error(self.path, None))
            try:
                self._conn.execute("COMMIT")
                self.stored_commits += stored
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise MempoolError(_write_error(self.path, exc)) from None

    def remove(self, raws: list[bytes]) -> None:
        """Forget messages that are in a final block or were refused."""
        if not raws:
            return
        with self._write() as conn:
            conn.executemany("DELETE FROM pending WHERE hash = ?", [(self.key(r),) for r in raws])

    def quarantine(self, raw: bytes, error: str) -> None:
        """Move a message whose handling failed unexpectedly out of the pool, with the error."""
        key = self.key(raw)
        with self._write() as conn:
            conn.execute("DELETE FROM pending WHERE hash = ?", (key,))
            conn.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?)", (key, time.time(), error[:500], raw)
            )
            conn.execute(
                "DELETE FROM quarantine WHERE hash NOT IN"
                " (SELECT hash FROM quarantine ORDER BY at DESC LIMIT ?)",
                (QUARANTINE_KEEP,),
            )

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, for a read; MempoolError (with SQLite's cause and what
        to do) on failure."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise MempoolError(f"cannot read the mempool {self.path}: {exc}; {_MOVE_AWAY}") from None

    def quarantined(self) -> list[bytes]:
        """The quarantined messages, oldest first."""
        with self._read() as conn:
            return [bytes(r) for (r,) in conn.execute("SELECT raw FROM quarantine ORDER BY at, hash")]

    def all(self) -> list[tuple[bytes, str]]:
        """Every pending message and its topic ("" if kept before topics were), oldest first
        (used after a restart)."""
        with self._read() as conn:
            rows = conn.execute("SELECT raw, topic FROM pending ORDER BY arrived, hash")
            return [(bytes(raw), topic) for raw, topic in rows]

    def __len__(self) -> int:
        """The pending messages; if they cannot be counted (logged once until a count works
        again), the last count read."""
        try:
            with self._read() as conn:
                self._count = conn.execute("SELECT count(*) FROM pending").fetchone()[0]
        except MempoolError as exc:
            if not self._len_failed:
                log.error("%s (the status says the last count read, %d)", exc, self._count)
            self._len_failed = True
        else:
            self._len_failed = False
        return self._count

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._conn.close()
