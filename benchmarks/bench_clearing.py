"""Benchmark: clearing time of `market.clearing.clear` against its own pure-Python engine.

Seeded random books (asks and bids with limits uniform in 50000..300000 micro-units per kWh,
10..3000 Wh each) of 1k, 10k, 100k and 1M orders; for each size the best wall time of N
interleaved runs (benchmarks/fair.py) of what `clear()` picks on its own ("auto": numpy for
large books) and of `engine="python"`, our plain implementation, as the baseline. Both results
must equal the independent reference in tests/market/reference.py (run once, as a check only).

    .venv/bin/python benchmarks/bench_clearing.py [--sizes 1000,10000] [--reference-max N]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
from pathlib import Path

# The reference lives with the tests; make the repository importable when run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fair import goal_row, interleaved_best_s  # noqa: E402  (benchmarks/ is the script's folder)

from market.clearing import Order, clear  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--mechanism", default="uniform", choices=("uniform", "pay-as-bid", "community"))
    parser.add_argument(
        "--reference-max",
        type=int,
        default=1_000_000,
        help="skip the (slow) reference check above this many orders",
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    options = {"community_price": 175_000} if args.mechanism == "community" else {}
    options |= {"grid_fee_per_kwh": 30_000, "levies_per_kwh": 5_000}

    print(
        f"clearing benchmark: mechanism={args.mechanism}, seed={args.seed}, "
        f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}, "
        "wall time, best of N interleaved runs"
    )
    header = (
        f"{'orders':>9} {'trades':>8} {'volume MWh':>10} {'auto s':>9} "
        f"{'python s':>9} {'speed-up':>8} {'goal s':>7} {'= reference':>11}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for size in sizes:
        book = make_book(size, args.seed)
        repeat = 7 if size <= 10_000 else 5 if size <= 100_000 else 3
        results: dict[str, object] = {}

        def run(engine: str, b: list[Order] = book) -> object:
            return clear(b, args.mechanism, engine=engine, **options)

        best = interleaved_best_s(
            {"auto": lambda: run("auto"), "python": lambda: run("python")}, repeat, results
        )
        ours = results["auto"]
        failed |= ours != results["python"]
        if size <= args.reference_max:
            equal = ours == reference_clear(book, args.mechanism, **options)
            failed |= not equal
            equal_text = str(equal)
        else:
            equal_text = "skipped"
        goal = GOALS_S.get(size)
        goal_text = f"{goal:g}" if goal else "-"
        speedup = best["python"] / best["auto"]
        print(
            f"{size:>9} {len(ours.trades):>8} {ours.volume_wh / 1e6:>10.1f} {best['auto']:>9.4f} "
            f"{best['python']:>9.4f} {speedup:>7.1f}x {goal_text:>7} {equal_text:>11}"
        )
        if goal:
            goal_row(
                f'clear {size:,} orders: auto engine vs engine="python"',
                f"{best['auto']:.3f} s vs {best['python']:.3f} s ({speedup:.1f}×)",
                f"< {goal:g} s",
                best["auto"] < goal,
            )
        results.clear()
        del book, ours
        gc.collect()
    if failed:
        print("ERROR: the engines or the reference disagree", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
