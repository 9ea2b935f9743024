"""Sequencer failover (issue 19): the time from the proposer's death to the next final block,
and what the consensus costs when nothing fails, against the single fixed sequencer it replaced.

Four validators as `peerwatt node run` processes on a real Mosquitto (loopback), kv app.

- Failover: readings stream in at --rate tx/s; once blocks are final the validator that
  proposes is SIGKILLed; timed until a block made by another validator is final on a live node
  (tests/support/procnet.kill_proposer). Best and median of --runs runs (this code only: the
  single sequencer has no failover).
- No failure: --txs signed readings published at once (benchmarks/bench_network.py's
  measurement); throughput into final blocks and publish-to-final latency p50/p95 on node 0,
  the nodes at their default failover_s (--nofail-failover-s), and the rounds above 0 they
  counted (every validator takes the burst before the proposal behind it, on one connection: a
  burst longer than failover_s makes the round fail with nothing dead). The single-sequencer
  baseline is commit 237b383 (the last before consensus), checked out with `git worktree` and
  run by the same interpreter in this same invocation; the two take turns round by round
  (benchmarks/fair.py), best and median of --runs rounds. If the baseline cannot be checked
  out, the table says so and shows no baseline row.

Run: .venv/bin/python benchmarks/bench_failover.py [--runs 3] [--txs 2000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from chain.consensus import Timeouts
from chain.kvapp import KeyValueApp
from peerwatt.bus import BrokerConfig, MqttBus, Topics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_network import percentile, publish_and_measure, start_broker, stop_broker  # noqa: E402
from fair import add_worktree, git, goal_row, interleaved_best_s  # noqa: E402

from tests.support.localnet import make_community  # noqa: E402
from tests.support.procnet import kill_proposer, launch_community, wait_for  # noqa: E402

BASELINE_COMMIT = "237b383"


def community():
    now = int(time.time())
    return make_community(validators=4, members=10, meters_per_member=5, time=now - now % 900 - 900)


def no_failure_run(code: Path | None, args) -> tuple[int, float, list[float], int | None]:
    """One no-failure measurement of the nodes of ``code`` (None: this checkout), with the
    failovers the nodes counted meanwhile (None where the code has no such count)."""
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    port, broker = start_broker(work)
    c = community()
    nodes = launch_community(
        c,
        work,
        f"mqtt://127.0.0.1:{port}",
        KeyValueApp,
        block_s=args.block_s,
        failover_s=None if code is not None else args.nofail_failover_s,
        code=code,
    )
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        final, elapsed, latencies = publish_and_measure(c, nodes, port, args.txs)
        counts = [(n.status() or {}).get("failovers") for n in nodes]
        failovers = None if None in counts else max(counts)
        return final, elapsed, latencies, failovers
    finally:
        for node in nodes:
            node.kill()
        stop_broker(broker)
        shutil.rmtree(work, ignore_errors=True)


def failover_run(args) -> float:
    """One failover: seconds from the proposer's SIGKILL to the next final block."""
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    port, broker = start_broker(work)
    c = community()
    nodes = launch_community(
        c, work, f"mqtt://127.0.0.1:{port}", KeyValueApp, block_s=args.block_s, failover_s=args.failover_s
    )
    stop = threading.Event()
    bus = MqttBus(BrokerConfig(port=port), "bench-failover-publisher")
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        envs = c.signed_readings(int(args.rate * 120), c.genesis.time, int(time.time()))
        bus.start()
        assert bus.wait_connected(10)

        def stream() -> None:
            for env in envs:
                if stop.wait(1 / args.rate):
                    return
                bus.publish(Topics.readings(c.community, env.signer), env.to_bytes())

        publisher = threading.Thread(target=stream, daemon=True)
        publisher.start()
        wait_for(lambda: all((n.status() or {}).get("height", 0) >= 2 for n in nodes), 60, "first blocks")
        return kill_proposer(nodes, [v.id for v in c.validators]).kill_to_final_s
    finally:
        stop.set()
        bus.stop()
        for node in nodes:
            node.kill()
        stop_broker(broker)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="failovers, and no-failure rounds per candidate")
    parser.add_argument("--txs", type=int, default=2000, help="readings per no-failure run")
    parser.add_argument("--rate", type=float, default=50.0, help="readings/s during a failover run")
    parser.add_argument("--block-s", type=float, default=0.5)
    parser.add_argument("--failover-s", type=float, default=1.5, help="failover_s of the failover runs")
    parser.add_argument(
        "--nofail-failover-s",
        type=float,
        default=None,
        help="failover_s of the no-failure runs (default: the node's default, 10 s)",
    )
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the single-sequencer commit")
    args = parser.parse_args()
    began = time.monotonic()

    checkout = Path(tempfile.mkdtemp(prefix="bench-failover-baseline-")) / "peerwatt"
    why_not = add_worktree(args.baseline, checkout)
    old = None if why_not else checkout
    try:
        measure_and_print(args, old, why_not)
    finally:
        if old is not None:
            git("worktree", "remove", "--force", str(old))
        shutil.rmtree(checkout.parent, ignore_errors=True)
    print(f"benchmark time {time.monotonic() - began:.0f} s")


