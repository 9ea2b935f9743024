"""A message larger than the broker's maximum packet size is not sent, with one ERROR line, and
the messages after it still get through.

Found in a QA pass: Mosquitto drops a client that sends a packet above its ``max_packet_size``,
and paho sends the unacknowledged message again on every reconnection, so the bus lost and
regained its connection over and over and not one message after the large one was delivered
(a node whose block outgrew a broker of the community's own: its seals and votes were held too).
The broker names its limit in its MQTT 5 CONNACK; the bus checks each publish against it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from peerwatt.bus import BrokerConfig, MqttBus
from peerwatt.bus.mqtt import publish_packet_bytes
from tests.peerwatt.test_bus_mqtt import WAIT_S, Inbox, buses, connect, subscribed  # noqa: F401 (fixture)
from tests.support.mosquitto import Mosquitto
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration

LIMIT = 100_000


def test_a_message_above_the_brokers_limit_does_not_hold_up_the_others(
    mosquitto_factory: Callable[..., Mosquitto],
    buses: Callable[..., MqttBus],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = mosquitto_factory(extra_config=[f"max_packet_size {LIMIT}"])
    broker.start()
    config = BrokerConfig.from_url(broker.url)
    inbox = Inbox()
    sub, pub = buses(config, "node-sub"), buses(config, "node-pub")
    sub.subscribe("t/#", inbox)
    connect(sub, pub)
    subscribed(sub)
    assert pub.protocol == "5"

    # the largest payload the broker takes, and one byte more (the size counts the whole packet)
    fits = max(n for n in range(LIMIT - 20, LIMIT) if publish_packet_bytes("t/big", n, 1) <= LIMIT)
    assert publish_packet_bytes("t/big", fits, 1) == LIMIT
    acked: list[str] = []
    with caplog.at_level(logging.INFO, logger="peerwatt.bus"):
        pub.publish("t/big", b"x" * (fits + 1), on_ack=lambda: acked.append("too large"))
        pub.publish("t/big", b"x" * (fits + 2), on_ack=lambda: acked.append("too large 2"))
        pub.publish("t/big", b"x" * fits, on_ack=lambda: acked.append("fits"))
        for i in range(3):
            pub.publish("t/small", b"%d" % i, on_ack=lambda i=i: acked.append(f"small {i}"))
        wait_for(lambda: len(inbox.payloads()) == 4, WAIT_S, "the messages after the large one")
    assert acked == ["fits", "small 0", "small 1", "small 2"]
    assert [len(p) for p in inbox.payloads("t/big")] == [fits]
    assert inbox.payloads("t/small") == [b"0", b"1", b"2"]
    assert pub.connected and pub.last_error is None and pub.queued_messages() == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [
        f"not sent: a message of {fits + 1} bytes to t/big is larger than the MQTT broker's maximum "
        f"packet size ({LIMIT} bytes) at {config.address}: raise max_packet_size in the broker's "
        "configuration (docs/bus.md)"
    ]  # once per topic, and no lost connection


@pytest.mark.parametrize(("topic", "payload", "qos", "size"), [
    ("a", 0, 0, 1 + 1 + 2 + 1 + 1),
    ("a", 0, 1, 1 + 1 + 2 + 1 + 2 + 1),
    ("t/é", 118, 1, 1 + 1 + 127),  # remaining length 2 + 4 + 2 + 1 + 118 = 127: one byte
    ("t/é", 119, 1, 1 + 2 + 128),  # 128: two
])  # fmt: skip
def test_publish_packet_bytes(topic: str, payload: int, qos: int, size: int) -> None:
    assert publish_packet_bytes(topic, payload, qos) == size
