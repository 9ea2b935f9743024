"""Signed transactions per second into final blocks: 1 sequencer + 3 validators as separate
`peerwatt node run` processes on a real Mosquitto (loopback), with publish-to-final latency.

Transactions are signed before the clock starts (signing is the agents' cost, not the
network's). Baseline in the same run: raw signature verifications per second on one core, and
the resulting ceiling for this set-up (2 cores shared by 4 nodes that each verify every
transaction). Goal for later tuning: >= 4,000 tx/s and p95 publish-to-final < 2 s.

Run: .venv/bin/python benchmarks/bench_network.py [--txs 5000]
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
import time
from pathlib import Path

from chain.kvapp import KeyValueApp
from chain.signature import sign, verify
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from peerwatt.ports import free_port

# The test harness (tests/support) lives with the tests; make the repository importable when
# run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.localnet import make_community  # noqa: E402
from tests.support.procnet import launch_community, wait_for  # noqa: E402


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


def publish_and_measure(c, nodes, port: int, count: int) -> tuple[int, float, list[float]]:
    """Publish ``count`` signed readings (signed before the clock starts) and watch node 0's
    store: (transactions final, seconds from the first publish to the last final, sorted
    publish-to-final latencies)."""
    wait_for(lambda: all(n.status() for n in nodes), 60, "node APIs")
    envs = c.signed_readings(count, c.genesis.time, int(time.time()))
    bus = MqttBus(BrokerConfig(port=port), "bench-publisher")
    bus.start()
    assert bus.wait_connected(10)
    sent_at: dict[bytes, float] = {}
    start = time.perf_counter()
    for env in envs:
        sent_at[env.tx_hash] = time.perf_counter()
        bus.publish(Topics.readings(c.community, env.signer), env.to_bytes())
    final_at: dict[bytes, float] = {}
    db = nodes[0].dir / "data" / "ledger.sqlite"
    seen_height = 0
    deadline = time.monotonic() + 600
    while len(final_at) < len(envs) and time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = conn.execute("SELECT height, hash FROM txs WHERE height > ?", (seen_height,)).fetchall()
        conn.close()
        t = time.perf_counter()
        for height, tx_hash in rows:
            final_at.setdefault(bytes(tx_hash), t)
            seen_height = max(seen_height, height)
        time.sleep(0.05)
    elapsed = max(final_at.values()) - start
    latencies = sorted(final_at[h] - sent_at[h] for h in final_at if h in sent_at)
    bus.stop()
    return len(final_at), elapsed, latencies


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[int(fraction * (len(sorted_values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=5000)
    parser.add_argument("--block-s", type=float, default=0.5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-net-"))
    port, broker = start_broker(work)
    now = int(time.time())
    c = make_community(validators=4, members=10, meters_per_member=5, time=now - now % 900 - 900)
    nodes = launch_community(c, work, f"mqtt://127.0.0.1:{port}", KeyValueApp, block_s=args.block_s)
    try:
        final, elapsed, latencies = publish_and_measure(c, nodes, port, args.txs)
    finally:
        for node in nodes:
            node.kill()
        stop_broker(broker)
    key = c.meters[0].key
    data, n = b"x" * 300, 3000
    sig = sign(key, data)
    t0 = time.perf_counter()
    for _ in range(n):
        verify(key.public_key(), data, sig)
    verify_rate = n / (time.perf_counter() - t0)
    ceiling = verify_rate * (os.cpu_count() or 1) / len(nodes)
    print(f"{'measurement':<52} {'value':>12}")
    print("-" * 66)
    print(f"{'transactions final on the sequencer':<52} {final:>12,}")
    print(f"{'throughput into final blocks (tx/s)':<52} {final / elapsed:>12,.0f}")
    print(f"{'publish-to-final latency p50 (s)':<52} {statistics.median(latencies):>12.2f}")
    print(f"{'publish-to-final latency p95 (s)':<52} {percentile(latencies, 0.95):>12.2f}")
    print(f"{'baseline: raw P-256 verify/s on one core':<52} {verify_rate:>12,.0f}")
    print(f"{'ceiling: cores x verify/s / nodes (tx/s)':<52} {ceiling:>12,.0f}")
    print("-" * 66)
    print("goal: >= 4,000 tx/s and p95 < 2 s")


if __name__ == "__main__":
    main()
