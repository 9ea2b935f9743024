"""Benchmark: clearing time of `market.clearing.clear` against the plain sort-and-walk reference.

Seeded random books (asks and bids with limits uniform in 50000..300000 micro-units per kWh,
10..3000 Wh each) of 1k, 10k, 100k and 1M orders; for each size the best wall time of a few
runs, for peerwatt's engine (what `clear()` picks on its own) and for the reference in
tests/market/reference.py, measured in the same run, plus a check that both results are equal.

    .venv/bin/python benchmarks/bench_clearing.py [--sizes 1000,10000] [--reference-max N]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The reference lives with the tests; make the repository importable when run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from market.clearing import ClearingResult, Order, clear  # noqa: E402
from tests.market.reference import reference_clear  # noqa: E402

GOALS_S = {100_000: 0.1, 1_000_000: 1.5}


def make_book(count: int, seed: int) -> list[Order]:
    """A seeded random book: half asks, half bids, limits in a realistic band."""
    rng = random.Random(seed)
    return [
        Order(
            order_id=f"{rng.getrandbits(64):016x}",
            meter=f"{rng.getrandbits(128):032x}",
            side="sell" if rng.getrandbits(1) else "buy",
            energy_wh=rng.randint(10, 3000),
            limit_price=rng.randint(50_000, 300_000),
            position=index,
        )
        for index in range(count)
    ]


def best_time(run: Callable[[], ClearingResult], repeat: int) -> tuple[float, ClearingResult]:
    """The best wall time of ``repeat`` runs, and the last run's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None  # free the previous result before the next run
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--mechanism", default="uniform",
                        choices=("uniform", "pay-as-bid", "community"))
    parser.add_argument("--reference-max", type=int, default=1_000_000,
                        help="skip the (slow) reference above this many orders")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    options = {"community_price": 175_000} if args.mechanism == "community" else {}
    options |= {"grid_fee_per_kwh": 30_000, "levies_per_kwh": 5_000}

    print(f"clearing benchmark: mechanism={args.mechanism}, seed={args.seed}, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}, "
          "wall time, best of N runs")
    header = (f"{'orders':>9} {'trades':>8} {'volume MWh':>10} {'peerwatt s':>11} "
              f"{'reference s':>12} {'speed-up':>8} {'goal s':>7} {'equal':>6}")
    print(header)
    print("-" * len(header))
    failed = False
    for size in sizes:
        book = make_book(size, args.seed)
        repeat = 7 if size <= 10_000 else 5 if size <= 100_000 else 3
        ours_s, ours = best_time(lambda b=book: clear(b, args.mechanism, **options), repeat)
        if size <= args.reference_max:
            ref_repeat = 1 if size > 100_000 else repeat
            ref_s, ref = best_time(
                lambda b=book: reference_clear(b, args.mechanism, **options), ref_repeat
            )
            equal = ours == ref
            failed |= not equal
            ref_text, speedup, equal_text = f"{ref_s:.4f}", f"{ref_s / ours_s:.1f}x", str(equal)
        else:
            ref_text, speedup, equal_text = "skipped", "-", "-"
        goal = GOALS_S.get(size)
        goal_text = f"{goal:g}" if goal else "-"
        print(f"{size:>9} {len(ours.trades):>8} {ours.volume_wh / 1e6:>10.1f} {ours_s:>11.4f} "
              f"{ref_text:>12} {speedup:>8} {goal_text:>7} {equal_text:>6}")
        del book, ours
        gc.collect()
    if failed:
        print("ERROR: peerwatt's result differs from the reference", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
