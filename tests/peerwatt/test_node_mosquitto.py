"""Sequencer + 4 validators as separate processes over a real Mosquitto (integration)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from chain.kvapp import KeyValueApp
from chain.store import LEDGER_TABLES
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from tests.support.localnet import make_community
from tests.support.procnet import launch_community, wait_for

pytestmark = pytest.mark.integration
NOW = int(time.time())
T0 = NOW - NOW % 900 - 900  # the nodes run on the wall clock


def tx_count(node) -> int:
    conn = sqlite3.connect(f"file:{node.dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM txs").fetchone()[0]
    finally:
        conn.close()


def ledger_rows(node) -> list:
    conn = sqlite3.connect(f"file:{node.dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return [
            conn.execute(f"SELECT * FROM {t} WHERE 1 ORDER BY 1, 2").fetchall()
            for t in LEDGER_TABLES
            if t != "seals"
        ]
    finally:
        conn.close()


def publish_readings(c, broker_url: str, per_meter: int, first: int = 0) -> list:
    bus = MqttBus(BrokerConfig.from_url(broker_url), f"publisher-{first}")
    bus.start()
    assert bus.wait_connected(10)
    acked = []
    sent = []
    for k in range(per_meter):
        for meter in c.meters:
            env = meter.sign(
                c.community,
                "reading",
                {"interval": T0, "import_wh": first + k, "export_wh": 0, "serial": "S", "profile": "p"},
                created=int(time.time()),
            )
            bus.publish(
                Topics.readings(c.community, meter.id), env.to_bytes(), on_ack=lambda: acked.append(1)
            )
            sent.append(env)
    wait_for(lambda: len(acked) == len(sent), 30, "broker acknowledgements")
    bus.stop()
    return sent


def verify(node) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "verify", "--data", str(node.dir / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def net(tmp_path, mosquitto):
    c = make_community(validators=5, members=4, meters_per_member=2, time=T0)
    nodes = launch_community(c, tmp_path, mosquitto.url, KeyValueApp)
    wait_for(lambda: all(n.status() for n in nodes), 30, "node APIs")
    yield c, nodes, mosquitto
    for node in nodes:
        node.kill()


def test_thousand_transactions_final_on_all_nodes(net):
    c, nodes, broker = net
    sent = publish_readings(c, broker.url, per_meter=125)
    assert len(sent) == 1000
    wait_for(lambda: all(tx_count(n) == 1000 for n in nodes), 90, "1000 txs on every node")
    rows = [ledger_rows(n) for n in nodes]
    assert all(r == rows[0] for r in rows)
    for node in nodes:
        result = verify(node)
        assert result.returncode == 0, result.stdout + result.stderr
    # no validator's private key in any node's log or database files
    secrets = [v.key.private_numbers().private_value.to_bytes(32, "big") for v in c.validators]
    needles = secrets + [s.hex().encode() for s in secrets]
    for node in nodes:
        files = [node.log_path] + [p for p in (node.dir / "data").iterdir() if p.is_file()]
        for path in files:
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"a private key leaked into {path}"


def test_validators_down_and_back(net):
    c, nodes, broker = net  # 5 validators: quorum 4
    nodes[4].kill()
    publish_readings(c, broker.url, per_meter=5)
    wait_for(lambda: all(tx_count(n) == 40 for n in nodes[:4]), 60, "chain goes on with one validator down")
    nodes[3].kill()
    publish_readings(c, broker.url, per_meter=5, first=100)
    height = nodes[0].status()["height"]
    time.sleep(2)
    assert nodes[0].status()["height"] == height  # safe halt: no quorum
    assert tx_count(nodes[0]) == 40
    nodes[3].start()
    wait_for(lambda: tx_count(nodes[0]) == 80, 60, "resume when a validator comes back")
    nodes[4].start()  # was down through all of it: catches up over HTTP and verifies
    wait_for(lambda: tx_count(nodes[4]) == 80, 60, "catch-up")
    assert verify(nodes[4]).returncode == 0


def test_sequencer_killed_mid_stream_loses_nothing(net):
    c, nodes, broker = net
    import threading

    sent: list = []
    worker = threading.Thread(target=lambda: sent.extend(publish_readings(c, broker.url, per_meter=60)))
    worker.start()
    wait_for(lambda: tx_count(nodes[0]) > 0, 30, "first blocks")
    nodes[0].kill()
    worker.join(60)
    nodes[0].start()
    wait_for(lambda: all(tx_count(n) == len(sent) for n in nodes), 90, "every acknowledged tx stored")
    conn = sqlite3.connect(f"file:{nodes[1].dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    hashes = [bytes(h) for (h,) in conn.execute("SELECT hash FROM txs")]
    conn.close()
    assert len(hashes) == len(set(hashes)) == len(sent) == 480
    assert verify(nodes[0]).returncode == 0
