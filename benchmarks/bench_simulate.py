"""`peerwatt simulate` speed: homes x days on this machine, every message signed and verified.

Prints a table with, measured in the same run, the floor that signatures alone impose (one sign
per message, one verify per message per node) so the overhead of everything else is visible.
Targets (issue): 100 homes x 1 day <= 20 s; 1,000 homes x 1 day <= 3 min. For comparison, the
gsy-e simulator's published figure on this machine class is 52 s for 10 homes x 1 day.

Run: .venv/bin/python benchmarks/bench_simulate.py [--homes 10,100] [--days 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from chain.keys import generate_private_key
from chain.signature import sign, verify
from peerwatt.simulate import SimOptions, run_simulation


def signature_floor_s(messages: int, nodes: int) -> float:
    key = generate_private_key()
    data = b"x" * 300
    sig = sign(key, data)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        sign(key, data)
    sign_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        verify(key.public_key(), data, sig)
    verify_s = (time.perf_counter() - start) / n
    return messages * (sign_s + nodes * verify_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", default="10,100")
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--validators", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for homes in (int(h) for h in args.homes.split(",")):
        out = Path(tempfile.mkdtemp(prefix=f"bench-sim-{homes}-"))
        start = time.perf_counter()
        result = run_simulation(SimOptions(homes=homes, days=args.days, validators=args.validators, out=out))
        elapsed = time.perf_counter() - start
        floor = signature_floor_s(result.verify.txs, args.validators + 1)
        rows.append((homes, args.days, elapsed, result.verify.txs, result.verify.seconds, floor))
    print(
        f"{'homes':>6} {'days':>5} {'total s':>9} {'txs':>8} {'of which verify s':>18} "
        f"{'signature floor s':>18}"
    )
    print("-" * 70)
    for homes, days, elapsed, txs, verify_s, floor in rows:
        print(f"{homes:>6} {days:>5g} {elapsed:>9.1f} {txs:>8} {verify_s:>18.1f} {floor:>18.1f}")
    print("-" * 70)
    print(
        "targets: 100 homes x 1 day <= 20 s, 1,000 homes x 1 day <= 180 s (gsy-e: 52 s for 10 homes x 1 day)"
    )


if __name__ == "__main__":
    main()
