"""Fair timing for the benchmarks: every candidate and its baseline measured in the same run,
interleaved round by round (so a burst of load hits all of them alike), best of N rounds.

A single sequential measurement swings with whatever else the machine does (the crypto ratio
moved from 0.60 to 1.44 between two runs that way); the best of interleaved rounds does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

GOAL_MARK = "GOAL |"


def interleaved_rates(
    candidates: dict[str, Callable[[], object]], calls: int, rounds: int = 7, warmup: int = 50
) -> dict[str, float]:
    """Calls per second of each candidate: the best of ``rounds`` rounds of ``calls`` calls, the
    candidates taking turns within each round (their order rotates from round to round)."""
    names = list(candidates)
    for name in names:
        for _ in range(min(warmup, calls)):
            candidates[name]()
    best = dict.fromkeys(names, 0.0)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = max(best[name], calls / (time.perf_counter() - start))
    return best


def interleaved_best_s(candidates: dict[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Best wall-clock seconds of one call of each candidate over ``rounds`` interleaved rounds."""
    names = list(candidates)
    best = dict.fromkeys(names, float("inf"))
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            candidates[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def goal_row(measure: str, result: str, goal: str, met: bool | None) -> None:
    """Print one goal's row for `make bench`'s summary (benchmarks/run_all.py collects the lines
    that start with GOAL_MARK): what was measured, the result with its same-run baseline, the
    goal, and whether it is met (None: context, no goal)."""
    verdict = "-" if met is None else ("yes" if met else "**no**")
    cells = [c.replace("|", "/") for c in (measure, result, goal, verdict)]
    print(f"{GOAL_MARK} {' | '.join(cells)} |")
