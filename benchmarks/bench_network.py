"""The network's two goals of issue 21, measured on 4 validators as separate `peerwatt node run`
processes on a real Mosquitto (loopback), with the ceiling measured in the same run.

- Saturation (kv app): --txs signed readings published at once; transactions per second into
  final blocks against the ceiling (cores x raw P-256 verifies/s on one core / nodes: every
  node verifies every transaction once). Goal: at least 60 % of the ceiling.
- Gate closure (market app): a community of --homes enrolled meters (one per home); every home
  sends one valid reading (for the interval that just ended) and one valid order (for an
  interval still open), the 2 x homes messages paced evenly over --window-s seconds. Goal:
  publish-to-final p95 under 2 s for every message.

Messages are signed before the clock starts (signing is the agents' cost, not the network's).
Publish-to-final: from the publish call to the moment node 0's store holds the transaction in a
final block (its store is polled every POLL_S). Every wait is bounded.

Run: .venv/bin/python benchmarks/bench_network.py [--txs 5000] [--homes 1000] [--skip saturation]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chain.envelope import Envelope
from chain.kvapp import KeyValueApp
from chain.signature import sign, verify
from market.app import MarketApp
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from peerwatt.ports import free_port

# The test harness (tests/support) lives with the tests; make the repository importable when
# run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.localnet import LocalCommunity, make_community  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import goal_row  # noqa: E402

from tests.support.procnet import NodeProcess, launch_community, wait_for  # noqa: E402

POLL_S = 0.02
VALIDATORS = 4
CEILING_GOAL = 0.60
P95_GOAL_S = 2.0
# the market of a real community: 15-minute intervals, gate 5 minutes before each
MARKET_PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}


def start_broker(work: Path) -> tuple[int, subprocess.Popen]:
    """A Mosquitto for a benchmark on a free loopback port (no persistence: speed, not crashes)."""
    port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
        "max_inflight_messages 1000\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen(
        [mosquitto, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return port, broker


def stop_broker(broker: subprocess.Popen) -> None:
    broker.send_signal(signal.SIGTERM)
    broker.wait(10)


class FinalWatcher:
    """Polls node 0's store (``db``) every ``poll_s`` in a thread, from before the first publish,
    noting the perf_counter time at which each transaction first appears in a final block."""

    def __init__(self, db: Path, poll_s: float = POLL_S) -> None:
        self.db = db
        self.poll_s = poll_s
        self.final_at: dict[bytes, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="final-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen_height = 0
        while not self._stop.is_set():
            try:
                conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
                try:
                    rows = conn.execute(
                        "SELECT height, hash FROM txs WHERE height > ?", (seen_height,)
                    ).fetchall()
                finally:
                    conn.close()
            except sqlite3.OperationalError:  # busy for a moment: poll again
                rows = []
            t = time.perf_counter()
            for height, tx_hash in rows:
                self.final_at.setdefault(bytes(tx_hash), t)
                seen_height = max(seen_height, height)
            self._stop.wait(self.poll_s)

    def wait_all(self, hashes: set[bytes], timeout_s: float) -> dict[bytes, float]:
        """Wait (bounded) until every one of ``hashes`` is final; stop; those that are, by hash."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not hashes <= self.final_at.keys():
            time.sleep(self.poll_s)
        self._stop.set()
        self._thread.join(10)
        return {h: t for h, t in self.final_at.items() if h in hashes}


def publish_and_measure(
    c: LocalCommunity, nodes: list[NodeProcess], port: int, count: int
) -> tuple[int, float, list[float]]:
    """Publish ``count`` signed kv readings at once (signed before the clock starts) and watch
    node 0's store: (transactions final, seconds from the first publish to the last final,
    sorted publish-to-final latencies)."""
    wait_for(lambda: all(n.status() for n in nodes), 60, "node APIs")
    envs = c.signed_readings(count, c.genesis.time, int(time.time()))
    sent_at, final_at = paced_publish(c, nodes, port, [(Topics.readings, e) for e in envs], 0.0, 600)
    start = min(sent_at.values())
    elapsed = max(final_at.values()) - start if final_at else float("inf")
    latencies = sorted(final_at[h] - sent_at[h] for h in final_at)
    return len(final_at), elapsed, latencies


