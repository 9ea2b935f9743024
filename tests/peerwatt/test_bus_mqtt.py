"""MqttBus against a real Mosquitto: MQTT 5, persistent sessions, broker crashes, last will, and
the config `peerwatt broker config` generates as docs/bus.md shows it (TLS, credentials, ACL)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peerwatt.bus import BrokerConfig, MqttBus, topics
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration

WAIT_S = 10.0
ROOT = Path(__file__).resolve().parents[2]


class Inbox:
    """A thread-safe list of received (topic, payload)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.items.append((topic, payload))

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.items if topic is None or t == topic]


@pytest.fixture
def buses() -> Iterator[Callable[..., MqttBus]]:
    """Make MqttBus objects; every one is stopped at teardown."""
    made: list[MqttBus] = []

    def make(config: BrokerConfig, client_id: str, **kwargs: object) -> MqttBus:
        bus = MqttBus(config, client_id, **kwargs)  # type: ignore[arg-type]
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.stop(flush_timeout_s=0)


def connect(*all_buses: MqttBus) -> None:
    for bus in all_buses:
        bus.start()
    for bus in all_buses:
        assert bus.wait_connected(WAIT_S), bus.last_error


def subscribed(*all_buses: MqttBus) -> None:
    """Wait for the broker's SUBACKs: a message published after that reaches the subscribers."""
    for bus in all_buses:
        assert bus.wait_subscribed(WAIT_S), bus.last_error


def test_round_trip_with_ack_over_mqtt5(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus], caplog: pytest.LogCaptureFixture
) -> None:
    config = BrokerConfig.from_url(mosquitto.url)
    inbox = Inbox()
    sub = buses(config, "node-oak")

    def broken_handler(topic: str, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    sub.subscribe(topics.pattern("oak"), broken_handler)  # logged; the bus and other handlers go on
    sub.subscribe(topics.pattern("oak", "orders"), inbox)
    pub = buses(config, "agent-m1")
    connect(sub, pub)
    subscribed(sub)
    acked = threading.Event()
    pub.publish(topics.orders("oak", "m1"), b'{"order":1}', on_ack=acked.set)
    assert acked.wait(WAIT_S)
    wait_for(lambda: inbox.payloads(topics.orders("oak", "m1")) == [b'{"order":1}'], what="delivery")
    assert sub.protocol == pub.protocol == "5"
    wait_for(
        lambda: any("raised" in r.getMessage() and r.exc_info for r in caplog.records),
        what="the broken handler's error in the log",
    )
    log_text = mosquitto.log_text()
    assert "as agent-m1 (p5, c0" in log_text, log_text  # MQTT 5, clean start off


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_persistent_session_gets_messages_published_while_away(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus], protocol: str
) -> None:
    config = BrokerConfig.from_url(mosquitto.url)
    inbox = Inbox()
    sub = buses(config, "node", protocol=protocol)
    sub.subscribe("peerwatt/oak/#", inbox)
    pub = buses(config, "agent", protocol=protocol)
    connect(sub, pub)
    subscribed(sub)
    sub.stop()
    assert not sub.connected

    acked: list[int] = []
    for i in range(50):
        pub.publish(topics.readings("oak", "m1"), b"%d" % i, on_ack=lambda i=i: acked.append(i))
    wait_for(lambda: len(acked) == 50, what="50 acks")
    assert inbox.payloads(topics.readings("oak", "m1")) == []

    sub.start()
    assert sub.wait_connected(WAIT_S)
    wait_for(lambda: len(inbox.payloads(topics.readings("oak", "m1"))) >= 50, what="50 queued messages")
    assert inbox.payloads(topics.readings("oak", "m1")) == [b"%d" % i for i in range(50)]


