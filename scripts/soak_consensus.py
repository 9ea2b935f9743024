"""Soak the consensus simulation (tests/chain/dst.py) over many seeds.

    .venv/bin/python scripts/soak_consensus.py --seeds 20000 --from 0 --validators 4

Runs seeds S..S+N-1 for each fault mix (or the one given), prints every failing seed as a one-line
reproduction and a summary (seeds per second), and exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chain.dst import FAULT_MIXES, RELAYS, Config, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds per fault mix")
    parser.add_argument("--from", dest="start", type=int, default=0, help="the first seed")
    parser.add_argument("--validators", type=int, action="append", help="n (repeatable; default 4 and 7)")
    parser.add_argument(
        "--faults", choices=FAULT_MIXES, action="append", help="fault mix (repeatable; default all)"
    )
    parser.add_argument("--heights", type=int, default=5)
    parser.add_argument(
        "--relay", choices=RELAYS, default="all", help="what gossip re-sends (see dst.RELAYS)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every seed")
    args = parser.parse_args(argv)
    sizes = args.validators or [4, 7]
    mixes = args.faults or list(FAULT_MIXES)
    failures = 0
    total = 0
    worst = (0.0, "")  # the largest share of its liveness bound a height took after GST
    top_round = (0, "")
    began, cpu = time.perf_counter(), time.process_time()
    for n in sizes:
        for faults in mixes:
            for seed in range(args.start, args.start + args.seeds):
                outcome = run(Config(seed, n, faults, args.heights, relay=args.relay))
                total += 1
                if not outcome.ok:
                    failures += 1
                    print(outcome.line(), flush=True)
                elif args.verbose:
                    print(outcome.line(), flush=True)
                used = max(outcome.bound_used.values(), default=0.0)
                if used > worst[0]:
                    worst = (used, outcome.config.line())
                if outcome.max_round > top_round[0]:
                    top_round = (outcome.max_round, outcome.config.line())
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(
        f"{total} runs (seeds {args.start}..{args.start + args.seeds - 1} x n={sizes} x faults={mixes}), "
        f"{failures} failed, {took:.1f}s wall ({total / took:.0f} runs/s), {cpu:.1f}s CPU "
        f"({total / max(cpu, 1e-9):.0f} runs/s)\n"
        f"slowest height after GST: {worst[0]:.0%} of its liveness bound ({worst[1]}); "
        f"highest round: {top_round[0]} ({top_round[1]})",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
