"""The agent's durable outbox, sequence counter and small local state (SQLite, synchronous=FULL).

Every signed message is stored here *before* it is sent. When the broker acknowledges it (QoS 1
PUBACK) it moves to ``sent``; it is forgotten only when the ledger confirms it (the sequencer's
``seen`` notice: in a final block, or refused for a reason). After a crash or a broker outage the
agent resends what was not acknowledged, in seq order, and resends what was acknowledged but not
confirmed after a while (a broker killed right after acknowledging can lose a message). The node
deduplicates by (signer, seq), so nothing is lost and nothing is booked twice.
The seq counter only grows and survives restarts; a brand-new state file starts it from
the clock in milliseconds, so a re-installed agent never reuses an old seq.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from chain.private_files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
                                   created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sent (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
                                 created REAL NOT NULL, acked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (grp TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                                    PRIMARY KEY (grp, key)) WITHOUT ROWID;
"""
# A message the broker acknowledged but the ledger has not confirmed is resent after this long
# (real seconds); one older than this is dropped (its envelope has expired by then anyway).
DEFAULT_CONFIRM_AFTER_S = 120.0
SENT_HORIZON_S = 2 * 86_400
# At most this many messages are resent at once (oldest first), so a slow ledger is not flooded.
RESEND_BATCH = 100


class OutboxError(Exception):
    """The state file cannot be used (disk full, read-only, corrupt); the message says which."""


class Outbox:
    """Thread-safe: the bus thread acknowledges while the agent loop adds."""

    def __init__(self, path: str | Path, *, first_seq: int | None = None, exclusive: bool = False) -> None:
        """``first_seq``: the seq of a fresh state's first message (default: the clock in ms).
        ``exclusive``: hold the state file's lock (``<file>.lock``) until :meth:`close`, so a
        second agent on the same state refuses to start: two would sign with the same seqs and
        push each other off the broker (they share a client id). Readers (``agent status``) do
        not take it."""
        self.path = Path(path)
        self.first_seq = first_seq
        self._lock_fd: int | None = None
        if str(path) != ":memory:":
            _check_place(self.path)  # before the lock or a folder is made, or a mode changed
        if exclusive:
            self._lock_fd = _hold_lock(self.path)
        try:
            if str(path) != ":memory:":  # a study's agents keep their state in memory
                self.path.parent.mkdir(parents=True, exist_ok=True)
                private_file(self.path)  # the household's readings and trades: owner only (docs/privacy.md)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            self._release_lock()
            raise OutboxError(f"cannot open agent state {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def add(self, build: Callable[[int], tuple[str, bytes]]) -> tuple[int, str, bytes]:
        """Take the next seq, build (topic, signed payload) with it, and store both atomically."""
        with self._lock, self._durable_write():
            last = self._get("seq")
            if last is not None:
                seq = int(last) + 1
            else:
                seq = self.first_seq if self.first_seq is not None else int(time.time() * 1000)
            topic, payload = build(seq)
            self._conn.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (seq, topic, payload, time.time()))
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(seq),))
        return seq, topic, payload

    @contextmanager
    def _durable_write(self) -> Iterator[None]:
        """One write transaction (the caller holds the lock): all of it or nothing is on disk;
        OutboxError when the disk refuses it (full, read-only)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            finally:
                if self._conn.in_transaction:  # SQLite may already have rolled back by itself
                    self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise OutboxError(
                f"cannot write agent state {self.path}: {exc} (disk full or read-only?)"
            ) from None

    def ack(self, seq: int) -> None:
        """The broker acknowledged message ``seq``: keep it as sent until the ledger confirms it."""
        now = time.time()
        with self._lock, self._durable_write():
            self._conn.execute(
                "INSERT OR REPLACE INTO sent"
                " SELECT seq, topic, payload, created, ? FROM outbox WHERE seq = ?",
                (now, seq),
            )
            self._conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._conn.execute("UPDATE sent SET acked = ? WHERE seq = ?", (now, seq))

    def confirm(self, seqs: list[int]) -> None:
        """The ledger holds (or refused) these messages: forget them for good (one transaction,
        one disk sync, however many seqs a notice confirms)."""
        rows = [(s,) for s in seqs]
        with self._lock, self._durable_write():
            self._conn.executemany("DELETE FROM sent WHERE seq = ?", rows)
            self._conn.executemany("DELETE FROM outbox WHERE seq = ?", rows)

    def due_for_resend(
        self, older_than_s: float = DEFAULT_CONFIRM_AFTER_S, limit: int = RESEND_BATCH
    ) -> list[tuple[int, str, bytes]]:
        """Messages the broker acknowledged more than ``older_than_s`` ago that the ledger has not
        confirmed; they are marked as just sent (resend them now). Messages past the horizon are
        dropped: their envelopes have long expired."""
        now = time.time()
        with self._lock, self._durable_write():
            self._conn.execute("DELETE FROM sent WHERE created < ?", (now - SENT_HORIZON_S,))
            rows = self._conn.execute(
                "SELECT seq, topic, payload FROM sent WHERE acked < ? ORDER BY seq LIMIT ?",
                (now - older_than_s, limit),
            ).fetchall()
            self._conn.executemany("UPDATE sent SET acked = ? WHERE seq = ?", [(now, r[0]) for r in rows])
        return [(seq, topic, bytes(payload)) for seq, topic, payload in rows]

    def awaiting_confirmation(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM sent").fetchone()[0]

    def pending(self) -> list[tuple[int, str, bytes]]:
        """Unacknowledged messages, oldest first."""
        with self._lock:
            return [
                (s, t, bytes(p))
                for s, t, p in self._conn.execute("SELECT seq, topic, payload FROM outbox ORDER BY seq")
            ]

    def oldest_unconfirmed(self) -> float | None:
        """When (Unix seconds, this machine's clock) the oldest message the ledger has not
        confirmed yet was signed, sent or not; None when there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT min(created) FROM (SELECT created FROM sent UNION ALL SELECT created FROM outbox)"
            ).fetchone()
        return row[0]

    def depth(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def last_seq(self) -> int | None:
        with self._lock:
            value = self._get("seq")
        return None if value is None else int(value)

    def load(self, key: str, default: Any = None) -> Any:
        """A JSON value of the agent's local state."""
        with self._lock:
            value = self._get(key)
        return default if value is None else orjson.loads(value)

    def save(self, key: str, value: Any) -> None:
        """Store a JSON value of the agent's local state (durably)."""
        self.save_all({key: value})

    def save_all(self, values: dict[str, Any]) -> None:
        """Store several JSON values of the agent's local state in one durable transaction (one
        disk sync instead of one per value: the agent saves its counters every poll)."""
        with self._lock, self._durable_write():
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", _json_rows(values))

    def load_entries(self, group: str) -> dict[str, Any]:
        """The JSON values of ``group``, kept one row per key (:meth:`save_entries`). A state file
        from before groups held the whole dict as one local-state value named ``group``: it is
        converted to rows here, in one durable transaction. Such a value beside rows was written
        by an older version run on this state file after the conversion (a version taken back,
        then updated again): its entries are merged in, over the rows (they are the newer), where
        they were left unread before (found in a QA pass of updates: the trades kept meanwhile
        vanished from the agent's status)."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM entries WHERE grp = ?", (group,)).fetchall()
            values = {key: orjson.loads(value) for key, value in rows}
            whole = self._get(group)
            if whole is None:
                return values
            newer = orjson.loads(whole)
            values.update(newer)
            with self._durable_write():
                rows = _entry_rows(group, newer)
                self._conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
                self._conn.execute("DELETE FROM meta WHERE key = ?", (group,))
            return values

    def save_entries(
        self,
        group: str,
        changed: dict[str, Any],
        removed: Iterable[str] = (),
        *,
        values: dict[str, Any] | None = None,
    ) -> None:
        """Write the ``changed`` entries of ``group`` and delete the ``removed`` ones, with the
        local-state ``values`` (:meth:`save_all`), in one durable transaction: a receipt costs the
        bytes of its own trade, not of every trade kept."""
        rows = _entry_rows(group, changed)
        with self._lock, self._durable_write():
            self._conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
            self._conn.executemany(
                "DELETE FROM entries WHERE grp = ? AND key = ?", [(group, key) for key in removed]
            )
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", _json_rows(values or {}))

    def messages(self, seqs: Iterable[int]) -> list[tuple[int, str, bytes]]:
        """The (seq, topic, payload) of those of ``seqs`` still kept (sent or not), by seq."""
        wanted = sorted(set(seqs))
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT seq, topic, payload FROM outbox WHERE seq IN ({marks})"
                f" UNION ALL SELECT seq, topic, payload FROM sent WHERE seq IN ({marks})",
                wanted + wanted,
            ).fetchall()
        return sorted((seq, topic, bytes(payload)) for seq, topic, payload in rows)

    def advance_seq_to_clock(self) -> int:
        """Move the seq counter ahead to where a fresh state starts (the clock in ms), never back;
        returns the next message's seq."""
        with self._lock, self._durable_write():
            last = self._get("seq")
            following = max(int(last) + 1 if last is not None else 0, int(time.time() * 1000))
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(following - 1),))
        return following

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._release_lock()


