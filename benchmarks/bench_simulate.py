"""`peerwatt simulate` speed: homes x days on this machine, every message signed and verified.

Prints a table with, measured in the same run, the floor that signatures alone impose (issue 21:
one sign and four verifies per transaction: one per node, sequencer and two validators, and one
by the final `verify`; each the raw `cryptography` call timed right after the simulation; the
final verify's share divided by the cores it ran on) so the overhead of everything else is
visible as a ratio. Goal (issue 21): total
time at most 2x that floor. No other project's figure is printed: a comparison with another
simulator belongs here only if this script runs it in the same run.

Also (issue 21): a year of the largest community extrapolated from its measured run (days x 365;
goal under 30 minutes), and the process's memory over a longer study (``--memory-homes`` x
``--memory-days``: RSS after day 1 and after the last day; goal: flat). The memory study is
longer than the market's 40-day windows and long enough for the bounded caches (verified
hashes, checked state entries, receipts) to fill, so its second half shows the steady state.

Run: .venv/bin/python benchmarks/bench_simulate.py [--homes 10,100] [--days 1]
     [--memory-homes 10] [--memory-days 60] (0 days skips the memory run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from chain.keys import generate_private_key
from peerwatt.simulation import SimOptions, run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import goal_row, interleaved_rates  # noqa: E402


def signature_floor_s(messages: int, nodes: int, verify_workers: int) -> float:
    """Seconds that ``messages`` raw signs, ``nodes`` raw verifies each and one more verify each
    (the final `verify`, on ``verify_workers`` cores) cost here."""
    key = generate_private_key()
    public = key.public_key()
    data = b"x" * 300
    algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    der = key.sign(data, algorithm)
    rates = interleaved_rates(
        {"sign": lambda: key.sign(data, algorithm), "verify": lambda: public.verify(der, data, algorithm)},
        1000,
        5,
    )
    return messages * (1 / rates["sign"] + (nodes + 1 / verify_workers) / rates["verify"])


def memory_study(homes: int, days: float, validators: int) -> list[tuple[float, float]]:
    """(simulated days, RSS in MB) of a study run in a fresh process: in this one, the memory of
    the studies before it would stay resident and hide any growth."""
    code = (
        "import json, sys, tempfile; from pathlib import Path; "
        "from peerwatt.simulation import SimOptions, run_simulation; "
        f"r = run_simulation(SimOptions(homes={homes}, days={days}, validators={validators}, "
        "out=Path(tempfile.mkdtemp(prefix='bench-sim-memory-')))); "
        "print(json.dumps(r.memory))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [tuple(pair) for pair in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", default="10,100")
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--validators", type=int, default=2)
    parser.add_argument("--memory-homes", type=int, default=10)
    parser.add_argument("--memory-days", type=float, default=60.0)
    args = parser.parse_args()
    rows = []
    for homes in (int(h) for h in args.homes.split(",")):
        out = Path(tempfile.mkdtemp(prefix=f"bench-sim-{homes}-"))
        start = time.perf_counter()
        result = run_simulation(SimOptions(homes=homes, days=args.days, validators=args.validators, out=out))
        elapsed = time.perf_counter() - start
        floor = signature_floor_s(result.verify.txs, args.validators + 1, max(1, result.verify.workers))
        rows.append((homes, args.days, elapsed, result.verify.txs, result.verify.seconds, floor))
    print(
        f"{'homes':>6} {'days':>5} {'total s':>9} {'txs':>8} {'of which verify s':>18} "
        f"{'signature floor s':>18} {'x floor':>8} {'goal':>6}"
    )
    print("-" * 89)
    for homes, days, elapsed, txs, verify_s, floor in rows:
        ratio = elapsed / floor
        print(
            f"{homes:>6} {days:>5g} {elapsed:>9.1f} {txs:>8} {verify_s:>18.1f} {floor:>18.1f} "
            f"{ratio:>7.1f}x {'met' if ratio <= 2.0 else 'NOT met':>6}"
        )
    print("-" * 89)
    print("goal: total <= 2x the signature floor measured in the same run")
    for homes, days, elapsed, txs, _, floor in rows:
        goal_row(
            f"`simulate` {homes} homes × {days:g} day ({txs:,} txs) vs its signature floor",
            f"{elapsed:.1f} s vs {floor:.1f} s = {elapsed / floor:.1f}×",
            "≤ 2× the floor",
            elapsed <= 2 * floor,
        )
    homes, days, elapsed = rows[-1][0], rows[-1][1], rows[-1][2]
    year_min = elapsed / days * 365 / 60
    print(
        f"a year of {homes} homes, extrapolated from {days:g} measured day(s) ({elapsed:.1f} s): "
        f"{year_min:.0f} min (goal < 30 min: {'met' if year_min < 30 else 'NOT met'})"
    )
    goal_row(
        f"a year of {homes} homes, extrapolated ×365 from the measured {days:g} day",
        f"{year_min:.0f} min (floor alone: {rows[-1][5] / days * 365 / 60:.0f} min)",
        "< 30 min",
        year_min < 30,
    )
    if args.memory_days > 0:
        start = time.perf_counter()
        memory = memory_study(args.memory_homes, args.memory_days, args.validators)
        elapsed = time.perf_counter() - start
        (day1, rss1), (dayn, rssn) = memory[0], memory[-1]
        growth = (rssn - rss1) / (dayn - day1) if dayn > day1 else 0.0
        print(
            f"memory, {args.memory_homes} homes x {args.memory_days:g} days ({elapsed:.0f} s, own process):"
            f" RSS {rss1:.0f} MB after day {day1:g}, {rssn:.0f} MB after day {dayn:g}"
            f" ({growth:+.2f} MB per simulated day; over a year {growth * 365:+.0f} MB)"
        )
        print("  RSS per day: " + " ".join(f"{rss:.0f}" for _, rss in memory))
        third = memory[len(memory) * 2 // 3]
        late = (rssn - third[1]) / (dayn - third[0]) if dayn > third[0] else 0.0
        goal_row(
            f"RSS of a {args.memory_homes}-home study over {args.memory_days:g} days",
            f"{rss1:.0f} MB after day {day1:g}, {third[1]:.0f} after day {third[0]:g}, {rssn:.0f} after "
            f"day {dayn:g} (last third {late:+.2f} MB/day)",
            "flat: the last third adds < 1 % to the RSS",
            rssn - third[1] < 0.01 * third[1],
        )


if __name__ == "__main__":
    main()
