"""bench_network's two rows for two versions of the node, in one run, taking turns round by
round (benchmarks/fair.py's rule: a burst of load from elsewhere hits both alike).

The baseline is a commit checked out with `git worktree`; the candidate is the same commit with
this working tree's version of --paths copied over it (default: the node's runtime, mempool and
MQTT bus), so only those files differ between the two, whatever else the shared working tree
holds. Both run with this interpreter; the publisher and the store watcher are this checkout's.

Run: .venv/bin/python benchmarks/compare_network.py --baseline <commit> [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_network import (  # noqa: E402
    VALIDATORS,
    Row,
    gate_closure,
    load_average,
    raw_verify_rate,
    saturation,
)
from fair import add_worktree, git  # noqa: E402

NODE_PATHS = ("peerwatt/node/runtime.py", "peerwatt/node/mempool.py", "peerwatt/bus/mqtt.py")


def checkout(commit: str, path: Path, overlay: tuple[str, ...] = ()) -> None:
    """``commit`` in a detached worktree at ``path``, with this working tree's ``overlay`` files."""
    why_not = add_worktree(commit, path)
    if why_not:
        raise SystemExit(why_not)
    for rel in overlay:
        shutil.copyfile(ROOT / rel, path / rel)


def summary(rows: list[Row]) -> str:
    rates = [r.rate for r in rows]
    p95s = [r.p95 for r in rows]
    p50s = [r.p50 for r in rows]
    final = min(r.final for r in rows)
    return (
        f"{max(rates):7,.0f} best {statistics.median(rates):7,.0f} median tx/s | "
        f"p50 {min(p50s):5.2f} / {statistics.median(p50s):5.2f} s | "
        f"p95 {min(p95s):5.2f} / {statistics.median(p95s):5.2f} s | "
        f"final >= {final:,} of {rows[0].sent:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument(
        "--paths", nargs="*", default=list(NODE_PATHS), help="files the candidate takes from here"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--txs", type=int, default=5000)
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--block-s", type=float, default=0.5)
    parser.add_argument("--skip", choices=("saturation", "gate-closure"), action="append", default=[])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="compare-net-"))
    trees = {"baseline": work / "baseline", "candidate": work / "candidate"}
    checkout(args.baseline, trees["baseline"])
    checkout(args.baseline, trees["candidate"], tuple(args.paths))
    load_before = load_average()
    verify_rate = raw_verify_rate()
    rows: dict[tuple[str, str], list[Row]] = {}
    try:
        names = list(trees)
        for round_index in range(args.rounds):
            order = names[round_index % 2 :] + names[: round_index % 2]
            for name in order:
                if "saturation" not in args.skip:
                    row = saturation(args.txs, args.block_s, trees[name])
                    rows.setdefault(("saturation", name), []).append(row)
                    print(
                        f"round {round_index} {name:9} saturation {row.rate:7,.0f} tx/s p95 {row.p95:.2f} s",
                        flush=True,
                    )
                if "gate-closure" not in args.skip:
                    row = gate_closure(args.homes, args.window_s, args.block_s, trees[name])
                    rows.setdefault(("gate", name), []).append(row)
                    print(
                        f"round {round_index} {name:9} gate closure p50 {row.p50:.2f} s p95 {row.p95:.2f} s "
                        f"({row.final:,} final)",
                        flush=True,
                    )
        verify_rate = max(verify_rate, raw_verify_rate())
    finally:
        for tree in trees.values():
            git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(work, ignore_errors=True)
    ceiling = verify_rate * (os.cpu_count() or 1) / VALIDATORS
    print(
        f"\nbaseline {args.baseline} vs the same with this tree's {', '.join(args.paths)}; "
        f"{args.rounds} interleaved rounds"
    )
    print(f"raw verify {verify_rate:,.0f}/s, ceiling {ceiling:,.0f} tx/s")
    for (kind, name), kept in rows.items():
        share = (
            f" = {max(r.rate for r in kept) / ceiling:.0%} of the ceiling (best)"
            if kind == "saturation"
            else ""
        )
        print(f"{kind:10} {name:9} {summary(kept)}{share}")
    print(f"load average before / after: {load_before} | {load_average()}")


if __name__ == "__main__":
    main()
