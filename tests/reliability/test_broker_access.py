"""`peerwatt broker certs` and `peerwatt broker config` run as commands; a real Mosquitto started
with the generated config proves that a meter cannot publish as another meter, cannot read
another meter's receipts, and that nobody connects without TLS to the TLS listener."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chain.localnet import make_community
from peerwatt.bus import BrokerConfig, MqttBus, topics
from peerwatt.procnet import free_port, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
WAIT_S = 20


def peerwatt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args], capture_output=True, text=True, timeout=60
    )


def genesis_toml(c) -> str:
    doc = c.genesis.doc
    lines = [
        "[community]",
        f'id = "{doc["community"]["id"]}"',
        f"time = {doc['community']['time']}",
        f'app = "{doc["community"]["app"]}"',
    ]
    for v in doc["validators"].values():
        lines += ["[[validators]]", f'key = "{v["key"]}"']
    for m in doc["members"].values():
        lines += ["[[members]]", f'key = "{m["key"]}"']
    for m in doc["meters"].values():
        lines += ["[[meters]]", f'key = "{m["key"]}"', f'serial = "{m["serial"]}"']
        lines += [f'owner = "{m["owner"]}"', f"capacity_w = {m['capacity_w']}"]
    return "\n".join(lines) + "\n"


def plain_connect_answer(port: int, user: str, password: str) -> bytes:
    """Send an MQTT 3.1.1 CONNECT in clear text; return the first bytes answered (b"": closed)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    payload = text("plain-client") + text(user) + text(password)
    variable = text("MQTT") + bytes([4, 0b11000010]) + (30).to_bytes(2, "big")
    body = variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            return sock.recv(4)
        except ConnectionResetError:
            return b""


class Inbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]


def test_generated_config_enforces_per_meter_acl_and_tls(tmp_path: Path, mosquitto_factory) -> None:
    from tests.conftest import require_tool

    require_tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    c = make_community(validators=1, members=2, meters_per_member=1)
    community = c.community
    m1, m2 = (meter.id for meter in c.meters)
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(genesis_toml(c))
    out, certs = tmp_path / "broker", tmp_path / "broker" / "certs"

    made = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1", "--community", community)
    assert made.returncode == 0, made.stderr
    again = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1")
    assert again.returncode != 0 and "--force" in again.stderr and "Traceback" not in again.stderr
    for key in ("community-ca.key", "broker.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600

    port, local_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    data = str(tmp_path / "data")
    result = peerwatt(
        "broker", "config", "--genesis", str(genesis), "--out", str(out), "--persistence", data,
        "--port", str(port), "--bind", "127.0.0.1", "--local-port", str(local_port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    passwords = {p.stem: p.read_text().strip() for p in (out / "credentials").iterdir()}
    assert set(passwords) == {f"node-{community}", m1, m2}
    assert all(
        stat.S_IMODE((out / "credentials" / f"{u}.password").stat().st_mode) == 0o600 for u in passwords
    )
    hashed = (out / "peerwatt.passwd").read_text()
    assert all(pw not in hashed for pw in passwords.values())  # only hashes on the broker

    broker = mosquitto_factory(port=port, config_text=(out / "mosquitto.conf").read_text())
    broker.start()
    clients: list[MqttBus] = []

    def client(user: str, *, tls: bool = True, password: str | None = None) -> MqttBus:
        config = BrokerConfig(
            port=port,
            username=user,
            password=password or passwords[user],
            tls=tls,
            ca_file=str(certs / "community-ca.crt") if tls else None,
        )
        bus = MqttBus(config, f"test-{user}-{len(clients)}")
        clients.append(bus)
        return bus

    try:
        node_inbox, meter_inbox = Inbox(), Inbox()
        node = client(f"node-{community}")
        node.subscribe(topics.pattern(community), node_inbox)
        meter = client(m1)
        meter.subscribe(topics.receipts(community, m1), meter_inbox)
        meter.subscribe(topics.receipts(community, m2), meter_inbox)  # not allowed: gets nothing
        for bus in (node, meter):
            bus.start()
        assert node.wait_connected(WAIT_S) and meter.wait_connected(WAIT_S), (
            node.last_error,
            meter.last_error,
        )

        forged_order, forged_reading, own = threading.Event(), threading.Event(), threading.Event()
        meter.publish(topics.orders(community, m2), b"forged order", on_ack=forged_order.set)
        meter.publish(topics.readings(community, m2), b"forged reading", on_ack=forged_reading.set)
        meter.publish(topics.gov(community), b"forged vote")
        meter.publish(topics.orders(community, m1), b"own order", on_ack=own.set)
        assert own.wait(WAIT_S)
        wait_for(lambda: node_inbox.on(topics.orders(community, m1)) == [b"own order"], WAIT_S, "own order")
        node.publish(topics.receipts(community, m2), b"receipt of m2")
        node.publish(topics.receipts(community, m1), b"receipt of m1")
        wait_for(lambda: meter_inbox.on(topics.receipts(community, m1)), WAIT_S, "own receipt")
        assert meter_inbox.on(topics.receipts(community, m2)) == []
        assert node_inbox.on(topics.orders(community, m2)) == []
        assert node_inbox.on(topics.readings(community, m2)) == []
        assert node_inbox.on(topics.gov(community)) == []
        assert not forged_order.is_set() and not forged_reading.is_set()

        # right password, but in clear text to the TLS listener: no CONNACK, the socket is closed
        assert plain_connect_answer(port, m1, passwords[m1]) == b""
        assert plain_connect_answer(local_port, m1, "not-the-password")[:1] == b"\x20"  # CONNACK...
        wrong = client(m2, password="not-the-password")  # ...refusing; and over TLS too
        wrong.start()
        wait_for(lambda: wrong.last_error, WAIT_S, "refusal")
        assert "Not authorized" in wrong.last_error and not wrong.connected
    finally:
        for bus in clients:
            bus.stop(flush_timeout_s=0)
