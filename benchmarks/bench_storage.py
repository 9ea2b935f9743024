"""Ledger storage per household and year: a simulated community's store as peerwatt writes it
(schema 3: compressed rows, WITHOUT ROWID tables, two secondary indexes fewer), against what
peerwatt stored before compression (the baseline, made in the same run from the same rows).

`peerwatt simulate` writes the ledger of H homes over D days (every node's store). Of the largest
store the benchmark makes:
- baseline, "raw, schema 2": the schema-2 layout (rowid tables with their sqlite_autoindexes,
  txs by signer, results by kind for every kind; the layout of 385d1df, i.e. schema 1 without
  its index of txs by hash, which was 6 % more) with every row of payloads, results and seals as
  its canonical bytes: what peerwatt stored before compression, row for row;
- "raw, schema 3": today's layout with every row raw (what the layout alone saves);
- "compressed, schema 2": the same rows, compressed as written, in the schema-2 layout (what
  peerwatt stored before schema 3);
- "compressed": the store as peerwatt wrote it.
All copies are VACUUMed so SQLite's free pages count in none; the store as written (not
VACUUMed: B-tree pages split by inserts are partly empty) is shown too. Per household and year =
bytes / (H x D) x 365: a linear extrapolation (a store grows by the blocks it holds; the state
snapshot is a fixed size). Per-block costs (headers, seals) are shared by the households, so a
bigger community stores less per household; a short run stores its first 1,000 rows of each
compressed table raw (before the first dictionary), so it overstates a year slightly. Also:
SQLite's dbstat of every table and index of each copy, and `verify` of each copy, interleaved
best of 2.

Goal (issue 21): at most 40 MB per household and year on a node, measured on a simulated month
(the default: 20 homes x 30 days) and extrapolated.

Run: .venv/bin/python benchmarks/bench_storage.py [--homes 20] [--days 30]
     or, on the ledger of a study already run with those --homes and --days:
     .venv/bin/python benchmarks/bench_storage.py --homes 20 --days 30 --ledger study/ledger
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from chain.store import COMPRESSED, DB_NAME, Store
from chain.verify import verify_store
from market.app import MarketApp
from peerwatt.simulation import SimOptions, run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import goal_row, interleaved_best_s  # noqa: E402

from tests.support.old_store_schemas import SCHEMA_2_DDL  # noqa: E402

GOAL_MB = 40.0
# secondary indexes of either layout (the sqlite_autoindex_* ones are counted with them)
INDEXES = ("txs_signer", "txs_hash", "results_kind", "blocks_time")


def vacuumed_bytes(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return pages * size


def table_bytes(data_dir: Path) -> dict[str, int]:
    """Bytes of each table and index (SQLite's dbstat), largest first."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return dict(
            conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
        )
    finally:
        conn.close()


SCHEMA_2_LEDGER = SCHEMA_2_DDL + "PRAGMA user_version=2;"  # the baseline's layout
# each table's columns, read from the written store in ledger order ("canon" decodes a row)
SCHEMA_2_COPY = {
    "genesis": "SELECT * FROM src.genesis",
    "blocks": "SELECT * FROM src.blocks ORDER BY height",
    "txs": "SELECT * FROM src.txs ORDER BY height, idx",
    "payloads": "SELECT p.hash, canon(p.envelope) FROM src.txs t JOIN src.payloads p ON p.hash = t.hash"
    " GROUP BY p.hash ORDER BY min(t.height), min(t.idx)",
    "results": "SELECT height, idx, kind, canon_result(height, idx, data) FROM src.results"
    " ORDER BY height, idx",
    "seals": "SELECT height, validator, canon(envelope) FROM src.seals ORDER BY height, validator",
    "local_snapshot": "SELECT * FROM src.local_snapshot",
    "local_own_seals": "SELECT * FROM src.local_own_seals ORDER BY height",
    "local_alarms": "SELECT * FROM src.local_alarms ORDER BY id",
    "local_kv": "SELECT * FROM src.local_kv",
}


