"""The sequencer's durable pool of transactions received but not yet in a final block.

A message is written here (SQLite, synchronous=FULL) inside the MQTT message handler, before the
client acknowledges it to the broker, so a transaction the broker handed over survives a crash
of the sequencer; it leaves the pool once a final block holds it or it was refused.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path


class Mempool:
    """Pending raw messages keyed by SHA-256 of their bytes, in arrival order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS pending"
            " (hash BLOB PRIMARY KEY, arrived REAL NOT NULL, raw BLOB NOT NULL)"
        )

    @staticmethod
    def key(raw: bytes) -> bytes:
        return hashlib.sha256(raw).digest()

    def add(self, raw: bytes) -> bool:
        """Persist a message; False when the same bytes are already pending."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", (self.key(raw), time.time(), raw)
            )
            return cur.rowcount == 1

    def remove(self, raws: list[bytes]) -> None:
        """Forget messages that are in a final block or were refused."""
        if not raws:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM pending WHERE hash = ?", [(self.key(r),) for r in raws])
            self._conn.execute("COMMIT")

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