def test_broker_sigkill_loses_at_most_its_last_unsaved_second(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus]
) -> None:
    """200 QoS 1 messages while the broker is SIGKILLed and restarted.

    What Mosquitto promises (docs/bus.md): it acknowledges a message before it is on disk and
    saves every ``autosave_interval`` (1 s), so a SIGKILL may lose what it acknowledged in its
    last unsaved second, and nothing older. The bus must lose nothing of its own: every message
    gets acknowledged in the end, and every message the restarted broker acknowledged reaches
    the persistent subscriber. The last-second window is closed end to end by the agent's outbox
    (tests/reliability/test_broker_kill_stream.py), not here.
    """
    config = BrokerConfig.from_url(mosquitto.url)
    inbox = Inbox()
    sub = buses(config, "node")
    sub.subscribe("k/#", inbox)
    connections = [0]  # the publisher's successful connections; callbacks share paho's thread

    def count_connection(up: bool) -> None:
        connections[0] += up

    pub = buses(config, "agent", on_connection_change=count_connection)
    connect(sub, pub)
    subscribed(sub)
    mosquitto.save()  # the subscriber's session is on disk before the crash

    acks: dict[int, tuple[int, float]] = {}  # message -> (connection it was acked on, monotonic time)
    acks_lock = threading.Lock()

    def ack(i: int) -> None:
        with acks_lock:
            acks[i] = (connections[0], time.monotonic())

    def publish_all() -> None:
        for i in range(200):
            pub.publish("k/data", b"%d" % i, on_ack=lambda i=i: ack(i))
            time.sleep(0.01)

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    wait_for(lambda: len(inbox.payloads("k/data")) >= 60, what="60 deliveries before the crash")
    killed_at = time.monotonic()
    mosquitto.kill()
    time.sleep(0.2)
    mosquitto.start()
    publisher.join(WAIT_S)
    assert not publisher.is_alive()
    wait_for(lambda: len(acks) == 200, timeout_s=20, what="every message acknowledged")
    with acks_lock:
        by_restarted_broker = {i for i, (connection, _t) in acks.items() if connection > 1}
        by_killed_broker = {i: t for i, (connection, t) in acks.items() if connection == 1}
    assert by_restarted_broker, "no message was published across the restart"

    def delivered() -> set[int]:
        return {int(p) for p in inbox.payloads("k/data")}

    wait_for(
        lambda: delivered() >= by_restarted_broker,
        timeout_s=20,
        what="every message the restarted broker acknowledged delivered",
    )
    time.sleep(0.5)  # late redeliveries of the killed broker's saved in-flight messages
    lost = set(range(200)) - delivered()
    assert lost <= set(by_killed_broker), lost
    unsaved_window_s = 2.0  # autosave_interval 1 s plus one pass of Mosquitto's main loop
    old_losses = {i: round(killed_at - by_killed_broker[i], 2) for i in lost}
    assert all(age <= unsaved_window_s for age in old_losses.values()), old_losses
    received = [int(p) for p in inbox.payloads("k/data")]
    print(
        f"\nbroker SIGKILL: 200 acked ({len(by_restarted_broker)} by the restarted broker), "
        f"{len(set(received))} distinct delivered, {len(lost)} lost in the unsaved second, "
        f"{len(received) - len(set(received))} duplicates"
    )


def test_last_will_when_the_owner_process_is_killed(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus]
) -> None:
    status_topic = topics.status("oak", "m1")
    inbox = Inbox()
    watcher = buses(BrokerConfig.from_url(mosquitto.url), "dashboard")
    watcher.subscribe(topics.pattern("oak", "status"), inbox)
    connect(watcher)
    agent_code = textwrap.dedent(
        f"""
        import time
        from peerwatt.bus import BrokerConfig, MqttBus
        bus = MqttBus(BrokerConfig.from_url({mosquitto.url!r}), "agent-m1",
                      will=({status_topic!r}, b"offline", True))
        bus.start()
        bus.wait_connected(10)
        bus.publish({status_topic!r}, b"online", retain=True)
        time.sleep(60)
        """
    )
    agent = subprocess.Popen([sys.executable, "-c", agent_code], cwd=ROOT)
    try:
        wait_for(lambda: inbox.payloads(status_topic) == [b"online"], what="agent online")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(WAIT_S)
        wait_for(lambda: inbox.payloads(status_topic)[-1:] == [b"offline"], what="last will")
    finally:
        agent.kill()
        agent.wait(WAIT_S)
    late = Inbox()
    newcomer = buses(BrokerConfig.from_url(mosquitto.url), "late-dashboard")
    newcomer.subscribe(status_topic, late)
    connect(newcomer)
    wait_for(lambda: late.payloads() == [b"offline"], what="retained will")


