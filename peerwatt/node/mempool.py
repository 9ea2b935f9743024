"""A validator's durable pool of transactions received but not yet in a final block.

A message is written here (SQLite WAL) inside the MQTT message handler, before the client
acknowledges it to the broker, so a transaction the broker handed over survives a crash of the
node process; it leaves the pool once a final block holds it or it was refused. The pool uses
synchronous=NORMAL, not FULL: a power cut may lose its last writes, which costs nothing (every
validator holds a copy, and the agent's outbox keeps each message until a signed notice says a
final block holds it), while an fsync per message on every validator halved the network's
throughput (bench_network: 620 vs 1,114 tx/s, p95 7.96 vs 4.44 s, same machine, quiet).

A message whose handling failed in an unexpected way (a bug, not a refusal with a reason) is
moved to ``quarantine`` with the error, so a restart never replays it into a crash loop; the
operator can read it there (``peerwatt node status`` counts them). The quarantine keeps the
newest QUARANTINE_KEEP messages.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUARANTINE_KEEP = 1000


class MempoolError(Exception):
    """The pool cannot be written (disk full, read-only); the message says why."""


class Mempool:
    """Pending raw messages keyed by SHA-256 of their bytes, in arrival order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS pending"
            " (hash BLOB PRIMARY KEY, arrived REAL NOT NULL, raw BLOB NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS quarantine"
            " (hash BLOB PRIMARY KEY, at REAL NOT NULL, error TEXT NOT NULL, raw BLOB NOT NULL)"
        )

    @staticmethod
    def key(raw: bytes) -> bytes:
        return hashlib.sha256(raw).digest()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; MempoolError (with SQLite's cause) on failure."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                finally:
                    if self._conn.in_transaction:  # SQLite may already have rolled back itself
                        self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise MempoolError(f"cannot write the mempool {self.path}: {exc}") from None

    def add(self, raw: bytes) -> bool:
        """Persist a message; False when the same bytes are already pending."""
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", (self.key(raw), time.time(), raw)
            )
            return cur.rowcount == 1

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

    def quarantined(self) -> list[bytes]:
        """The quarantined messages, oldest first."""
        with self._lock:
            return [bytes(r) for (r,) in self._conn.execute("SELECT raw FROM quarantine ORDER BY at, hash")]

    def all(self) -> list[bytes]:
        """Every pending message, oldest first (used after a restart)."""
        with self._lock:
            return [bytes(r) for (r,) in self._conn.execute("SELECT raw FROM pending ORDER BY arrived, hash")]

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM pending").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
