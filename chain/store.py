"""SQLite block store: the ledger's tables, and node-local tables kept clearly apart.

Ledger tables (everything `peerwatt verify` checks, byte for byte):
  genesis(doc) · blocks(height, hash, time, header, tx_count, result_count) ·
  txs(height, idx, hash, signer, type, seq) · payloads(hash, envelope) ·
  results(height, idx, kind, data) · seals(height, validator, envelope)
Envelopes live in ``payloads`` by hash, apart from the block structure, so a member's personal
payloads can be erased while every hash link, root and seal still verifies.

Node-local tables (prefixed ``local_``; not ledger, not verified as such): the latest state
snapshot, this node's own seals (at most one per height), alarms/evidence and small key-values.

WAL with synchronous=FULL: one SQLite transaction per block, so a power cut leaves a prefix of
the chain and nothing acknowledged only in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chain.block import Block
from chain.canonical import dumps_checked, loads_strict
from chain.envelope import Envelope
from chain.state import State, decode_state, encode_state

SCHEMA_VERSION = 1
DB_NAME = "ledger.sqlite"

LEDGER_TABLES = ("genesis", "blocks", "txs", "payloads", "results", "seals")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS genesis (id INTEGER PRIMARY KEY CHECK (id = 0), doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, time INTEGER NOT NULL,
    header BLOB NOT NULL, tx_count INTEGER NOT NULL, result_count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_time ON blocks(time);
CREATE TABLE IF NOT EXISTS txs (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, signer TEXT NOT NULL,
    type TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS txs_signer ON txs(signer, height);
CREATE INDEX IF NOT EXISTS txs_hash ON txs(hash);
CREATE TABLE IF NOT EXISTS payloads (hash BLOB PRIMARY KEY, envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS results_kind ON results(kind, height);
CREATE TABLE IF NOT EXISTS seals (
    height INTEGER NOT NULL, validator TEXT NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (height, validator));
CREATE TABLE IF NOT EXISTS local_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_own_seals (
    height INTEGER PRIMARY KEY, header_hash BLOB NOT NULL, envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL,
    evidence BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class StoreError(Exception):
    """A store that cannot be opened or written; the message names the path and the fix."""


_HINTS = {
    "SQLITE_FULL": "the disk is full: free space, the node resumes",
    "SQLITE_READONLY": "the store is read-only: check the file's owner, mode and mount",
    "SQLITE_BUSY": "another process is writing this store: run one node per data folder",
    "SQLITE_IOERR": "the disk reported an I/O error: check the disk",
    "SQLITE_CONSTRAINT": "the row is already stored",
}


def _hint(exc: sqlite3.Error) -> str:
    """A short fix for the SQLite error class of ``exc`` ('' when none applies)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    hint = _HINTS.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    return f" ({hint})" if hint else ""


def db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / DB_NAME