def _check_place(state: Path) -> None:
    """OutboxError in one clear line, changing nothing, when the state file is a folder or one of
    the folders it goes in is a file (found in a QA pass: `agent status` made such a folder mode
    0600 before failing, and `agent -c` said only "...: File exists")."""
    if state.is_dir():
        raise OutboxError(
            f"cannot use agent state {state}: it is a folder, not the agent's state file (move it away)"
        )
    for folder in (state.parent, *state.parent.parents):
        if folder.is_dir():
            return
        if os.path.lexists(folder):
            raise OutboxError(
                f"cannot use agent state {state}: {folder} is a file, not a folder (state_dir in "
                "agent.toml names the folder for the agent's state)"
            )


def _hold_lock(state: Path) -> int:
    """An exclusive lock on ``<state>.lock`` (held while the descriptor is open), or OutboxError
    naming the process that holds it."""
    lock = state.with_name(state.name + ".lock")
    try:
        state.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OutboxError(f"cannot open agent state lock {lock}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutboxError(
            f"another agent (pid {holder}) is running on {state}: stop it first; two agents on one "
            "state would sign with the same seqs"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _json_rows(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, JSON text with sorted keys) of each value: how the state file keeps values."""
    return [(key, orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()) for key, v in values.items()]


def _entry_rows(group: str, values: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(group, key, JSON text) rows of the ``entries`` table."""
    return [(group, key, value) for key, value in _json_rows(values)]
