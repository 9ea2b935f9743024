"""Ledger throughput in process: propose -> re-execute and seal on 3 validators -> store, and verify.

Uses the engine's test app (kv) so the numbers are the engine's own (signatures, roots, SQLite),
not an application's. Baseline measured in the same run: raw `cryptography` signature
verification on one core (the bound for both: every transaction's signature is checked).
Goal for later tuning: verify >= 10k tx/s per core.

Run: .venv/bin/python benchmarks/bench_ledger.py [--txs 20000] [--block 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from chain.kvapp import KeyValueApp
from chain.localnet import make_community
from chain.signature import sign, verify
from chain.verify import verify_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20_000)
    parser.add_argument("--block", type=int, default=1000, help="transactions per block")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    c = make_community(validators=3, members=10, meters_per_member=10)
    base = tempfile.mkdtemp(prefix="bench-ledger-")
    ledgers = c.open_ledgers(base, KeyValueApp)
    t0 = c.genesis.time
    envs = c.signed_readings(args.txs, t0 - t0 % 900, t0)
    wires = [e.to_bytes() for e in envs]

    start = time.perf_counter()
    intake = [ledgers[0].intake(w, t0) for w in wires]
    intake_s = time.perf_counter() - start

    start = time.perf_counter()
    for b in range(0, len(intake), args.block):
        c.run_block(intake[b : b + args.block], t0 + 1 + b // args.block)
    pipeline_s = time.perf_counter() - start

    start = time.perf_counter()
    report = verify_store(ledgers[1].store, KeyValueApp())
    verify_s = time.perf_counter() - start

    key = c.meters[0].key
    data = b"x" * 200
    sig = sign(key, data)
    n = 3000
    start = time.perf_counter()
    for _ in range(n):
        verify(key.public_key(), data, sig)
    raw_rate = n / (time.perf_counter() - start)

    txs = len(wires)
    print(f"{'stage (one core)':<58} {'tx/s':>10}")
    print("-" * 70)
    print(f"{'intake (parse + verify + replay + app check), sequencer':<58} {txs / intake_s:>10,.0f}")
    print(f"{'propose + validate/seal on 3 validators + store on 3':<58} {txs / pipeline_s:>10,.0f}")
    print(f"{'peerwatt verify of a store (re-verify + re-execute)':<58} {report.txs / verify_s:>10,.0f}")
    print(f"{'baseline: raw cryptography P-256 verify':<58} {raw_rate:>10,.0f}")
    print("-" * 70)
    print(
        f"{txs} txs in {report.blocks} blocks; verify goal >= 10,000 tx/s: "
        f"{'met' if report.txs / verify_s >= 10_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
