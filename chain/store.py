"""SQLite block store: the ledger's tables, and node-local tables kept clearly apart.

Ledger tables (everything `peerwatt verify` checks, byte for byte):
  genesis(doc) · blocks(height, hash, time, header, tx_count, result_count) ·
  txs(height, idx, hash, signer, type, seq) · payloads(hash, envelope) ·
  results(height, idx, kind, data) · seals(height, validator, envelope)
Envelopes live in ``payloads`` by hash, apart from the block structure, so a member's personal
payloads can be erased while every hash link, root and seal still verifies. Schema 3 stores txs,
payloads, results and seals WITHOUT ROWID (the primary key once, not again in an index), with one
secondary index, results by kind for kinds other than "tx"; a schema-1 or -2 store is upgraded in
place, in one transaction, when opened to write (read-only opens read it as it is).

Node-local tables (prefixed ``local_``; not ledger, not verified as such): the latest state
snapshot, this node's own seals (at most one per height), alarms/evidence and small key-values.

Compression (schema 2): a row of ``payloads``, ``results`` or ``seals`` is either the canonical
bytes themselves (a JSON object, first byte ``{``) or ``0x00``, a dictionary number and a zstd
frame (magicless, no checksum) made with that dictionary from ``store_dicts``. Envelopes and
results are small (100-350 bytes) and alike: zstd alone saves ~17 %, with a dictionary trained on
the store's own rows ~65 %. A table's first dictionary is trained once it holds
``DICT_FIRST_ROWS`` rows (until then its rows stay raw), and a new one each time it grows
``DICT_GROWTH`` times since (members and meters change over a year); a row keeps the dictionary
it was written with. Readers get the canonical bytes back; hashes, roots and seals are over those
bytes, so what verify checks does not change. Integrity is the ledger's hashes: a compressed row
that no longer decompresses is a StoreError naming the row. Once results are compressed, the
result of an accepted transaction (``{"index":i,"kind":"tx","status":"ok","tx":hash}``, half the
rows) is stored as ``0x01`` and ``i`` in ASCII digits, and read back with the hash from the
block's txs row ``i`` (a row whose bytes would not read back exactly is compressed as usual).

WAL with synchronous=FULL: one SQLite transaction per block, so a power cut leaves a prefix of
the chain and nothing acknowledged only in memory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import zstandard

from chain.block import Block
from chain.canonical import dumps_checked, loads_strict
from chain.envelope import Envelope
from chain.private_files import private_file, private_folder
from chain.state import State, decode_state, encode_state

SCHEMA_VERSION = 3  # 2: store_dicts, compressed rows; 3: WITHOUT ROWID ledger tables (older: upgraded)
DB_NAME = "ledger.sqlite"

# Compressed columns, and how a dictionary for them is trained.
COMPRESSED = {"payloads": "envelope", "results": "data", "seals": "envelope"}
DICT_FIRST_ROWS = 1_000  # a table's first dictionary once it holds this many rows
DICT_GROWTH = 8  # a new dictionary each time the table grew this many times since the last
DICT_SAMPLES = 2_000  # the newest rows a dictionary is trained on
DICT_SIZE = 8_192  # bytes (4, 8, 16 and 64 KB compressed alike on simulated envelopes)
ZSTD_LEVEL = 3  # level 3 -> 9: 1 % smaller, 4x slower
_ZROW = 0x00  # first byte of a compressed row (a canonical row starts with "{")
# A "tx" result (half the results rows) names its transaction's hash, which txs holds already:
# once results are compressed, an accepted transaction's result is stored as _TXREF and the
# transaction's index in ASCII digits, and read back with the hash from txs (schema 3).
_TXREF = b"\x01"
_TX_OK = b'{"index":%d,"kind":"tx","status":"ok","tx":"%s"}'
_DICT_ID_BASE = 32_768  # zstd's private dictionary ids start here
_MAX_DICTS = 255
# A compressed table's newest rows (what a dictionary is trained on), newest first.
_NEWEST = {
    "payloads": "SELECT p.envelope FROM txs t JOIN payloads p ON p.hash = t.hash"
    " ORDER BY t.height DESC, t.idx DESC LIMIT ?",
    "results": "SELECT data FROM results ORDER BY height DESC, idx DESC LIMIT ?",
    "seals": "SELECT envelope FROM seals ORDER BY height DESC, validator LIMIT ?",
}

LEDGER_TABLES = ("genesis", "blocks", "txs", "payloads", "results", "seals")
# The types of the columns readers get (bytes: BLOB, int: INTEGER, str: TEXT): a row read with
# another is damaged or tampered with (Store.check_row). ``results.data`` is checked on decoding.
BLOCK_ROW = (
    ("height", int),
    ("hash", bytes),
    ("time", int),
    ("header", bytes),
    ("tx_count", int),
    ("result_count", int),
)
TX_ROW = (("idx", int), ("hash", bytes), ("signer", str), ("type", str), ("seq", int))
RESULT_ROW = (("idx", int), ("kind", str), ("data", None))

# The ledger tables with a composite or blob primary key are WITHOUT ROWID (schema 3): a rowid
# table stores such a key twice, in the table and in its sqlite_autoindex. Their rows (60-190
# bytes compressed, up to ~400 raw) stay whole in their page (a WITHOUT ROWID row spills past
# ~1,000 bytes in a 4 KB page), so a lookup is one B-tree descent. ``{name}`` is the table's name
# (the upgrade builds each under a new name first).
_TABLES = {
    "txs": """CREATE TABLE IF NOT EXISTS {name} (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, signer TEXT NOT NULL,
    type TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (height, idx)) WITHOUT ROWID""",
    "payloads": """CREATE TABLE IF NOT EXISTS {name} (
    hash BLOB PRIMARY KEY, envelope BLOB NOT NULL) WITHOUT ROWID""",
    "results": """CREATE TABLE IF NOT EXISTS {name} (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (height, idx)) WITHOUT ROWID""",
    "seals": """CREATE TABLE IF NOT EXISTS {name} (
    height INTEGER NOT NULL, validator TEXT NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (height, validator)) WITHOUT ROWID""",
}
# Secondary indexes (schema 3). Results by kind, except the "tx" result every transaction has
# (half the rows): a reader of "tx" results reads them in (height, idx) order anyway, and one of
# other kinds says ``kind != 'tx'`` so that SQLite may use this partial index. There is no index
# of txs by signer (schema 2 had one: 6 % of the store): the only reader, erasure, scans txs
# once per departed meter, next to the VACUUM it runs anyway.
_INDEXES = ("CREATE INDEX IF NOT EXISTS results_kind ON results(kind, height) WHERE kind != 'tx'",)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS genesis (id INTEGER PRIMARY KEY CHECK (id = 0), doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, time INTEGER NOT NULL,
    header BLOB NOT NULL, tx_count INTEGER NOT NULL, result_count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_time ON blocks(time);
CREATE TABLE IF NOT EXISTS store_dicts (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 255), tbl TEXT NOT NULL,
    trained_at INTEGER NOT NULL, dict BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS store_rows (tbl TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS local_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_own_seals (
    height INTEGER PRIMARY KEY, header_hash BLOB NOT NULL, envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL,
    evidence BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS local_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
# store_rows: how many rows were ever written to each compressed table (the dictionary schedule;
# a WITHOUT ROWID table has no max(rowid) to tell it cheaply).
_COLUMNS = {
    "txs": "height, idx, hash, signer, type, seq",
    "payloads": "hash, envelope",
    "results": "height, idx, kind, data",
    "seals": "height, validator, envelope",
}
_KEYS = {"txs": "height, idx", "payloads": "hash", "results": "height, idx", "seals": "height, validator"}


def _schema_statements() -> list[str]:
    """The statements that create an empty schema-3 store (or complete one)."""
    tables = [ddl.format(name=name) for name, ddl in _TABLES.items()]
    return [s for s in _SCHEMA.split(";") if s.strip()] + tables + list(_INDEXES)


def _upgrade_statements() -> list[str]:
    """Schema 1 or 2 -> 3, run in one transaction: each ledger table with a composite or blob key
    is rebuilt WITHOUT ROWID (create it under a new name, copy every row in key order, drop the
    old table with its indexes, rename the new one), then the schema-3 indexes and row counts.
    Rows are copied byte for byte (raw or compressed as they were)."""
    statements = [s for s in _SCHEMA.split(";") if s.strip()]  # store_dicts (schema 1), store_rows
    for name, ddl in _TABLES.items():
        statements += [
            f"DROP TABLE IF EXISTS {name}_v3",
            ddl.format(name=f"{name}_v3"),
            f"INSERT INTO {name}_v3 ({_COLUMNS[name]}) SELECT {_COLUMNS[name]} FROM {name}"
            f" ORDER BY {_KEYS[name]}",
            f"DROP TABLE {name}",
            f"ALTER TABLE {name}_v3 RENAME TO {name}",
        ]
    statements += list(_INDEXES)
    statements += [
        f"INSERT OR REPLACE INTO store_rows VALUES ('{table}', (SELECT count(*) FROM {table}))"
        for table in COMPRESSED
    ]
    statements.append(f"PRAGMA user_version={SCHEMA_VERSION}")
    return statements


class StoreError(Exception):
    """A store that cannot be opened or written; the message names the path and the fix."""


class StoreCorrupt(StoreError):
    """The store's file itself is damaged: SQLite finds it malformed, or not a database (a
    truncated file, a -wal file of another store beside it). `peerwatt verify` reports it as a
    failed verification (exit 1), not as a store it cannot open."""


_CORRUPT_FIX = "the file is damaged: restore the data folder from a peer"


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the database file is damaged (SQLITE_CORRUPT*, SQLITE_NOTADB)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


_DICT_MAGIC = b"\x37\xa4\x30\xec"  # a trained zstd dictionary's first bytes (little-endian 0xEC30A437)


def _check_dict(
    number: int, data: bytes, wrong: list[str], load: bool
) -> zstandard.ZstdCompressionDict | None:
    """Dictionary ``number`` of store_dicts, or None with what is wrong added to ``wrong``: a
    dictionary peerwatt trained starts with zstd's dictionary magic and its id
    (``_DICT_ID_BASE + number``), and with ``load`` zstd must load it (a truncated or changed one
    fails with "could not create decompression dict"). Loading costs some tens of microseconds per
    dictionary (0.24 -> 0.47 ms for a store open with seven 8 KB ones), so only a writer does it
    at open; a reader, opened per API request, meets such a dictionary at its first use
    (``Store.payload`` names it the same way)."""
    if data[:4] != _DICT_MAGIC:
        wrong.append("it is not a zstd dictionary")
        return None
    zdict = zstandard.ZstdCompressionDict(data)
    if zdict.dict_id() != _DICT_ID_BASE + number:
        wrong.append(f"its zstd dictionary id is {zdict.dict_id()}, not {_DICT_ID_BASE + number}")
        return None
    if not load:
        return zdict
    try:
        zstandard.ZstdDecompressor(dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    except zstandard.ZstdError as exc:
        wrong.append(f"zstd cannot load it: {exc}")
        return None
    return zdict


_TEXT = functools.partial(str, encoding="utf-8", errors="replace")
_SQL_TYPES = {bytes: "BLOB", int: "INTEGER", str: "TEXT", float: "REAL", type(None): "NULL"}


def sql_type(value: object) -> str:
    """The SQLite storage class a value read from SQLite had (BLOB, INTEGER, TEXT, REAL, NULL)."""
    return _SQL_TYPES.get(type(value), type(value).__name__)


def typed(path: Path, value: Any, kind: type, what: str) -> Any:
    """``value`` as read from the store when it has the storage class its column holds (``kind``:
    bytes for BLOB, int for INTEGER, str for TEXT); else a StoreError naming the row. A value of
    another class is tampering or damage (the sqlite3 shell's replace() on a BLOB gives TEXT), not
    something to convert: hashes and roots are over the stored bytes."""
    if type(value) is kind:
        return value
    raise StoreError(
        f"{path}: {what} is damaged (stored as {sql_type(value)}, not {_SQL_TYPES[kind]});"
        " restore the data folder from a peer"
    )


_HINTS = {  # {what}: the database ("store", or the node's "mempool")
    "SQLITE_FULL": "the disk is full: free space, the node resumes",
    "SQLITE_READONLY": "the {what} is read-only: check the file's owner, mode and mount",
    "SQLITE_BUSY": "another process is writing this {what}: run one node per data folder",
    "SQLITE_IOERR": "the disk reported an I/O error: check the disk",
    "SQLITE_CONSTRAINT": "the row is already stored",
}


def sqlite_hint(exc: sqlite3.Error, what: str = "store") -> str | None:
    """A short fix for the SQLite error class of ``exc`` on a node's ``what`` database (None when
    none applies)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    hint = _HINTS.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    return None if hint is None else hint.format(what=what)