def measure_and_print(args, old: Path | None, why_not: str) -> None:
    current = "Tendermint (this checkout)"
    baseline = f"single sequencer ({args.baseline})"
    results: dict[str, list[tuple[int, float, list[float], int | None]]] = {current: []}
    candidates = {current: lambda: results[current].append(no_failure_run(None, args))}
    if old is not None:
        results[baseline] = []
        candidates[baseline] = lambda: results[baseline].append(no_failure_run(old, args))
    interleaved_best_s(candidates, rounds=args.runs)
    failovers = [failover_run(args) for _ in range(args.runs)]

    width = 32
    print(
        f"4 validators, processes, Mosquitto on loopback; "
        f"block_s {args.block_s}, failover_s {args.failover_s}"
    )
    print(
        f"{'':<{width}} {'kill-to-final (s)':>19} {'tx/s':>13} {'p50 (s)':>13} {'p95 (s)':>13} "
        f"{'rounds > 0':>11}"
    )
    print(
        f"{'':<{width}} {'best / median':>19} {'best / med':>13} {'best / med':>13} {'best / med':>13} "
        f"{'(no failure)':>11}"
    )
    print("-" * (width + 86))
    for name, runs in results.items():
        rates = [final / elapsed for final, elapsed, _, _ in runs]
        p50s = [statistics.median(lat) for _, _, lat, _ in runs]
        p95s = [percentile(lat, 0.95) for _, _, lat, _ in runs]
        lost = sum(args.txs - final for final, _, _, _ in runs)
        counts = [f for _, _, _, f in runs]
        rounds = "—" if None in counts else f"{sum(counts)} in {len(runs)}"
        if name == current:
            kill = f"{min(failovers):.2f} / {statistics.median(failovers):.2f}"
        else:
            kill = "none: halts"
        print(
            f"{name:<{width}} {kill:>19} "
            f"{max(rates):>6,.0f} /{statistics.median(rates):>5,.0f} "
            f"{min(p50s):>6.2f} /{statistics.median(p50s):>5.2f} "
            f"{min(p95s):>6.2f} /{statistics.median(p95s):>5.2f} {rounds:>11}"
            + (f"  ({lost} txs not final)" if lost else "")
        )
    print("-" * (width + 86))
    expected = args.block_s + args.failover_s + Timeouts().precommit_s
    goal_row(
        f"proposer SIGKILLed, 4 validator processes: kill to next final block ({args.runs} kills)",
        f"{min(failovers):.2f} s best / {statistics.median(failovers):.2f} s median "
        f"(block_s + failover_s + precommit timeout = {expected:.1f} s); single sequencer: halts",
        "trading resumes within failover_s + vote timeouts + one block",
        statistics.median(failovers) <= expected + args.block_s + 1.0,
    )
    if old is not None:
        ours = max(final / elapsed for final, elapsed, _, _ in results[current])
        theirs = max(final / elapsed for final, elapsed, _, _ in results[baseline])
        goal_row(
            f"no failure, {args.txs} readings at once: Tendermint vs single sequencer ({args.baseline})",
            f"{ours:,.0f} vs {theirs:,.0f} tx/s ({ours / theirs:.2f}×)",
            "— (cost of consensus)",
            None,
        )
    print(
        f"kill-to-final: {args.runs} SIGKILLs of the proposer with readings arriving at {args.rate:.0f}/s; "
        f"expected about block_s + failover_s + the precommit timeout "
        f"({args.block_s + args.failover_s + Timeouts().precommit_s:.1f} s)"
    )
    nofail = "the node default" if args.nofail_failover_s is None else f"{args.nofail_failover_s} s"
    print(
        f"tx/s, p50, p95: {args.txs} readings published at once, {args.runs} rounds per row, "
        f"failover_s {nofail}; rounds > 0: the failovers the nodes counted in those runs"
    )
    if old is not None:
        print(
            f"baseline: commit {args.baseline} (before consensus) run in this same invocation, "
            "the rows taking turns round by round (benchmarks/fair.py); it has no failover "
            "(the chain halts until its sequencer returns)"
        )
    else:
        print(
            f"no same-run baseline exists: the single-sequencer commit {args.baseline} "
            f"could not run ({why_not})"
        )


if __name__ == "__main__":
    main()
