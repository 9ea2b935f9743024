"""The dashboard's derived index (``index.sqlite``): trades, settlements, readings, clearings and
governance, built incrementally from the ledger's results so pages are keyset-paged index scans.

``trade_sides`` holds one row per trade and party, clustered by (meter, interval) and carrying the
settlement state and amounts, so a household's figures for a day, month or year are one
sequential range scan.

Everything here can be deleted at any time: the indexer rebuilds it from the ledger. It is also
rebuilt when the ledger it describes changes under it (another genesis, or a different block at
the indexed height).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from chain.private_files import private_file
from chain.store import integrity_problems, is_corrupt
from dashboard.ledger import Unavailable

SCHEMA_VERSION = "8"

TABLES = (
    "meta",
    "clearings",
    "trades",
    "trade_sides",
    "outcomes",
    "readings",
    "adjustments",
    "gov",
    "gov_txs",
    "validator_sets",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clearings (
    interval INTEGER PRIMARY KEY, mechanism TEXT NOT NULL, price INTEGER, volume_wh INTEGER NOT NULL,
    trades INTEGER NOT NULL, asks INTEGER NOT NULL, bids INTEGER NOT NULL, ask_wh INTEGER NOT NULL,
    bid_wh INTEGER NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY, interval INTEGER NOT NULL, trade_key TEXT NOT NULL,
    seller TEXT NOT NULL, buyer TEXT NOT NULL, sell_order TEXT NOT NULL, buy_order TEXT NOT NULL,
    energy_wh INTEGER NOT NULL, price INTEGER NOT NULL, value INTEGER NOT NULL,
    grid_fee INTEGER NOT NULL, levies INTEGER NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'cleared', settled_wh INTEGER, s_value INTEGER, s_grid_fee INTEGER,
    s_levies INTEGER, flag TEXT, flagged_meter TEXT, settle_height INTEGER, settle_idx INTEGER,
    adjusted INTEGER NOT NULL DEFAULT 0, source TEXT, UNIQUE (interval, trade_key));
CREATE INDEX IF NOT EXISTS trades_interval ON trades(interval, id);
CREATE INDEX IF NOT EXISTS trades_energy ON trades(energy_wh, id);
CREATE INDEX IF NOT EXISTS trades_price ON trades(price, id);
CREATE INDEX IF NOT EXISTS trades_value ON trades(value, id);
CREATE TABLE IF NOT EXISTS trade_sides (
    meter TEXT NOT NULL, interval INTEGER NOT NULL, trade INTEGER NOT NULL, side TEXT NOT NULL,
    energy_wh INTEGER NOT NULL, price INTEGER NOT NULL, value INTEGER NOT NULL,
    grid_fee INTEGER NOT NULL, levies INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'cleared',
    settled_wh INTEGER, s_value INTEGER, s_grid_fee INTEGER, s_levies INTEGER,
    PRIMARY KEY (meter, interval, trade)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    meter TEXT NOT NULL, interval INTEGER NOT NULL, side TEXT NOT NULL, energy_wh INTEGER NOT NULL,
    limit_price INTEGER NOT NULL, filled_wh INTEGER NOT NULL, order_id TEXT NOT NULL,
    height INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (meter, interval)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_interval ON outcomes(interval);
CREATE TABLE IF NOT EXISTS readings (
    meter TEXT NOT NULL, interval INTEGER NOT NULL, import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL, serial TEXT NOT NULL, d_import_wh INTEGER, d_export_wh INTEGER,
    height INTEGER NOT NULL, PRIMARY KEY (meter, interval)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_interval ON readings(interval);
CREATE INDEX IF NOT EXISTS trades_settle_height ON trades(settle_height);
CREATE TABLE IF NOT EXISTS adjustments (
    id INTEGER PRIMARY KEY, trade INTEGER, interval INTEGER NOT NULL, trade_key TEXT NOT NULL,
    delta_wh INTEGER NOT NULL, delta_value INTEGER NOT NULL, delta_grid_fee INTEGER NOT NULL,
    delta_levies INTEGER NOT NULL, reason TEXT, height INTEGER NOT NULL, idx INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS adjustments_trade ON adjustments(trade);
CREATE TABLE IF NOT EXISTS gov (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, proposal TEXT NOT NULL, action TEXT NOT NULL,
    outcome TEXT NOT NULL, yes INTEGER, no INTEGER, reason TEXT, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS gov_proposal ON gov(proposal);
CREATE TABLE IF NOT EXISTS gov_txs (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, tx TEXT NOT NULL, signer TEXT NOT NULL,
    type TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, proposal TEXT, action TEXT, args TEXT,
    deadline INTEGER, note TEXT, vote TEXT, erased INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS gov_txs_proposal ON gov_txs(proposal);
CREATE TABLE IF NOT EXISTS validator_sets (
    from_height INTEGER PRIMARY KEY, validators TEXT NOT NULL, quorum INTEGER NOT NULL);
"""


CACHE_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA mmap_size=1073741824")  # 64 MiB cache, 1 GiB map


class IndexFileError(Unavailable):
    """The index file cannot be used (not a database, damaged, on a full disk); the message says
    what to do (``index_fault``)."""


class IndexFull(IndexFileError):
    """The index cannot be written: its disk is full (over once a sync succeeds again)."""


def index_fault(path: Path, exc: sqlite3.Error) -> IndexFileError:
    """The one-line fault of an SQLite error on the index: a full disk, or a damaged file (delete
    it: it is rebuilt from the ledger), or what SQLite said."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return IndexFull(
            f"cannot write {path}: the disk is full ({exc}): free space on it (the index catches up "
            "once there is room)",
            "the dashboard's index cannot be written (its disk is full): the figures shown may be "
            "behind the ledger until its operator frees space",
        )
    if is_corrupt(exc):
        return IndexFileError(
            f"{path} is damaged ({exc}): it is only the dashboard's index, rebuilt from the ledger: "
            "delete it and start the dashboard again",
            f"the dashboard's index is damaged ({exc}): its operator deletes index.sqlite (it is rebuilt "
            "from the ledger) and starts the dashboard again",
        )
    return IndexFileError(f"cannot use {path}: {exc}", f"the dashboard's index cannot be used ({exc})")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the index (created with its schema when missing, owner-only: mode 0600)."""
    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        for pragma in CACHE_PRAGMAS:
            conn.execute(pragma)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost tail is simply re-indexed
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0] != SCHEMA_VERSION:
            drop(conn)
            conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise index_fault(Path(path), exc) from None
    return conn


def drop(conn: sqlite3.Connection) -> None:
    """Remove every index table (the next sync rebuilds them)."""
    conn.execute("BEGIN IMMEDIATE")
    for table in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("COMMIT")


class IndexDB:
    """The index file: per-thread read connections and one writer connection behind a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.write_lock = threading.Lock()
        self.writer = connect(self.path)
        self._local = threading.local()
        self.damage: IndexFileError | None = None  # found by check_damage (until it is deleted, at restart)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection for queries."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA query_only=ON")
            for pragma in CACHE_PRAGMAS:
                conn.execute(pragma)
            self._local.conn = conn
        return conn

    def check_damage(self, exc: sqlite3.Error) -> IndexFileError | None:
        """The index's fault if it is damaged (``dashboard.ledger.damaged_file``: a quick check, once)."""
        if self.damage is None and integrity_problems(self.conn, 1):
            self.damage = index_fault(self.path, exc)
        return self.damage

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
