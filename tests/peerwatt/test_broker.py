"""The embedded amqtt broker of the demo, MqttBus's fallback to MQTT 3.1.1 against it, and
MqttBus with no broker at all."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from peerwatt.broker.embedded import EmbeddedBroker
from peerwatt.bus import BrokerConfig, MqttBus
from peerwatt.errors import UserError
from tests.support.mosquitto import free_port
from tests.support.procnet import wait_for

WAIT_S = 10.0


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def buses() -> Iterator[list[MqttBus]]:
    made: list[MqttBus] = []
    yield made
    for bus in made:
        bus.stop(flush_timeout_s=0)


def test_auto_protocol_falls_back_to_311_and_round_trips(
    broker: EmbeddedBroker, buses: list[MqttBus]
) -> None:
    """amqtt never answers an MQTT 5 CONNECT that carries properties: the probe times out."""
    config = BrokerConfig.from_url(broker.url)
    received: list[bytes] = []
    sub = MqttBus(config, "demo-node", probe_timeout_s=0.5)
    sub.subscribe("peerwatt/demo/#", lambda topic, payload: received.append(payload))
    pub = MqttBus(config, "demo-agent", probe_timeout_s=0.5)
    buses += [sub, pub]
    acked: list[str] = []
    pub.publish("peerwatt/demo/orders/m1", b"before connecting", on_ack=lambda: acked.append("early"))
    sub.start()
    pub.start()
    assert sub.wait_connected(WAIT_S) and pub.wait_connected(WAIT_S), pub.last_error
    assert sub.protocol == pub.protocol == "3.1.1"
    wait_for(lambda: acked == ["early"], what="the message published before connecting to be acked")
    assert sub.wait_subscribed(WAIT_S)  # a message sent before the SUBACK may not be routed
    pub.publish("peerwatt/demo/orders/m1", b"after", on_ack=lambda: acked.append("late"))
    wait_for(lambda: acked == ["early", "late"], what="ack")
    wait_for(lambda: b"after" in received, what="delivery")


def test_refused_protocol_version_falls_back_at_once(broker: EmbeddedBroker, buses: list[MqttBus]) -> None:
    """Without CONNECT properties amqtt answers "unsupported protocol version" (no probe wait)."""
    bus = MqttBus(BrokerConfig(port=broker.port, session_expiry_s=0), "quick", probe_timeout_s=30)
    buses.append(bus)
    started = time.monotonic()
    bus.start()
    assert bus.wait_connected(WAIT_S)
    assert bus.protocol == "3.1.1"
    assert time.monotonic() - started < 5


def test_forced_311_connects_directly(broker: EmbeddedBroker, buses: list[MqttBus]) -> None:
    bus = MqttBus(BrokerConfig(port=broker.port), "direct", protocol=EmbeddedBroker.protocol)
    buses.append(bus)
    bus.start()
    assert bus.wait_connected(2.0) and bus.protocol == "3.1.1"


def test_forced_mqtt5_against_amqtt_is_an_error(broker: EmbeddedBroker, buses: list[MqttBus]) -> None:
    bus = MqttBus(BrokerConfig(port=broker.port, session_expiry_s=0), "five", protocol="5")
    buses.append(bus)
    bus.start()
    wait_for(lambda: "Unsupported protocol version" in (bus.last_error or ""), what="the refusal")
    assert not bus.connected


def test_embedded_broker_keeps_persistent_sessions(broker: EmbeddedBroker, buses: list[MqttBus]) -> None:
    config = BrokerConfig(port=broker.port)
    received: list[bytes] = []
    sub = MqttBus(config, "node", protocol="3.1.1")
    sub.subscribe("t", lambda topic, payload: received.append(payload))
    pub = MqttBus(config, "agent", protocol="3.1.1")
    buses += [sub, pub]
    for bus in (sub, pub):
        bus.start()
        assert bus.wait_connected(WAIT_S)
    assert sub.wait_subscribed(WAIT_S)
    sub.stop()
    acks = threading.Semaphore(0)
    for i in range(10):
        pub.publish("t", b"%d" % i, on_ack=acks.release)
    for _ in range(10):
        assert acks.acquire(timeout=WAIT_S)
    received.clear()
    sub.start()
    wait_for(lambda: len(received) >= 10, what="queued messages")
    assert received == [b"%d" % i for i in range(10)]


def test_busy_port_is_one_line_naming_the_port() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(UserError) as info:
            EmbeddedBroker(port=port).start()
    message = str(info.value)
    assert f"port {port}" in message and "already in use" in message and "\n" not in message


def test_stop_ends_the_thread_and_allows_a_new_start() -> None:
    embedded = EmbeddedBroker()
    embedded.start()
    port = embedded.port
    assert embedded.running and embedded.url == f"mqtt://127.0.0.1:{port}"
    embedded.stop()
    embedded.stop()  # idempotent
    assert not embedded.running
    assert not any(t.name == "peerwatt-embedded-broker" for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        _ = embedded.port
    with socket.socket() as probe:  # the port is released
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    embedded.start()
    try:
        assert embedded.running
    finally:
        embedded.stop()


def test_bad_port_is_rejected() -> None:
    with pytest.raises(ValueError):
        EmbeddedBroker(port=70000)


def test_unreachable_broker_is_one_line_logged_once(
    buses: list[MqttBus], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, logger="peerwatt.bus")
    bus = MqttBus(BrokerConfig(port=port), "lonely")
    buses.append(bus)
    bus.start()
    assert not bus.wait_connected(3.5)  # paho's attempts come at 0 s and 3 s (backoff 1 + 2 s)
    assert bus.last_error == (
        f"cannot reach the MQTT broker at 127.0.0.1:{port}: connection refused; retrying"
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "peerwatt.bus"]
    assert messages == [bus.last_error]