def _hint(exc: sqlite3.Error) -> str:
    """``sqlite_hint`` for the store, in parentheses after a message ('' when none applies)."""
    hint = sqlite_hint(exc)
    return f" ({hint})" if hint else ""


def _in_one_transaction(conn: sqlite3.Connection, statements: list[tuple[str, Any]]) -> None:
    """All of ``statements`` ((sql, parameters); a list of parameters runs the statement for
    each) or none of them. SQLite itself rolls back on some errors (SQLITE_FULL, SQLITE_IOERR,
    ...), so only a transaction still open is rolled back, and a failed ROLLBACK never hides the
    cause (a crash midway leaves the store as it was: SQLite discards an uncommitted transaction
    when the store is next opened)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            if isinstance(params, list):
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        rollback_open(conn)
        raise


def rollback_open(conn: sqlite3.Connection) -> None:
    """Roll back ``conn``'s transaction if one is still open: SQLite ends it itself on some errors
    (SQLITE_FULL, SQLITE_IOERR, ...), and a failed ROLLBACK (a broken connection: SQLite discards
    the transaction on close) must not hide the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def integrity_problems(conn: sqlite3.Connection, limit: int = 3) -> list[str]:
    """What SQLite's ``PRAGMA quick_check`` finds wrong with ``conn``'s database (at most
    ``limit`` lines; [] when it is sound; see ``Store.integrity_problems``). It reads the whole
    file once."""
    try:
        rows = conn.execute(f"PRAGMA quick_check({int(limit)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    lines = [line for (text,) in rows for line in str(text).splitlines() if not line.startswith("***")]
    return [] if lines == ["ok"] else lines[:limit]


def db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / DB_NAME


class Store:
    """One node's ledger database."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._newest: dict[str, tuple[int, int]] = {}  # table -> (dict number, trained at rows)
        self._untrainable: dict[str, int] = {}  # table -> rows when training last failed
        self._damaged: dict[int, str] = {}  # dictionary number -> what is wrong with its row
        self._local = threading.local()  # zstd contexts are not thread-safe
        self._load_dicts()

    @classmethod
    def create(cls, data_dir: str | Path) -> Store:
        """Create a new, empty store in ``data_dir`` (refuses an existing one)."""
        path = db_path(data_dir)
        if path.exists():
            raise StoreError(f"{path} already exists; use another --data folder")
        try:
            # owner-only (the ledger holds every household's readings: docs/privacy.md): the folder
            # 0700, the database 0600 before SQLite writes it (its -wal and -shm take its mode)
            private_folder(data_dir)
            made = private_file(path)
        except OSError as exc:
            raise StoreError(f"cannot create data folder {data_dir}: {exc.strerror}") from None
        if not made:  # made meanwhile by another process
            raise StoreError(f"{path} already exists; use another --data folder")
        try:
            return cls._connect(path, readonly=False, create=True)
        except BaseException:
            for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
                with contextlib.suppress(OSError):
                    leftover.unlink()  # (made above, exclusively: never another store)
            raise

    @classmethod
    def open(cls, data_dir: str | Path, *, readonly: bool = False) -> Store:
        """Open an existing store (read-only opens never write, not even the WAL index)."""
        path = db_path(data_dir)
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            missing = f"no ledger store in {data_dir} (create one with `peerwatt node init`)"
            raise StoreError(missing) from None
        except OSError as exc:  # a folder this user may not enter, a name too long...
            raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise StoreError(f"{path} is not a file (a folder?): it should be the node's ledger store")
        if not readonly and not os.access(path, os.W_OK):
            # SQLite would open it read-only without a word and fail at the first block
            raise StoreError(f"{path} is read-only for this user: check the file's owner, mode and mount")
        if not readonly and not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(
                f"{path.parent} is read-only for this user (the store writes its -wal and -shm files "
                "there): check the folder's owner, mode and mount"
            )
        return cls._connect(path, readonly=readonly, create=False)

    @classmethod
    def _connect(cls, path: Path, *, readonly: bool, create: bool) -> Store:
        conn = None
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            # TEXT that is not UTF-8 (bytes cast to TEXT) reads as a str with U+FFFD, whose type a
            # reader then refuses where a BLOB belongs (sqlite3 would raise, quoting the raw bytes)
            conn.text_factory = _TEXT
            conn.execute("PRAGMA foreign_keys=ON")
            if create:
                _in_one_transaction(
                    conn,
                    [
                        (sql, ())
                        for sql in [
                            *_schema_statements(),
                            *(f"INSERT INTO store_rows VALUES ('{t}', 0)" for t in COMPRESSED),
                            f"PRAGMA user_version={SCHEMA_VERSION}",
                        ]
                    ],
                )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version in (1, 2) and not readonly:
                _in_one_transaction(conn, [(sql, ()) for sql in _upgrade_statements()])
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy's pages out of the WAL
                version = SCHEMA_VERSION
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if is_corrupt(exc):
                raise StoreCorrupt(f"cannot open {path}: {exc} ({_CORRUPT_FIX})") from None
            raise StoreError(f"cannot open {path}: {exc}{_hint(exc)}") from None
        if version == 0:  # an empty file, or some other program's SQLite database
            conn.close()
            raise StoreError(
                f"{path} is not a peerwatt ledger store (no schema): make a node's store with "
                "`peerwatt node init --genesis FILE --data DIR`, or copy one from a peer"
            )
        if version not in (1, 2, SCHEMA_VERSION):
            conn.close()
            raise StoreError(
                f"{path} has schema version {version}, this peerwatt reads 1 to {SCHEMA_VERSION}:"
                " open it with the peerwatt that wrote it"
            )
        try:
            return cls(conn, path, readonly)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def integrity_problems(self, limit: int = 3) -> list[str]:
        """What SQLite's ``PRAGMA quick_check`` finds wrong with the file (at most ``limit``
        lines; [] when it is sound): the B-tree pages, their cells and the free list, every page
        read once (not the indexes against their tables, which ``integrity_check`` adds). It
        reads the whole file once: 22-30 ms for a simulated week of 20 homes (15.8 MB, warm), where
        verify takes 8.7 s on one core."""
        return integrity_problems(self.conn, limit)

    # -- compression -------------------------------------------------------------------------

    def _load_dicts(self) -> None:
        """Load the dictionaries this store has (none in a read-only schema-1 store)."""
        try:
            rows = self.conn.execute(
                "SELECT id, tbl, trained_at, dict FROM store_dicts ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:
            return  # schema 1, opened read-only: every row is raw
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                raise StoreCorrupt(f"cannot read {self.path}: {exc} ({_CORRUPT_FIX})") from None
            raise StoreError(f"cannot read {self.path}: {exc}") from None
        for number, table, trained_at, data in rows:
            wrong = [
                f"its {column} is stored as {sql_type(value)}, not {_SQL_TYPES[kind]}"
                for column, value, kind in (
                    ("tbl", table, str),
                    ("trained_at", trained_at, int),
                    ("dict", data, bytes),
                )
                if type(value) is not kind
            ]
            zdict = None if wrong else _check_dict(number, data, wrong, load=not self.readonly)
            if zdict is None:
                if not self.readonly:  # a writer would compress new rows with it or train too late
                    raise StoreError(
                        f"{self.path}: dictionary {number} (store_dicts) is damaged ({'; '.join(wrong)}):"
                        " restore the data folder from a peer"
                    )
                # a reader fails at the first row compressed with it, named with its block
                self._damaged[number] = "; ".join(wrong)
                continue
            self._dicts[number] = zdict
            self._newest[table] = (number, trained_at)

    def _compressor(self, number: int) -> zstandard.ZstdCompressor:
        cache = self._local.__dict__.setdefault("compressors", {})
        ctx = cache.get(number)
        if ctx is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                ZSTD_LEVEL,
                format=zstandard.FORMAT_ZSTD1_MAGICLESS,
                write_checksum=False,
                write_content_size=True,
                write_dict_id=False,
            )
            ctx = cache[number] = zstandard.ZstdCompressor(
                dict_data=self._dicts[number], compression_params=params
            )
        return ctx

    def _decompressor(self, number: int) -> zstandard.ZstdDecompressor | None:
        cache = self._local.__dict__.setdefault("decompressors", {})
        ctx = cache.get(number)
        if ctx is None:
            if number not in self._dicts:
                self._load_dicts()  # another process (the node) may have trained it since we opened
            if number not in self._dicts:
                return None
            ctx = cache[number] = zstandard.ZstdDecompressor(
                dict_data=self._dicts[number], format=zstandard.FORMAT_ZSTD1_MAGICLESS
            )
        return ctx

    def decode_row(self, data: bytes | memoryview, what: str) -> bytes:
        """The canonical bytes of a stored row (``what`` names the row in an error; a row that is
        not a BLOB is a StoreError)."""
        data = bytes(data) if type(data) is memoryview else self._blob(data, what)
        if not data or data[0] != _ZROW:
            if data[:1] == _TXREF:
                raise StoreError(
                    f"{self.path}: {what} is a result stored by reference: read it with decode_result"
                )
            return data  # stored raw (verify checks its bytes like any other)
        try:
            ctx = self._decompressor(data[1]) if len(data) > 2 else None
        except zstandard.ZstdError as exc:  # a reader's dictionary is loaded here first (_check_dict)
            self._damaged[data[1]] = f"zstd cannot load it: {exc}"
            self._dicts.pop(data[1], None)
            ctx = None
        if ctx is None and len(data) > 2 and data[1] in self._damaged:
            raise StoreError(
                f"{self.path}: {what} cannot be read: dictionary {data[1]} (store_dicts), which it is"
                f" compressed with, is damaged ({self._damaged[data[1]]});"
                " restore the data folder from a peer"
            )
        if ctx is None:
            raise StoreError(
                f"{self.path}: {what} is damaged (compressed with a dictionary this store lacks);"
                " restore the data folder from a peer"
            )
        try:
            return ctx.decompress(data[2:])
        except zstandard.ZstdError as exc:
            raise StoreError(
                f"{self.path}: {what} is damaged ({exc}); restore the data folder from a peer"
            ) from None

    def decode_result(
        self, height: int, idx: int, data: bytes | memoryview, tx_hashes: dict[int, bytes] | None = None
    ) -> bytes:
        """The canonical bytes of result ``idx`` of block ``height`` as stored (``tx_hashes``: the
        block's transaction hashes by index, read here when not given)."""
        what = f"result {idx} of block {height}"
        data = bytes(data) if type(data) is memoryview else self._blob(data, what)
        if data[:1] != _TXREF:
            return self.decode_row(data, what)
        digits = data[1:]
        if not (0 < len(digits) <= 9 and digits.isdigit() and (digits == b"0" or digits[:1] != b"0")):
            raise StoreError(
                f"{self.path}: {what} is damaged (not a transaction's index);"
                " restore the data folder from a peer"
            )
        index = int(digits)
        if tx_hashes is None:
            row = self.conn.execute(
                "SELECT hash FROM txs WHERE height = ? AND idx = ?", (height, index)
            ).fetchone()
            what_hash = f"the hash of transaction {index} of block {height}"
            tx_hash = None if row is None else self._blob(row[0], what_hash)
        else:
            tx_hash = tx_hashes.get(index)
        if tx_hash is None:
            raise StoreError(
                f"{self.path}: {what} is damaged (block {height} has no transaction {index});"
                " restore the data folder from a peer"
            )
        return _TX_OK % (index, tx_hash.hex().encode())

    def _tx_hashes(self, height: int) -> dict[int, bytes]:
        return {
            idx: self._blob(h, f"the hash of transaction {idx} of block {height}")
            for idx, h in self.conn.execute("SELECT idx, hash FROM txs WHERE height = ?", (height,))
        }

    def _blob(self, value: Any, what: str) -> bytes:
        return typed(self.path, value, bytes, what)

    def _int(self, value: Any, what: str) -> int:
        return typed(self.path, value, int, what)

    def _text(self, value: Any, what: str) -> str:
        return typed(self.path, value, str, what)

    def _encoder(self, table: str, new_rows: list[bytes]) -> tuple[Any, tuple[str, Any] | None]:
        """How to store ``table``'s rows of this write: a function of the canonical bytes, and the
        statement that stores a newly trained dictionary (None when there is none)."""
        newest = self._newest.get(table)
        rows = self._rows_written(table) + len(new_rows)
        due = DICT_FIRST_ROWS if newest is None else newest[1] * DICT_GROWTH
        statement = None
        if rows >= due and rows >= self._untrainable.get(table, 0) * 2 and len(self._dicts) < _MAX_DICTS:
            trained = self._train(table, new_rows)
            if trained is None:
                self._untrainable[table] = rows
            else:
                number, zdict = trained
                self._dicts[number] = zdict
                newest = (number, rows)
                statement = (
                    "INSERT INTO store_dicts VALUES (?, ?, ?, ?)",
                    (number, table, rows, zdict.as_bytes()),
                )
        if newest is None:
            return bytes, statement
        prefix = bytes((_ZROW, newest[0]))
        compress = self._compressor(newest[0]).compress
        return (lambda raw: prefix + compress(raw)), statement

    def _rows_written(self, table: str) -> int:
        row = self.conn.execute("SELECT rows FROM store_rows WHERE tbl = ?", (table,)).fetchone()
        return 0 if row is None else self._int(row[0], f"the row count of {table} (store_rows)")

    def _train(self, table: str, new_rows: list[bytes]) -> tuple[int, zstandard.ZstdCompressionDict] | None:
        """A dictionary for ``table`` from its newest rows, or None if zstd finds too few samples."""
        stored = self.conn.execute(_NEWEST[table], (DICT_SAMPLES,)).fetchall()
        # (a "tx" result stored by reference is not compressed: not a sample; a row that is not a
        # BLOB, damaged, is no sample either: verify names it)
        samples = new_rows[-DICT_SAMPLES:] + [
            self.decode_row(r[0], f"a {table} row")
            for r in stored
            if type(r[0]) is bytes and r[0][:1] != _TXREF
        ]
        number = max(self._dicts, default=0) + 1
        try:
            zdict = zstandard.train_dictionary(
                DICT_SIZE, samples[:DICT_SAMPLES], dict_id=_DICT_ID_BASE + number, level=ZSTD_LEVEL
            )
        except zstandard.ZstdError:
            return None
        return number, zdict

    # -- writing -----------------------------------------------------------------------------

    def _write(self, statements: list[tuple[str, Any]]) -> None:
        """Run ``statements`` in one transaction: all of them, or none and a StoreError naming the
        cause."""
        try:
            _in_one_transaction(self.conn, statements)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}{_hint(exc)}") from exc

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
        payloads = [t.to_bytes() for t in block.txs]
        results = [dumps_checked(r) for r in block.results]
        trained: list[tuple[str, Any]] = []
        encode = {}
        for table, rows in (
            ("payloads", payloads),
            ("results", results),
            ("seals", [s.to_bytes() for s in seals]),
        ):
            encode[table], statement = self._encoder(table, rows)
            if statement is not None:
                trained.append(statement)
        statements += trained
        by_ref = encode["results"] is not bytes  # "tx" results by reference once results are compressed
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
                [(t.tx_hash, encode["payloads"](p)) for t, p in zip(block.txs, payloads, strict=True)],
            ),
            (
                "INSERT INTO results VALUES (?, ?, ?, ?)",
                [
                    (
                        height,
                        i,
                        r.get("kind", ""),
                        (by_ref and self._tx_ref(block, r, d)) or encode["results"](d),
                    )
                    for i, (r, d) in enumerate(zip(block.results, results, strict=True))
                ],
            ),
            (
                "INSERT INTO seals VALUES (?, ?, ?)",
                [(height, s.signer, encode["seals"](s.to_bytes())) for s in seals],
            ),
        ]
        statements.append(
            (
                "UPDATE store_rows SET rows = rows + ? WHERE tbl = ?",
                [(len(payloads), "payloads"), (len(results), "results"), (len(seals), "seals")],
            )
        )
        if state is not None:
            statements.append(
                ("INSERT OR REPLACE INTO local_snapshot VALUES (0, ?, ?)", (height, encode_state(state)))
            )
        try:
            self._write(statements)
        except BaseException:
            self._forget(trained)
            raise
        for _sql, (number, table, rows, _data) in trained:
            self._newest[table] = (number, rows)

    @staticmethod
    def _tx_ref(block: Block, result: dict[str, Any], data: bytes) -> bytes | None:
        """How a "tx" result of ``block`` is stored by reference (None: it is stored as it is):
        only when the bytes read back from the reference are exactly ``data``."""
        if result.get("kind") != "tx":
            return None
        index = result.get("index")
        if type(index) is not int or not 0 <= index < len(block.txs):
            return None
        if data != _TX_OK % (index, block.txs[index].tx_hash.hex().encode()):
            return None
        return _TXREF + b"%d" % index

    def _forget(self, trained: list[tuple[str, Any]]) -> None:
        """Drop dictionaries trained for a write that did not happen."""
        for _sql, (number, *_rest) in trained:
            self._dicts.pop(number, None)
            for cache in ("compressors", "decompressors"):
                self._local.__dict__.get(cache, {}).pop(number, None)

    def write_snapshot(self, height: int, state: State) -> None:
        """Save the state after block ``height`` (node-local; lets a restart skip re-execution)."""
        self._write(
            [("INSERT OR REPLACE INTO local_snapshot VALUES (0, ?, ?)", (height, encode_state(state)))]
        )

    def add_seals(self, height: int, seals: list[Envelope]) -> None:
        """Store late seals for a final block (more than the quorum). A validator's seal already
        stored for ``height`` is kept and the new one ignored; with none new, nothing is written
        (a peer re-sending a stored seal costs no durable write). ``store_rows`` counts the rows
        inserted (``total_changes()``: the dictionary schedule runs on it), not the seals given."""
        stored = {v for (v,) in self.conn.execute("SELECT validator FROM seals WHERE height = ?", (height,))}
        new = [s for s in seals if s.signer not in stored]
        if not new:
            return
        newest = self._newest.get("seals")
        encode = bytes
        if newest is not None:
            prefix, compress = bytes((_ZROW, newest[0])), self._compressor(newest[0]).compress
            encode = lambda raw: prefix + compress(raw)  # noqa: E731
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO seals VALUES (?, ?, ?)",
                    [(height, s.signer, encode(s.to_bytes())) for s in new],
                ),
                (
                    "UPDATE store_rows SET rows = rows + total_changes() - ? WHERE tbl = 'seals'",
                    (self.conn.total_changes,),
                ),
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
        return self._blob(row[0], "the genesis document")

    def height(self) -> int:
        row = self.conn.execute("SELECT max(height) FROM blocks").fetchone()
        return -1 if row[0] is None else row[0]

    def header(self, height: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else loads_strict(self._blob(row[0], f"the header of block {height}"))

    def block_row(self, height: int) -> tuple | None:
        """(height, hash, time, header, tx_count, result_count) of block ``height``, each of its
        column's type (StoreError otherwise), or None."""
        row = self.conn.execute(
            "SELECT height, hash, time, header, tx_count, result_count FROM blocks WHERE height = ?",
            (height,),
        ).fetchone()
        return None if row is None else self.check_row(row, BLOCK_ROW, f"block {height}'s row")

    def tx_rows(self, height: int) -> list[tuple]:
        """(idx, hash, signer, type, seq) of block ``height``'s transactions, each of its
        column's type (StoreError otherwise)."""
        return [
            self.check_row(row, TX_ROW, f"the row of transaction {row[0]!r} of block {height}")
            for row in self.conn.execute(
                "SELECT idx, hash, signer, type, seq FROM txs WHERE height = ? ORDER BY idx", (height,)
            )
        ]

    def check_column(self, table: str, column: str, kind: type) -> None:
        """A StoreError naming the first row of ``table`` (blocks or txs) whose ``column`` is not of
        type ``kind`` (bytes, int or str): for readers of raw rows (one scan, no decoding)."""
        keys = {"blocks": "height", "txs": "height, idx"}
        if table not in keys or not column.isidentifier():
            raise ValueError((table, column))
        row = self.conn.execute(
            f"SELECT {keys[table]}, {column} FROM {table} WHERE typeof({column}) != ? LIMIT 1",
            (_SQL_TYPES[kind].lower(),),
        ).fetchone()
        if row is not None:
            what = (
                f"block {row[0]}'s row"
                if table == "blocks"
                else f"the row of transaction {row[1]!r} of block {row[0]}"
            )
            typed(self.path, row[-1], kind, f"{what} ({column})")

    def check_row(self, row: tuple, types: tuple[tuple[str, type | None], ...], what: str) -> tuple:
        """``row`` when each value has its column's type (``types``: (column, bytes | int | str),
        or None for a column not checked); else a StoreError naming the row and the column."""
        for value, (column, kind) in zip(row, types, strict=True):
            if kind is not None:
                typed(self.path, value, kind, f"{what} ({column})")
        return row

    def payload(self, tx_hash: bytes) -> bytes | None:
        """The envelope's canonical bytes, None if it was never stored or was erased."""
        row = self.conn.execute("SELECT envelope FROM payloads WHERE hash = ?", (tx_hash,)).fetchone()
        return None if row is None else self.decode_row(row[0], f"the payload of {bytes(tx_hash).hex()}")

    def stored_hashes(self, tx_hashes: list[bytes]) -> list[bytes]:
        """Those of ``tx_hashes`` whose envelope a stored block holds (erased payloads aside): a
        look-up in the payloads' primary key, no decoding."""
        found: list[bytes] = []
        for start in range(0, len(tx_hashes), 500):  # below SQLite's limit of bound parameters
            chunk = tx_hashes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT hash FROM payloads WHERE hash IN ({marks})", chunk)
            found += [bytes(row[0]) for row in rows]
        return found

    def payloads_of_type(
        self, msg_type: str, *, high: int | None = None
    ) -> Iterator[tuple[int, int, str, bytes | None]]:
        """(height, idx, signer, the envelope's canonical bytes or None if erased) of every
        transaction of type ``msg_type`` in blocks up to ``high``, in ledger order: one query
        instead of a :meth:`payload` lookup per transaction."""
        top = (1 << 62) if high is None else high
        for height, idx, signer, tx_hash, envelope in self.conn.execute(
            "SELECT t.height, t.idx, t.signer, t.hash, p.envelope FROM txs AS t"
            " LEFT JOIN payloads AS p ON p.hash = t.hash"
            " WHERE t.type = ? AND t.height <= ? ORDER BY t.height, t.idx",
            (msg_type, top),
        ):
            if envelope is None:
                yield height, idx, signer, None
            else:
                yield height, idx, signer, self.decode_row(envelope, f"the payload of {bytes(tx_hash).hex()}")

    def result_rows(self, height: int) -> list[tuple[int, str, bytes]]:
        """(idx, kind, canonical bytes) of block ``height``'s results, in order."""
        rows = [
            self.check_row(row, RESULT_ROW, f"result {row[0]!r} of block {height}")
            for row in self.conn.execute(
                "SELECT idx, kind, data FROM results WHERE height = ? ORDER BY idx", (height,)
            )
        ]
        by_ref = any(type(d) is bytes and d[:1] == _TXREF for _i, _k, d in rows)
        hashes = self._tx_hashes(height) if by_ref else {}
        return [(idx, kind, self.decode_result(height, idx, data, hashes)) for idx, kind, data in rows]

    def results(self, height: int) -> list[dict[str, Any]]:
        return [loads_strict(r[2]) for r in self.result_rows(height)]

    def results_of_kinds(
        self,
        kinds: Iterable[str],
        *,
        low: int = 0,
        high: int | None = None,
        on_damaged: Callable[[int, int, StoreError], None] | None = None,
    ) -> Iterator[tuple[int, int, bytes]]:
        """(height, idx, canonical bytes) of every result of these kinds in blocks ``low`` to
        ``high`` (inclusive), in ledger order: what readers of the results table use instead of
        its raw rows (which may be compressed). A row that does not decode is a StoreError naming
        it, or, with ``on_damaged``, handed to it (height, idx, error) and skipped."""
        kinds = sorted(set(kinds))
        marks = ",".join("?" * len(kinds))
        top = (1 << 62) if high is None else high
        # without "tx" (half the rows), the partial index of the other kinds serves the query
        # (SQLite uses it only when the query repeats its WHERE term)
        other = "" if "tx" in kinds else " AND kind != 'tx'"
        hashes: tuple[int, dict[int, bytes]] = (-1, {})  # a block's transaction hashes, read once
        for height, idx, data in self.conn.execute(
            f"SELECT height, idx, data FROM results WHERE kind IN ({marks}){other}"
            " AND height BETWEEN ? AND ? ORDER BY height, idx",
            (*kinds, low, top),
        ):
            try:
                if type(data) is bytes and data[:1] == _TXREF and hashes[0] != height:
                    hashes = (height, self._tx_hashes(height))
                decoded = self.decode_result(height, idx, data, hashes[1])
            except StoreError as exc:
                if on_damaged is None:
                    raise
                on_damaged(height, idx, exc)
                continue
            yield height, idx, decoded

    def refused_tx_results(
        self, *, low: int = 0, high: int | None = None
    ) -> Iterator[tuple[int, int, bytes]]:
        """(height, idx, canonical bytes) of the "tx" results in blocks ``low`` to ``high`` whose
        status is not "ok" (the transactions a block refused), in ledger order. An accepted
        transaction's result stored by reference to its transaction (half of all rows, schema 3)
        is skipped without being read back: building them all to find the refused ones was half
        of a statement run's ledger view."""
        top = (1 << 62) if high is None else high
        for height, idx, data in self.conn.execute(
            "SELECT height, idx, data FROM results WHERE kind = 'tx' AND height BETWEEN ? AND ?"
            " ORDER BY height, idx",
            (low, top),
        ):
            if type(data) is bytes and data[:1] == _TXREF:
                continue
            decoded = self.decode_result(height, idx, data)
            if loads_strict(decoded).get("status") != "ok":
                yield height, idx, decoded

    def seal_rows(self, height: int) -> list[tuple[str, bytes]]:
        """(validator, canonical envelope bytes) of block ``height``'s stored seals."""
        return [
            (
                self._text(validator, f"the validator of a seal on block {height}"),
                self.decode_row(envelope, f"the seal of {validator} on block {height}"),
            )
            for validator, envelope in self.conn.execute(
                "SELECT validator, envelope FROM seals WHERE height = ? ORDER BY validator", (height,)
            )
        ]

    def own_seal(self, height: int) -> tuple[bytes, bytes] | None:
        row = self.conn.execute(
            "SELECT header_hash, envelope FROM local_own_seals WHERE height = ?", (height,)
        ).fetchone()
        what = f"this node's own seal on block {height} (local_own_seals)"
        return None if row is None else (self._blob(row[0], what), self._blob(row[1], what))

    def snapshot(self) -> tuple[int, State] | None:
        row = self.conn.execute("SELECT height, state FROM local_snapshot WHERE id = 0").fetchone()
        if row is None:
            return None
        what = "the state snapshot (local_snapshot)"
        return self._int(row[0], f"{what}'s height"), decode_state(self._blob(row[1], what))

    def alarms(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [
            (t, k, loads_strict(self._blob(e, "an alarm's evidence (local_alarms)")))
            for t, k, e in self.conn.execute("SELECT time, kind, evidence FROM local_alarms ORDER BY id")
        ]

    def get_local(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM local_kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._blob(row[0], f"the node-local value {key!r} (local_kv)")

    def iter_payload_hashes(self) -> Iterator[bytes]:
        for (h,) in self.conn.execute("SELECT hash FROM payloads"):
            yield self._blob(h, "the hash of a payload row")

    def count(self, table: str) -> int:
        if table not in LEDGER_TABLES:
            raise ValueError(table)
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