class Store:
    """One node's ledger database."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly

    @classmethod
    def create(cls, data_dir: str | Path) -> Store:
        """Create a new, empty store in ``data_dir`` (refuses an existing one)."""
        path = db_path(data_dir)
        if path.exists():
            raise StoreError(f"{path} already exists; use another --data folder")
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data folder {data_dir}: {exc.strerror}") from None
        return cls._connect(path, readonly=False, create=True)

    @classmethod
    def open(cls, data_dir: str | Path, *, readonly: bool = False) -> Store:
        """Open an existing store (read-only opens never write, not even the WAL index)."""
        path = db_path(data_dir)
        if not path.exists():
            raise StoreError(f"no ledger store in {data_dir} (create one with `peerwatt node init`)")
        return cls._connect(path, readonly=readonly, create=False)

    @classmethod
    def _connect(cls, path: Path, *, readonly: bool, create: bool) -> Store:
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if create:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        if version != SCHEMA_VERSION:
            raise StoreError(f"{path} has schema version {version}, expected {SCHEMA_VERSION}")
        return cls(conn, path, readonly)

    def close(self) -> None:
        self.conn.close()

    # -- writing -----------------------------------------------------------------------------

    def _write(self, statements: list[tuple[str, Any]]) -> None:
        """Run ``statements`` in one transaction: all of them, or none and a StoreError naming the
        cause. SQLite itself rolls back on some errors (SQLITE_FULL, SQLITE_IOERR, ...), so we roll
        back only a transaction that is still open, and a failed ROLLBACK never hides the cause."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                if isinstance(params, list):
                    self.conn.executemany(sql, params)
                else:
                    self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot write {self.path}: {exc}{_hint(exc)}") from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is broken; SQLite discards the transaction on close

    def write_genesis(self, genesis_doc: bytes, block: Block, state: State) -> None:
        self.append_block(block, [], state, extra=[("INSERT INTO genesis VALUES (0, ?)", (genesis_doc,))])

    def append_block(
        self,
        block: Block,
        seals: list[Envelope],
        state: State | None,
        extra: list[tuple[str, Any]] | None = None,
    ) -> None:
        """Store a final block with its seals (and a state snapshot, if given) in one transaction."""
        height = block.height
        statements: list[tuple[str, Any]] = list(extra or [])
        statements += [
            (
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    height,
                    block.hash,
                    block.time,
                    dumps_checked(block.header),
                    len(block.txs),
                    len(block.results),
                ),
            ),
            (
                "INSERT INTO txs VALUES (?, ?, ?, ?, ?, ?)",
                [(height, i, t.tx_hash, t.signer, t.type, t.seq) for i, t in enumerate(block.txs)],
            ),
            (
                "INSERT OR IGNORE INTO payloads VALUES (?, ?)",
                [(t.tx_hash, t.to_bytes()) for t in block.txs],
            ),
            (
                "INSERT INTO results VALUES (?, ?, ?, ?)",
                [(height, i, r.get("kind", ""), dumps_checked(r)) for i, r in enumerate(block.results)],
            ),
            (
                "INSERT INTO seals VALUES (?, ?, ?)",
                [(height, s.signer, s.to_bytes()) for s in seals],
            ),
        ]
        if state is not None:
            statements.append(
                ("INSERT OR REPLACE INTO local_snapshot VALUES (0, ?, ?)", (height, encode_state(state)))
            )
        self._write(statements)

    def write_snapshot(self, height: int, state: State) -> None:
        """Save the state after block ``height`` (node-local; lets a restart skip re-execution)."""
        self._write(
            [("INSERT OR REPLACE INTO local_snapshot VALUES (0, ?, ?)", (height, encode_state(state)))]
        )

    def add_seals(self, height: int, seals: list[Envelope]) -> None:
        """Store late seals for a final block (more than the quorum)."""
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO seals VALUES (?, ?, ?)",
                    [(height, s.signer, s.to_bytes()) for s in seals],
                )
            ]
        )

    def put_own_seal(self, height: int, header_hash: bytes, envelope: bytes) -> None:
        """Persist this node's seal for a height before it is published (one per height)."""
        self._write([("INSERT INTO local_own_seals VALUES (?, ?, ?)", (height, header_hash, envelope))])

    def add_alarm(self, time: int, kind: str, evidence: dict[str, Any]) -> None:
        self._write(
            [
                (
                    "INSERT INTO local_alarms (time, kind, evidence) VALUES (?, ?, ?)",
                    (time, kind, dumps_checked(evidence)),
                )
            ]
        )

    def erase_payloads(self, tx_hashes: list[bytes]) -> int:
        """Delete these transactions' payloads (envelopes) in one transaction: the erasure of a
        departed member's personal data. Index rows, roots and seals stay. Returns rows deleted."""
        before = self.conn.total_changes
        self._write([("DELETE FROM payloads WHERE hash = ?", [(bytes(h),) for h in tx_hashes])])
        return self.conn.total_changes - before

    def set_local(self, key: str, value: bytes) -> None:
        self._write([("INSERT OR REPLACE INTO local_kv VALUES (?, ?)", (key, value))])

    # -- reading -----------------------------------------------------------------------------

    def genesis_doc(self) -> bytes:
        row = self.conn.execute("SELECT doc FROM genesis WHERE id = 0").fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no genesis")
        return bytes(row[0])

    def height(self) -> int:
        row = self.conn.execute("SELECT max(height) FROM blocks").fetchone()
        return -1 if row[0] is None else row[0]

    def header(self, height: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else loads_strict(bytes(row[0]))

    def block_row(self, height: int) -> tuple | None:
        return self.conn.execute(
            "SELECT height, hash, time, header, tx_count, result_count FROM blocks WHERE height = ?",
            (height,),
        ).fetchone()

    def tx_rows(self, height: int) -> list[tuple]:
        return self.conn.execute(
            "SELECT idx, hash, signer, type, seq FROM txs WHERE height = ? ORDER BY idx", (height,)
        ).fetchall()

    def payload(self, tx_hash: bytes) -> bytes | None:
        row = self.conn.execute("SELECT envelope FROM payloads WHERE hash = ?", (tx_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def result_rows(self, height: int) -> list[tuple]:
        return self.conn.execute(
            "SELECT idx, kind, data FROM results WHERE height = ? ORDER BY idx", (height,)
        ).fetchall()

    def results(self, height: int) -> list[dict[str, Any]]:
        return [loads_strict(bytes(r[2])) for r in self.result_rows(height)]

    def seal_rows(self, height: int) -> list[tuple]:
        return self.conn.execute(
            "SELECT validator, envelope FROM seals WHERE height = ? ORDER BY validator", (height,)
        ).fetchall()

    def own_seal(self, height: int) -> tuple[bytes, bytes] | None:
        row = self.conn.execute(
            "SELECT header_hash, envelope FROM local_own_seals WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def snapshot(self) -> tuple[int, State] | None:
        row = self.conn.execute("SELECT height, state FROM local_snapshot WHERE id = 0").fetchone()
        return None if row is None else (row[0], decode_state(bytes(row[1])))

    def alarms(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [
            (t, k, loads_strict(bytes(e)))
            for t, k, e in self.conn.execute("SELECT time, kind, evidence FROM local_alarms ORDER BY id")
        ]

    def get_local(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM local_kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def iter_payload_hashes(self) -> Iterator[bytes]:
        for (h,) in self.conn.execute("SELECT hash FROM payloads"):
            yield bytes(h)

    def count(self, table: str) -> int:
        if table not in LEDGER_TABLES:
            raise ValueError(table)
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