def paced_publish(
    c: LocalCommunity,
    nodes: list[NodeProcess],
    port: int,
    messages: list[tuple],
    window_s: float,
    timeout_s: float,
) -> tuple[dict[bytes, float], dict[bytes, float]]:
    """Publish ``messages`` ((topic builder, envelope) pairs) spread evenly over ``window_s``
    seconds (0: all at once), then watch node 0's store for them: (sent_at, final_at) by tx hash."""
    bus = MqttBus(BrokerConfig(port=port), "bench-publisher")
    bus.start()
    try:
        assert bus.wait_connected(10), bus.last_error
        payloads = [(topic(c.community, env.signer), env.to_bytes(), env.tx_hash) for topic, env in messages]
        gap = window_s / len(payloads) if payloads else 0.0
        sent_at: dict[bytes, float] = {}
        watcher = FinalWatcher(nodes[0].dir / "data" / "ledger.sqlite")
        start = time.perf_counter()
        for i, (topic, raw, tx_hash) in enumerate(payloads):
            if gap:
                delay = start + i * gap - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent_at[tx_hash] = time.perf_counter()
            bus.publish(topic, raw)
        final_at = watcher.wait_all(set(sent_at), timeout_s)
    finally:
        bus.stop()
    return sent_at, final_at


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[int(fraction * (len(sorted_values) - 1))] if sorted_values else float("inf")


@dataclass
class Row:
    sent: int
    final: int
    elapsed_s: float
    latencies: list[float]  # sorted
    rejected: dict[str, int]
    failovers: int | None = None  # rounds above 0 the nodes entered (the most any node counted)

    @property
    def rate(self) -> float:
        return self.final / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("inf")

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 0.95)


def run_community(c: LocalCommunity, app_factory, block_s: float, code: Path | None, measure) -> Row:
    """Start a broker and ``c``'s validators (from the checkout ``code``; None: this one), run
    ``measure(nodes, port)`` -> (sent_at, final_at), stop everything."""
    work = Path(tempfile.mkdtemp(prefix="bench-net-"))
    port, broker = start_broker(work)
    nodes = launch_community(c, work, f"mqtt://127.0.0.1:{port}", app_factory, block_s=block_s, code=code)
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        sent_at, final_at = measure(nodes, port)
        rejected = dict((nodes[0].status() or {}).get("rejected") or {})
        counts = [(n.status() or {}).get("failovers") for n in nodes]
        failovers = None if None in counts else max(counts)
    finally:
        for node in nodes:
            node.kill()
        stop_broker(broker)
        shutil.rmtree(work, ignore_errors=True)
    latencies = sorted(final_at[h] - sent_at[h] for h in final_at)
    elapsed = max(final_at.values()) - min(sent_at.values()) if final_at else float("inf")
    return Row(len(sent_at), len(final_at), elapsed, latencies, rejected, failovers)


def saturation(txs: int, block_s: float, code: Path | None = None) -> Row:
    """``txs`` kv readings published at once on a 4-validator kv community."""
    now = int(time.time())
    c = make_community(validators=VALIDATORS, members=10, meters_per_member=5, time=now - now % 900 - 900)
    envs = c.signed_readings(txs, c.genesis.time, now)

    def measure(nodes, port):
        return paced_publish(c, nodes, port, [(Topics.readings, e) for e in envs], 0.0, 600)

    return run_community(c, KeyValueApp, block_s, code, measure)


def gate_closure_community(homes: int) -> LocalCommunity:
    now = int(time.time())
    return make_community(
        validators=VALIDATORS,
        members=homes,
        meters_per_member=1,
        app="market",
        app_params=MARKET_PARAMS,
        time=now - now % 900 - 900,
        capacity_w=11_000,
    )


def gate_closure_messages(c: LocalCommunity, now: int) -> list[tuple]:
    """Per home, in home order: a reading for the interval that just ended and an order (a sell
    from even homes, a buy from odd ones) for the interval after the next, whose gate is at least
    10 minutes away: each valid when it arrives."""
    interval_s = MARKET_PARAMS["interval_s"]
    ended = now - now % interval_s - interval_s
    open_interval = now - now % interval_s + 2 * interval_s
    serials = {m: c.genesis.doc["meters"][m]["serial"] for m in c.genesis.doc["meters"]}
    messages = []
    for i, meter in enumerate(c.meters):
        sell = i % 2 == 0
        reading = meter.sign(
            c.community,
            "reading",
            {
                "interval": ended,
                "import_wh": 0 if sell else 100_000 + i,
                "export_wh": 100_000 + i if sell else 0,
                "serial": serials[meter.id],
                "profile": "sdm630",
            },
            created=now,
        )
        order = meter.sign(
            c.community,
            "order",
            {
                "side": "sell" if sell else "buy",
                "interval": open_interval,
                "energy_wh": 500 + i % 500,
                "limit_price": 100_000 + (i % 50) * 2_000,
            },
            created=now,
        )
        messages += [(Topics.readings, reading), (Topics.orders, order)]
    return messages


def gate_closure(homes: int, window_s: float, block_s: float, code: Path | None = None) -> Row:
    """Every home of a ``homes``-home market community sends a reading and an order, paced over
    ``window_s`` seconds."""
    c = gate_closure_community(homes)
    messages = gate_closure_messages(c, int(time.time()))
    envs: list[Envelope] = [e for _, e in messages]
    assert len({e.tx_hash for e in envs}) == len(envs)

    def measure(nodes, port):
        return paced_publish(c, nodes, port, messages, window_s, window_s + 120)

    return run_community(c, MarketApp, block_s, code, measure)


