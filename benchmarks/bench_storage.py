"""Ledger storage per household and year: a simulated community's store, compressed as peerwatt
writes it, against the same store with every row raw (the baseline, made in the same run).

`peerwatt simulate` writes the ledger of H homes over D days (every node's store). The baseline is
a copy of the largest store with each compressed row of payloads, results and seals rewritten as
its canonical bytes (what peerwatt wrote before compression, row for row); both copies are then
VACUUMed so SQLite's free pages count in neither. Per household and year = bytes / (H x D) x 365:
a linear extrapolation (a store grows by the blocks it holds; the state snapshot is a fixed
size). Per-block costs (headers, seals) are shared by the households, so a bigger community
stores less per household. Also timed, interleaved best of 3: `verify` of each copy.

Goal (issue 21): at most 40 MB per household and year on a node.

Run: .venv/bin/python benchmarks/bench_storage.py [--homes 20] [--days 7]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import interleaved_best_s  # noqa: E402

GOAL_MB = 40.0


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
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    finally:
        conn.close()


def decompress_copy(source: Path, target: Path) -> int:
    """Copy ``source``'s store to ``target`` with every compressed row stored raw; rows rewritten."""
    target.mkdir(parents=True)
    shutil.copy(source / DB_NAME, target / DB_NAME)
    store = Store.open(target)
    rewritten = 0
    try:
        for table, column in COMPRESSED.items():
            rows = store.conn.execute(f"SELECT rowid, {column} FROM {table}").fetchall()
            raw = [(store.decode_row(data, f"a {table} row"), rowid) for rowid, data in rows]
            changed = [
                (data, rowid) for (data, rowid), (_, old) in zip(raw, rows, strict=True) if data != old
            ]
            store.conn.execute("BEGIN")
            store.conn.executemany(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", changed)
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
    parser.add_argument("--days", type=float, default=7.0)
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
        compressed = work / "compressed"
        shutil.copytree(largest, compressed)
        raw = work / "raw"
        rewritten = decompress_copy(largest, raw)
        sizes = {"raw (baseline)": vacuumed_bytes(raw), "compressed": vacuumed_bytes(compressed)}
        tables = {"raw (baseline)": table_bytes(raw), "compressed": table_bytes(compressed)}
        times = interleaved_best_s(
            {"raw (baseline)": lambda: verify_s(raw), "compressed": lambda: verify_s(compressed)}, rounds=3
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    household_days = args.homes * args.days
    report = getattr(result, "verify", result)
    print(
        f"{how}: {report.blocks} blocks, {report.txs} txs; stores as written: "
        + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in written.items())
    )
    print(f"largest store: {largest.name}; {rewritten} rows rewritten raw for the baseline")
    print(
        f"{'store (vacuumed)':<16} {'MB':>7} {'payloads':>9} {'results':>8} {'seals':>7} {'other':>7}"
        f" {'MB / household-year':>20} {'verify s':>9}"
    )
    for name, size in sizes.items():
        t = tables[name]
        parts = [t.get(n, 0) for n in ("payloads", "results", "seals")]
        per_year = size / household_days * 365 / 1e6
        mb = [x / 1e6 for x in (size, *parts, size - sum(parts))]
        print(
            f"{name:<16} {mb[0]:>7.2f} {mb[1]:>9.2f} {mb[2]:>8.2f} {mb[3]:>7.2f} {mb[4]:>7.2f}"
            f" {per_year:>20.1f} {times[name]:>9.2f}"
        )
    ratio = sizes["raw (baseline)"] / sizes["compressed"]
    per_year = sizes["compressed"] / household_days * 365 / 1e6
    met = "met" if per_year <= GOAL_MB else "NOT met"
    print(
        f"compressed store {ratio:.2f}x smaller than raw; {per_year:.1f} MB per household-year"
        f" (goal <= {GOAL_MB:.0f}: {met}); verify {times['compressed'] / times['raw (baseline)']:.2f}x"
        " the time on the raw copy"
    )


if __name__ == "__main__":
    main()