def schema_2_copy(source: Path, target: Path, *, raw: bool) -> int:
    """``source``'s store rebuilt in ``target`` as the schema-2 layout, with every row raw or as
    it is stored (compressed, with its dictionaries); returns the rows stored compressed."""
    target.mkdir(parents=True)
    store = Store.open(source, readonly=True)
    rewritten = 0

    def canon(data: bytes) -> bytes:
        nonlocal rewritten
        decoded = store.decode_row(data, "a row")
        rewritten += decoded != data
        return decoded if raw else data

    def canon_result(height: int, idx: int, data: bytes) -> bytes:
        nonlocal rewritten
        decoded = store.decode_result(height, idx, data)
        rewritten += decoded != data
        return decoded if raw else data

    conn = sqlite3.connect(target / DB_NAME, isolation_level=None)
    try:
        conn.create_function("canon", 1, canon, deterministic=True)
        conn.create_function("canon_result", 3, canon_result, deterministic=True)
        conn.executescript(SCHEMA_2_LEDGER)
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source / DB_NAME}?mode=ro",))
        conn.execute("BEGIN")
        for table, select in SCHEMA_2_COPY.items():
            conn.execute(f"INSERT INTO main.{table} {select}")
        if not raw:
            conn.execute("INSERT INTO main.store_dicts SELECT * FROM src.store_dicts")
        conn.execute("COMMIT")
    finally:
        conn.close()
        store.close()
    return rewritten


def _decoded(store: Store, table: str, data: bytes, keys: list) -> bytes:
    """A stored row's canonical bytes (a "tx" result may be stored by reference to its txs row)."""
    if table == "results":
        return store.decode_result(keys[0], keys[1], data)
    return store.decode_row(data, f"a {table} row")


def raw_copy(source: Path, target: Path) -> int:
    """Copy ``source``'s store to ``target`` with every compressed row stored raw, in its own
    layout; returns the rows rewritten."""
    target.mkdir(parents=True)
    shutil.copy(source / DB_NAME, target / DB_NAME)
    store = Store.open(target)
    rewritten = 0
    try:
        for table, column in COMPRESSED.items():
            key = {"payloads": "hash", "results": "height, idx", "seals": "height, validator"}[table]
            where = " AND ".join(f"{k} = ?" for k in key.split(", "))
            rows = store.conn.execute(f"SELECT {column}, {key} FROM {table}").fetchall()
            changed = [
                (raw, *keys)
                for data, *keys in rows
                if (raw := _decoded(store, table, data, keys)) != bytes(data)
            ]
            store.conn.execute("BEGIN")
            store.conn.executemany(f"UPDATE {table} SET {column} = ? WHERE {where}", changed)
            store.conn.execute("DELETE FROM store_dicts")
            store.conn.execute("COMMIT")
            rewritten += len(changed)
    finally:
        store.close()
    return rewritten