def raw_verify_rate(calls: int = 3000) -> float:
    """Raw P-256 verifications per second on one core (the best of three rounds)."""
    key = make_community(validators=1, members=1).validators[0].key
    data = b"x" * 300
    sig = sign(key, data)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            verify(key.public_key(), data, sig)
        best = max(best, calls / (time.perf_counter() - t0))
    return best


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=5000, help="kv readings of the saturation row")
    parser.add_argument("--homes", type=int, default=1000, help="homes of the gate-closure row")
    parser.add_argument("--window-s", type=float, default=10.0, help="seconds the homes' messages span")
    parser.add_argument("--block-s", type=float, default=0.5)
    parser.add_argument("--skip", choices=("saturation", "gate-closure"), action="append", default=[])
    parser.add_argument("--code", type=Path, default=None, help="run the nodes of another checkout")
    args = parser.parse_args()
    load_before = load_average()
    verify_before = raw_verify_rate()
    sat = None if "saturation" in args.skip else saturation(args.txs, args.block_s, args.code)
    gate = (
        None
        if "gate-closure" in args.skip
        else gate_closure(args.homes, args.window_s, args.block_s, args.code)
    )
    verify_rate = max(verify_before, raw_verify_rate())
    ceiling = verify_rate * (os.cpu_count() or 1) / VALIDATORS
    width = 62

    def line(label: str, value: str) -> None:
        print(f"{label:<{width}} {value:>14}")

    line("measurement", "value")
    print("-" * (width + 15))
    line("baseline: raw P-256 verify/s on one core (best of before/after)", f"{verify_rate:,.0f}")
    line(f"ceiling: {os.cpu_count()} cores x verify/s / {VALIDATORS} nodes (tx/s)", f"{ceiling:,.0f}")
    if sat is not None:
        line(f"saturation (kv, {sat.sent:,} txs at once): final", f"{sat.final:,}")
        line("saturation: throughput into final blocks (tx/s)", f"{sat.rate:,.0f}")
        line("saturation: share of the ceiling", f"{sat.rate / ceiling:.0%}")
        line("saturation: publish-to-final p50 / p95 (s)", f"{sat.p50:.2f} / {sat.p95:.2f}")
        line("saturation: rounds above 0 (failovers, most on one node)", f"{sat.failovers}")
    if gate is not None:
        line(
            f"gate closure (market, {args.homes:,} homes, {gate.sent:,} msgs in {args.window_s:g} s): final",
            f"{gate.final:,}",
        )
        line("gate closure: publish-to-final p50 / p95 (s)", f"{gate.p50:.2f} / {gate.p95:.2f}")
        line("gate closure: publish-to-final max (s)", f"{max(gate.latencies, default=float('inf')):.2f}")
        line("gate closure: rounds above 0 (failovers, most on one node)", f"{gate.failovers}")
        if gate.rejected:
            print(f"  refused on node 0: {gate.rejected}")
    print("-" * (width + 15))
    if sat is not None:
        met = "met" if sat.rate >= CEILING_GOAL * ceiling and sat.final == sat.sent else "NOT met"
        print(f"goal: saturation >= {CEILING_GOAL:.0%} of the ceiling: {sat.rate / ceiling:.0%}: {met}")
        goal_row(
            f"4 validator processes on Mosquitto, {sat.sent:,} kv txs at once: throughput vs the ceiling "
            f"({os.cpu_count()} cores × raw verify/s ÷ 4 nodes, same run)",
            f"{sat.rate:,.0f} of {ceiling:,.0f} tx/s = {sat.rate / ceiling:.0%}; p95 {sat.p95:.2f} s",
            f"≥ {CEILING_GOAL:.0%} of the ceiling",
            met == "met",
        )
    if gate is not None:
        met = "met" if gate.p95 < P95_GOAL_S and gate.final == gate.sent else "NOT met"
        print(
            f"goal: gate closure p95 < {P95_GOAL_S:g} s, all {gate.sent:,} messages final: "
            f"p95 {gate.p95:.2f} s, {gate.final:,} final: {met}"
        )
        goal_row(
            f"gate closure of a {args.homes:,}-home community: a reading and an order per home, "
            f"{gate.sent:,} messages paced over {args.window_s:g} s (market app)",
            f"p50 {gate.p50:.2f} s, p95 {gate.p95:.2f} s publish-to-final; "
            f"{gate.final:,} of {gate.sent:,} final",
            f"p95 < {P95_GOAL_S:g} s",
            met == "met",
        )
    print(f"load average before / after: {load_before} | {load_average()}")


if __name__ == "__main__":
    main()
