"""Fair timing for the benchmarks: every candidate and its baseline measured in the same run,
interleaved round by round (so a burst of load hits all of them alike), best of N rounds.

A single sequential measurement swings with whatever else the machine does (the crypto ratio
moved from 0.60 to 1.44 between two runs that way); the best of interleaved rounds does not.
An earlier version of peerwatt as the baseline runs from a git worktree of its commit
(``add_worktree``), in the same run.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout the benchmarks run from

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


def interleaved_best_s(
    candidates: dict[str, Callable[[], object]], rounds: int = 5, results: dict | None = None
) -> dict[str, float]:
    """Best wall-clock seconds of one call of each candidate over ``rounds`` interleaved rounds.

    What a call returns is dropped after the clock stopped, so freeing a big result (e.g. the
    50,000 trades of a cleared book: ~9 ms) is not timed as part of the next call; ``results``,
    if given, keeps each candidate's last return value."""
    names = list(candidates)
    best = dict.fromkeys(names, float("inf"))
    kept: dict = {} if results is None else results
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            kept.pop(name, None)  # the previous round's result, freed before the clock starts
            start = time.perf_counter()
            result = candidates[name]()
            best[name] = min(best[name], time.perf_counter() - start)
            kept[name] = result
            del result
    return best


def goal_row(measure: str, result: str, goal: str, met: bool | None) -> None:
    """Print one goal's row for `make bench`'s summary (benchmarks/run_all.py collects the lines
    that start with GOAL_MARK): what was measured, the result with its same-run baseline, the
    goal, and whether it is met (None: context, no goal)."""
    verdict = "-" if met is None else ("yes" if met else "**no**")
    cells = [c.replace("|", "/") for c in (measure, result, goal, verdict)]
    print(f"{GOAL_MARK} {' | '.join(cells)} |")


def git(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``git -C ROOT args``, output captured (OSError if git is missing)."""
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=timeout)


def add_worktree(commit: str, path: Path) -> str:
    """Check ``commit`` out into ``path`` (a detached git worktree: the baseline of a same-run
    comparison with an earlier version); '' or why it could not. Remove it with
    ``git("worktree", "remove", "--force", str(path))``."""
    if shutil.which("git") is None:
        return "git is not installed"
    done = git("worktree", "add", "--detach", str(path), commit)
    if done.returncode != 0:
        return f"git worktree add {commit} failed: {done.stderr.strip()[:300]}"
    return ""
