"""Tamper detection: flip one byte of one column of one row of a ledger table, 1,000 times;
``verify_store`` (what `peerwatt verify` runs) must name a height every time.

The store is a small market ledger (orders, clearing, readings, settlement). Each round copies
the pristine database file, changes one value in place with the same storage class (a BLOB stays
a BLOB, TEXT stays TEXT even when the flipped bytes are not UTF-8, an INTEGER flips one bit), and
verifies the copy read-only. The node-local ``local_*`` tables are not ledger and are not flipped.
"""

from __future__ import annotations

import contextlib
import random
import resource
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from chain.store import DB_NAME, LEDGER_TABLES, Store
from chain.verify import VerifyError, verify_store
from market.app import MarketApp
from tests.support.market_ledger import build_market

pytestmark = pytest.mark.reliability

SEED = 61_962
FLIPS = 1_000
TIME_LIMIT_S = 60.0
MEMORY_CAP_B = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A verified market store as one self-contained file (WAL checkpointed, rollback journal)."""
    base = tmp_path_factory.mktemp("tamper")
    c = build_market(base / "net", validators=3)
    for ledger in c.ledgers[1:]:
        ledger.close()
    c.ledgers[0].close()
    source = base / "net" / "validator-0"
    conn = sqlite3.connect(source / DB_NAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    store = Store.open(source, readonly=True)
    try:
        assert verify_store(store, MarketApp()).blocks == 4
    finally:
        store.close()
    return source / DB_NAME


def flip(rng: random.Random, value):
    """One flipped byte (one bit of it) of a value, in the value's own storage class."""
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(63)), "INTEGER"
    if isinstance(value, str):
        data, kind = bytearray(value.encode("utf-8")), "TEXT"
    else:
        data, kind = bytearray(value), "BLOB"
    position = rng.randrange(len(data))
    data[position] ^= 1 << rng.randrange(8)
    return bytes(data), kind


def tamper(path: Path, rng: random.Random) -> tuple[str, str] | str:
    """Flip a byte in a random column of a random row of a random ledger table, in place.

    Returns (table, column), or why nothing changed: "constraint" when SQLite refused the new
    value (a duplicate primary key, genesis.id's CHECK), "normalised" when it stored the old one."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # a scratch copy: no fsync per flip
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.text_factory = bytes  # read TEXT as raw bytes, so a flip may leave invalid UTF-8 in it
    try:
        table = rng.choice(LEDGER_TABLES)
        info = list(conn.execute(f"PRAGMA table_info({table})"))
        columns = [row[1].decode() for row in info]
        # rows are picked by primary key (the ledger tables are WITHOUT ROWID since schema 3)
        key = [row for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
        # (TEXT keys come back as bytes here: compare them as text)
        where = " AND ".join(
            f"{r[1].decode()} = " + ("CAST(? AS TEXT)" if r[2].upper() == b"TEXT" else "?") for r in key
        )
        key = [r[1].decode() for r in key]
        keys = list(conn.execute(f"SELECT {', '.join(key)} FROM {table}"))
        picked = rng.choice(keys)
        column = rng.choice(columns)
        value, storage = conn.execute(
            f"SELECT {column}, typeof({column}) FROM {table} WHERE {where}", picked
        ).fetchone()
        if storage == b"text":
            value = value.decode("utf-8")
        new_value, kind = flip(rng, value)
        expression = "CAST(? AS TEXT)" if kind == "TEXT" else "?"
        try:
            conn.execute(f"UPDATE {table} SET {column} = {expression} WHERE {where}", (new_value, *picked))
        except sqlite3.IntegrityError:
            return "constraint"
        row = conn.execute(f"SELECT {column} FROM {table} WHERE {where}", picked).fetchone()
        original = value.encode("utf-8") if isinstance(value, str) else value
        if row is not None and row[0] == original:  # SQLite normalised the change away
            return "normalised"  # (row None: the column was part of the key, and the row moved)
        return table, column
    finally:
        conn.close()


@contextlib.contextmanager
def memory_capped(extra_bytes: int):
    """Cap this process's address space, so a verify that tries to allocate without bound fails
    with MemoryError (reported as a crash) instead of taking the machine's memory."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_every_flipped_byte_is_found(pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    work = tmp_path / "copy"
    work.mkdir()
    target = work / DB_NAME
    found: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    missed = []
    crashed = []
    started = time.perf_counter()
    for round_ in range(FLIPS):
        shutil.copyfile(pristine, target)
        where = tamper(target, rng)
        if isinstance(where, str):
            skipped[where] += 1
            continue
        store = Store.open(work, readonly=True)
        try:
            with memory_capped(MEMORY_CAP_B):
                verify_store(store, MarketApp())
        except VerifyError as exc:
            found[f"{where[0]}.{where[1]}"] += 1
            assert exc.problem
        except Exception as exc:  # noqa: BLE001 - collected: verify must name a height, not crash
            crashed.append((round_, where, f"{type(exc).__name__}: {exc}"[:160]))
        else:
            missed.append((round_, where))
        finally:
            store.close()
    elapsed = time.perf_counter() - started
    print(f"\n{FLIPS} flips in {elapsed:.1f} s: {sum(found.values())} found, unchanged: {dict(skipped)}")
    print(dict(sorted(found.items())))
    assert not missed, missed
    kinds = Counter(f"{where[0]}.{where[1]} {problem.split(':')[0]}" for _, where, problem in crashed)
    assert not crashed, f"{len(crashed)} crashes instead of VerifyError: {dict(kinds)}; e.g. {crashed[:3]}"
    assert skipped["normalised"] <= FLIPS // 100
    assert skipped["constraint"] <= FLIPS // 8  # mostly genesis.id, which has CHECK (id = 0)
    assert len(found) >= 20  # nearly every column of every ledger table was hit
    assert elapsed < TIME_LIMIT_S