def test_clean_stop_sends_no_last_will(mosquitto: Mosquitto, buses: Callable[..., MqttBus]) -> None:
    config = BrokerConfig.from_url(mosquitto.url)
    inbox = Inbox()
    watcher = buses(config, "dashboard")
    watcher.subscribe("s/#", inbox)
    changes: list[bool] = []
    agent = buses(config, "agent", will=("s/agent", b"offline", False), on_connection_change=changes.append)
    connect(watcher, agent)
    subscribed(watcher)
    agent.stop()
    assert changes == [True, False]
    agent.start()  # a stop/start cycle must work and leak nothing (warnings are errors)
    assert agent.wait_connected(WAIT_S)
    agent.publish("s/agent", b"back")
    wait_for(lambda: inbox.payloads("s/agent") == [b"back"], what="message after restart")
    assert changes == [True, False, True]


def test_messages_published_before_the_broker_exists_are_delivered(
    mosquitto_factory: Callable[..., Mosquitto], buses: Callable[..., MqttBus]
) -> None:
    broker = mosquitto_factory()
    config = BrokerConfig.from_url(broker.url)
    pub = buses(config, "early-agent", probe_timeout_s=0.5)  # no broker is no reason to drop MQTT 5
    acked: list[int] = []
    pub.start()
    for i in range(3):
        pub.publish("early/t", b"%d" % i, on_ack=lambda i=i: acked.append(i))
    wait_for(lambda: "connection refused" in (pub.last_error or ""), what="the refused first attempt")
    assert not pub.connected and acked == []
    broker.start()
    assert pub.wait_connected(WAIT_S)
    wait_for(lambda: acked == [0, 1, 2], what="acks after the broker came up")
    assert pub.last_error is None
    assert pub.protocol == "5"


# -- the documented production config: generated, TLS, credentials, per-account ACL -----------


def generated_section() -> str:
    """docs/bus.md's section on the config `peerwatt broker config` generates."""
    text = (ROOT / "docs" / "bus.md").read_text()
    start = text.index("### The generated config (`peerwatt broker config`)")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


def documented_block(first_line: str) -> list[str]:
    """The lines of the fenced code block in that section whose first line starts with ``first_line``."""
    blocks = generated_section().split("```")[1::2]
    found = [b.split("\n", 1)[1] for b in blocks if b.split("\n", 1)[1].startswith(first_line)]
    assert len(found) == 1, f"no single documented block starting with {first_line!r}"
    return [line for line in found[0].splitlines() if line.strip()]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _acl_blocks(lines: list[str]) -> set[tuple[str, ...]]:
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith("user "):
            blocks.append([])
        blocks[-1].append(line)
    return {tuple(block) for block in blocks}


@pytest.fixture
def small_community(tmp_path: Path):
    """docs/bus.md's example: the community oak-street with a sequencer, one more validator and a meter."""
    from tests.support.community_broker import genesis_toml
    from tests.support.localnet import make_community

    c = make_community(validators=2, members=1)
    (tmp_path / "genesis.toml").write_text(genesis_toml(c.genesis.doc))
    return c