def verify_s(data_dir: Path) -> None:
    store = Store.open(data_dir, readonly=True)
    try:
        verify_store(store, MarketApp(), workers=1)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=20)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--ledger", type=Path, help="the ledger folder of a study run with --homes/--days")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        start = time.perf_counter()
        if args.ledger is None:
            result = run_simulation(SimOptions(homes=args.homes, days=args.days, out=work / "sim"))
            ledger = work / "sim" / "ledger"
            how = f"simulated {args.homes} homes x {args.days:g} days in {time.perf_counter() - start:.0f} s"
        else:
            ledger = args.ledger
            store = Store.open(ledger / "sequencer", readonly=True)
            try:
                result = verify_store(store, MarketApp(), workers=2)
            finally:
                store.close()
            how = f"the ledger of {args.homes} homes x {args.days:g} days in {ledger}"
        stores = sorted(ledger.iterdir())
        written = {d.name: (d / DB_NAME).stat().st_size for d in stores}
        largest = max(stores, key=lambda d: written[d.name])
        copies = {
            "raw, schema 2 (baseline)": work / "raw2",
            "raw, schema 3": work / "raw3",
            "compressed, schema 2": work / "compressed2",
        }
        rewritten = schema_2_copy(largest, copies["raw, schema 2 (baseline)"], raw=True)
        raw_copy(largest, copies["raw, schema 3"])
        schema_2_copy(largest, copies["compressed, schema 2"], raw=False)
        copies["compressed (peerwatt)"] = work / "compressed"
        shutil.copytree(largest, copies["compressed (peerwatt)"])
        sizes = {name: vacuumed_bytes(path) for name, path in copies.items()}
        tables = {name: table_bytes(path) for name, path in copies.items()}
        times = interleaved_best_s(
            {name: (lambda path=path: verify_s(path)) for name, path in copies.items()}, rounds=2
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    household_days = args.homes * args.days

    def per_year(size: float) -> float:
        return size / household_days * 365 / 1e6

    report = getattr(result, "verify", result)
    print(
        f"{how}: {report.blocks} blocks, {report.txs} txs; stores as written: "
        + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in written.items())
    )
    print(f"largest store: {largest.name}; {rewritten} of its rows are compressed (raw in the baselines)")
    print(
        f"{'store (vacuumed)':<25} {'MB':>7} {'payloads':>9} {'results':>8} {'seals':>7} {'txs':>7}"
        f" {'indexes':>8} {'other':>7} {'MB / household-year':>20} {'verify s':>9}"
    )
    for name, size in sizes.items():
        t = tables[name]
        parts = [t.get(n, 0) for n in ("payloads", "results", "seals", "txs")]
        indexes = sum(v for n, v in t.items() if n.startswith("sqlite_autoindex") or n in INDEXES)
        mb = [x / 1e6 for x in (size, *parts, indexes, size - sum(parts) - indexes)]
        print(
            f"{name:<25} {mb[0]:>7.2f} {mb[1]:>9.2f} {mb[2]:>8.2f} {mb[3]:>7.2f} {mb[4]:>7.2f}"
            f" {mb[5]:>8.2f} {mb[6]:>7.2f} {per_year(size):>20.1f} {times[name]:>9.2f}"
        )
    names = list(sizes)
    print("dbstat, MB per table and index (vacuumed): " + " | ".join(names))
    objects = sorted(
        {n for t in tables.values() for n in t}, key=lambda n: -max(t.get(n, 0) for t in tables.values())
    )
    for obj in objects:
        if max(t.get(obj, 0) for t in tables.values()) >= 10_000:
            print(f"  {obj:<30} " + " ".join(f"{tables[name].get(obj, 0) / 1e6:>8.2f}" for name in names))
    baseline, before, compressed = sizes[names[0]], sizes[names[2]], sizes[names[-1]]
    print(
        f"as written (not vacuumed), {largest.name}: {written[largest.name] / 1e6:.2f} MB ="
        f" {per_year(written[largest.name]):.1f} MB per household-year"
    )
    met = "met" if per_year(written[largest.name]) <= GOAL_MB else "NOT met"
    print(
        f"compressed store {baseline / compressed:.2f}x smaller than the raw schema-2 baseline;"
        f" {per_year(compressed):.1f} MB per household-year VACUUMed vs {per_year(baseline):.1f},"
        f" {per_year(written[largest.name]):.1f} as written (goal <= {GOAL_MB:.0f} as written: {met});"
        f" verify {times[names[-1]] / times[names[0]]:.2f}x the time on the baseline"
    )
    print(
        f"schema 3 vs schema 2, both compressed: {per_year(compressed):.1f} vs {per_year(before):.1f} MB"
        f" per household-year ({1 - compressed / before:.0%} less)"
    )
    on_node = written[largest.name]
    goal_row(
        f"ledger store as written on a node (not VACUUMed), {args.homes} homes x {args.days:g} days",
        f"{per_year(on_node):.1f} MB per household-year ({on_node / 1e6:.2f} MB); same rows raw in"
        f" schema 2, VACUUMed: {per_year(baseline):.1f}",
        f"<= {GOAL_MB:.0f} MB per household-year (issue 21)",
        per_year(on_node) <= GOAL_MB,
    )
    goal_row(
        f"ledger store VACUUMed, {args.homes} homes x {args.days:g} days",
        f"{per_year(compressed):.1f} MB per household-year ({compressed / 1e6:.2f} MB); same rows raw in"
        f" schema 2: {per_year(baseline):.1f}",
        f"<= {GOAL_MB:.0f} MB per household-year (issue 21; a node holds the store as written)",
        None,
    )


if __name__ == "__main__":
    main()