def test_the_documented_config_and_acl_are_what_broker_config_writes(tmp_path: Path, small_community) -> None:
    from tests.support.community_broker import peerwatt

    c = small_community
    etc = "/etc/mosquitto/peerwatt"  # as documented; only written to tmp_path
    result = peerwatt(
        "broker", "config", "--genesis", str(tmp_path / "genesis.toml"), "--out", str(tmp_path / "b"),
        "--etc", etc,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    conf = _lines((tmp_path / "b" / "mosquitto.conf").read_text())
    listener = documented_block("listener 8883")
    start = conf.index("listener 8883")
    assert conf[start : start + len(listener)] == listener
    assert f"acl_file {etc}/peerwatt.acl" in conf and "allow_anonymous false" in conf

    sequencer = c.genesis.doc["chain"]["sequencer"]
    validator = next(v for v in c.genesis.doc["validators"] if v != sequencer)
    acl = (tmp_path / "b" / "peerwatt.acl").read_text()
    for real, placeholder in (
        (sequencer, "<sequencer key id>"),
        (validator, "<validator key id>"),
        (c.meters[0].id, "<meter id>"),
    ):
        acl = acl.replace(real, placeholder)
    assert _acl_blocks(_lines(acl)) == _acl_blocks(documented_block("user node-"))

    start_line = next(x for x in result.stdout.splitlines() if x.startswith("start as root: "))
    assert start_line.removeprefix("start as root: ") == "/usr/bin/" + documented_block("install -d")[0]


def test_generated_password_config_tls_credentials_and_acl_in_mosquitto(
    mosquitto_factory: Callable[..., Mosquitto],
    buses: Callable[..., MqttBus],
    tmp_path: Path,
    small_community,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`peerwatt broker config --auth password` (TLS listener and a plain loopback listener) in a
    real broker: a meter's own order arrives, another meter's topic is refused ("Not authorized",
    never acknowledged), a wrong password, an unknown CA and an anonymous client are refused."""
    from tests.conftest import require_tool
    from tests.support.community_broker import peerwatt

    require_tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    c = small_community
    community, meter = c.community, c.meters[0].id
    sequencer = c.genesis.doc["chain"]["sequencer"]
    out, certs = tmp_path / "b", tmp_path / "b" / "certs"
    made = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1")
    other = peerwatt("broker", "certs", "--out", str(tmp_path / "other"), "--host", "127.0.0.1")
    assert made.returncode == 0 and other.returncode == 0, made.stderr + other.stderr
    tls_port, local_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    result = peerwatt(
        "broker", "config", "--genesis", str(tmp_path / "genesis.toml"), "--out", str(out),
        "--auth", "password", "--port", str(tls_port), "--bind", "127.0.0.1",
        "--local-port", str(local_port), "--persistence", str(tmp_path / "data"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    broker = mosquitto_factory(port=tls_port, config_text=(out / "mosquitto.conf").read_text())
    broker.start()

    def password(user: str) -> str:
        return (out / "credentials" / f"{user}.password").read_text().strip()

    def over_tls(user: str, secret: str, ca: Path = certs / "community-ca.crt") -> BrokerConfig:
        return BrokerConfig(port=tls_port, username=user, password=secret, tls=True, ca_file=str(ca))

    inbox = Inbox()
    node = buses(over_tls(f"node-{sequencer}", password(f"node-{sequencer}")), f"node-{sequencer}")
    node.subscribe(topics.pattern(community, "orders"), inbox)
    will = (topics.status(community, meter), b"offline", True)
    agent = buses(over_tls(meter, password(meter)), meter, will=will)
    connect(node, agent)
    subscribed(node)

    caplog.set_level(logging.WARNING, logger="peerwatt.bus")
    own, forged = threading.Event(), threading.Event()
    agent.publish(topics.orders(community, "m2"), b"forged", on_ack=forged.set)
    agent.publish(topics.orders(community, meter), b"mine", on_ack=own.set)
    assert own.wait(WAIT_S)
    wait_for(lambda: inbox.payloads(topics.orders(community, meter)) == [b"mine"], what="own order")
    assert not forged.is_set()  # denied by the ACL: never acknowledged as delivered
    assert inbox.payloads(topics.orders(community, "m2")) == []
    refusal = f"the MQTT broker refused the message to {topics.orders(community, 'm2')}: Not authorized"
    [said] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(refusal)]
    assert "ACL" in said and "Updating peerwatt" in said, said  # what it may mean, and where to look

    refused = {
        "wrong password": buses(over_tls(meter, "wrong"), "wrong"),
        "unknown CA": buses(over_tls(meter, password(meter), tmp_path / "other" / "community-ca.crt"), "ca"),
        "anonymous": buses(BrokerConfig(port=local_port), "anonymous"),
    }
    for bus in refused.values():
        bus.start()
    expected = {
        "wrong password": "refused the connection: Not authorized",
        "unknown CA": "TLS certificate verification failed",
        "anonymous": "refused the connection: Not authorized",
    }
    for case, text in expected.items():
        wait_for(lambda case=case, text=text: text in (refused[case].last_error or ""), what=case)
        assert not refused[case].connected


def test_a_long_broker_outage_holds_a_bounded_queue_in_memory(buses: Callable[..., MqttBus]) -> None:
    """Messages beyond ``max_queued_messages`` are not kept in RAM (the agent's outbox keeps them
    on disk and resends); publishing never raises while the broker is away."""
    config = BrokerConfig(host="127.0.0.1", port=free_port(), max_queued_messages=5)
    pub = buses(config, "offline-agent", probe_timeout_s=0.5)
    pub.start()
    for i in range(50):
        pub.publish("away/t", b"%d" % i)
    assert pub.queued_messages() == 5
    assert "queue is full" in (pub.last_error or "")


def test_a_broker_that_closes_before_connack_gives_an_error_line(buses: Callable[..., MqttBus]) -> None:
    """A revoked client certificate, or an ACL that refuses the client id, shows up as a broker that
    accepts the TCP connection and closes it before its CONNACK: the bus must say so, not stay
    silent (seen with Mosquitto and a certificate on the community's CRL)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", free_port()))
    server.listen(8)
    stop = threading.Event()

    def close_everything() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(1024)  # the CONNECT
            conn.close()

    thread = threading.Thread(target=close_everything, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        bus = buses(BrokerConfig(host="127.0.0.1", port=port), "revoked-agent", probe_timeout_s=0.5)
        bus.start()
        wait_for(lambda: "closed the connection" in (bus.last_error or ""), what="an error line")
        assert not bus.connected
    finally:
        stop.set()
        thread.join(5)
        server.close()


class _SubackOnCue:
    """An MQTT 3.1.1 broker on loopback that accepts the connection at once but answers a
    SUBSCRIBE only when told (``answer``): a broker slow to take a subscription."""

    def __init__(self) -> None:
        import socket

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.codes: list[int] | None = None  # the SUBACK's return codes, once told
        self.cue = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def answer(self, codes: list[int]) -> None:
        self.codes = codes
        self.cue.set()

    def close(self) -> None:
        self.cue.set()
        self.server.close()
        self.thread.join(WAIT_S)

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while True:
                head = conn.recv(1)
                if not head:
                    return
                length, shift = 0, 0
                while True:
                    byte = conn.recv(1)[0]
                    length += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = b""
                while len(body) < length:
                    body += conn.recv(length - len(body))
                kind = head[0] & 0xF0
                if kind == 0x10:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind == 0x80:  # SUBSCRIBE: mid, then the filters
                    self.cue.wait(WAIT_S)
                    codes = bytes(self.codes or [])
                    conn.sendall(bytes([0x90, 2 + len(codes)]) + body[:2] + codes)
                elif kind == 0xC0:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif kind == 0xE0:  # DISCONNECT
                    return


def test_wait_subscribed_waits_for_the_brokers_answer(
    buses: Callable[..., MqttBus], caplog: pytest.LogCaptureFixture
) -> None:
    """``connected`` says the broker accepted the connection, not that it has the subscriptions:
    a message another client publishes before the SUBACK is not routed here. ``wait_subscribed``
    returns once the broker answered every SUBSCRIBE; a subscription it refused is logged."""
    broker = _SubackOnCue()
    bus = buses(BrokerConfig(host="127.0.0.1", port=broker.port), "node", protocol="3.1.1")
    try:
        bus.subscribe("a/#", Inbox())
        bus.subscribe("b/#", Inbox())
        assert not bus.wait_subscribed(0.1)  # not started
        caplog.set_level(logging.WARNING, logger="peerwatt.bus")
        bus.start()
        assert bus.wait_connected(WAIT_S), bus.last_error
        assert not bus.wait_subscribed(0.5)  # connected, the SUBSCRIBE not answered yet
        broker.answer([0x01, 0x80])  # a/# granted QoS 1, b/# refused
        assert bus.wait_subscribed(WAIT_S)
        wait_for(lambda: "refused the subscription to b/#" in caplog.text, what="the refusal in the log")
        assert "subscription to a/#" not in caplog.text
    finally:
        bus.stop(flush_timeout_s=0)
        broker.close()


def test_a_stopped_broker_is_one_line_saying_the_connection_closed(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus], caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto stopping closes the socket without a DISCONNECT packet, which paho reports as
    "Unspecified error": the operator's line says what that means instead. The reconnection is
    said at the same level (a soak found it at INFO, under the demo's WARNING threshold)."""
    bus = buses(BrokerConfig.from_url(mosquitto.url), "node-a")
    connect(bus)
    mosquitto.stop()
    wait_for(lambda: not bus.connected, what="the disconnect")
    wait_for(lambda: "lost the connection" in (bus.last_error or ""), what="the line")
    assert "the broker stopped or restarted, the network failed" in bus.last_error
    assert "Unspecified error" not in bus.last_error
    with caplog.at_level(logging.WARNING, logger="peerwatt.bus"):
        mosquitto.start()
        assert bus.wait_connected(WAIT_S), bus.last_error
    assert f"connected to the MQTT broker at {bus.config.address} again" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


def test_a_second_client_with_the_same_id_is_named_as_a_cause(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus]
) -> None:
    """Two processes with one client id (an agent started twice) take the session from each other;
    Mosquitto 2.0 just closes the socket, so the line names that cause among the others."""
    first = buses(BrokerConfig.from_url(mosquitto.url), "agent-twice")
    connect(first)
    second = buses(BrokerConfig.from_url(mosquitto.url), "agent-twice")
    second.start()
    wait_for(lambda: "lost the connection" in (first.last_error or ""), what="the first one's line")
    assert "another client connected with this client id" in first.last_error


def test_a_disconnect_packet_gives_the_brokers_reason() -> None:
    """An MQTT 5 broker that sends DISCONNECT says why; session takeover gets a hint."""
    from paho.mqtt.client import DisconnectFlags
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from peerwatt.bus.mqtt import _why_disconnected

    sent = DisconnectFlags(is_disconnect_packet_from_server=True)
    assert _why_disconnected(sent, ReasonCode(PacketTypes.DISCONNECT, identifier=0x8B)) == (
        "the broker says: Server shutting down"
    )
    taken = _why_disconnected(sent, ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E))
    assert "Session taken over" in taken and "running twice?" in taken


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_retained_always_resends_retained_messages_to_a_resumed_session(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus], protocol: str
) -> None:
    """Found in a QA run: an agent whose saved chain configuration was damaged (or restored from
    a backup) started over from its genesis, but its resumed MQTT 5 session got no retained
    configuration history again, so it never walked it. ``retained_always`` asks for them at
    every connect; other subscriptions still get them once per session (MQTT 3.1.1 has no
    retain handling: a broker sends them at every subscription)."""
    config = BrokerConfig.from_url(mosquitto.url)
    pub = buses(config, "validator", protocol=protocol)
    connect(pub)
    acked: list[str] = []
    pub.publish("peerwatt/oak/config/v1", b"history", retain=True, on_ack=lambda: acked.append("c"))
    pub.publish("peerwatt/oak/headers", b"header", retain=True, on_ack=lambda: acked.append("h"))
    wait_for(lambda: len(acked) == 2, what="retained messages stored")
    inbox = Inbox()
    sub = buses(config, "agent", protocol=protocol)
    sub.subscribe("peerwatt/oak/config/+", inbox, retained_always=True)
    sub.subscribe("peerwatt/oak/headers", inbox)
    connect(sub)
    wait_for(lambda: len(inbox.payloads()) == 2, what="retained messages at the first connect")
    sub.stop()
    sub.start()
    assert sub.wait_connected(WAIT_S)
    wait_for(lambda: len(inbox.payloads("peerwatt/oak/config/v1")) == 2, what="the history again")
    time.sleep(0.5)  # what else the resumed session would bring
    headers = 2 if protocol == "3.1.1" else 1
    assert inbox.payloads("peerwatt/oak/headers") == [b"header"] * headers
