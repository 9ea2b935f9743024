"""MqttBus reading in batches from a real Mosquitto: buffered reads deliver every message of a
burst (small and large, in order, without waiting for more traffic), and ``defer_acks`` runs the
barrier once per batch, after the batch's handlers and before any of its acknowledgements."""

from __future__ import annotations

import threading

import pytest

from peerwatt.bus import BrokerConfig, MqttBus
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration

WAIT_S = 20.0
TOPIC = "peerwatt/oak-street/readings/m1"


def _bus(url: str, name: str) -> MqttBus:
    return MqttBus(BrokerConfig.from_url(url), name, protocol="5")


def _publish_all(url: str, payloads: list[bytes]) -> None:
    acked: list[int] = []
    publisher = _bus(url, "publisher")
    publisher.start()
    try:
        assert publisher.wait_connected(WAIT_S), publisher.last_error
        for payload in payloads:
            publisher.publish(TOPIC, payload, on_ack=lambda: acked.append(1))
        wait_for(lambda: len(acked) == len(payloads), WAIT_S, "the broker's acknowledgements")
    finally:
        publisher.stop()


def test_a_burst_arrives_whole_and_in_order(mosquitto) -> None:
    """Thousands of small messages and a few larger than a read chunk, sent at once: all arrive,
    intact and in order, none held back in the read buffer."""
    large = b"x" * 200_000  # several read chunks
    payloads = [b"%05d" % i + (large if i % 997 == 0 else b"") for i in range(3000)]
    received: list[bytes] = []
    subscriber = _bus(mosquitto.url, "subscriber")
    subscriber.subscribe(TOPIC, lambda _t, p: received.append(p))
    subscriber.start()
    try:
        assert subscriber.wait_connected(WAIT_S), subscriber.last_error
        assert subscriber.wait_subscribed(WAIT_S), subscriber.last_error
        _publish_all(mosquitto.url, payloads)
        wait_for(lambda: len(received) >= len(payloads), WAIT_S, "every message", interval_s=0.01)
        assert received == payloads
        # the last message of a burst is not left in the buffer until the next traffic
        _publish_all(mosquitto.url, [b"last"])
        wait_for(lambda: received[-1:] == [b"last"], 2.0, "a lone message", interval_s=0.01)
    finally:
        subscriber.stop()


def test_deferred_acks_follow_the_barrier_of_their_batch(mosquitto) -> None:
    events: list[tuple[str, object]] = []
    lock = threading.Lock()

    def note(kind: str, what: object) -> None:
        with lock:
            events.append((kind, what))

    subscriber = _bus(mosquitto.url, "subscriber")
    subscriber.subscribe(TOPIC, lambda _t, p: note("message", p))
    subscriber.defer_acks(lambda: note("barrier", None))
    client = subscriber._client
    sent_acks = client._send_puback

    def send_puback(mid: int):
        note("ack", mid)
        return sent_acks(mid)

    client._send_puback = send_puback  # every PUBACK this client sends goes through here
    subscriber.start()
    try:
        assert subscriber.wait_connected(WAIT_S), subscriber.last_error
        assert subscriber.wait_subscribed(WAIT_S), subscriber.last_error
        count = 500
        _publish_all(mosquitto.url, [b"%d" % i for i in range(count)])
        wait_for(lambda: sum(k == "ack" for k, _ in events) >= count, WAIT_S, "every acknowledgement")
    finally:
        subscriber.stop()
    with lock:
        seen = list(events)
    assert sum(k == "message" for k, _ in seen) == count
    # after a message, its acknowledgement only comes once a barrier ran
    unbarriered = 0
    for kind, _what in seen:
        if kind == "message":
            unbarriered += 1
        elif kind == "barrier":
            unbarriered = 0
        else:
            assert unbarriered == 0, "a PUBACK went out before the barrier of its batch"
    # and the barrier ran per batch, not per message
    batches = sum(k == "barrier" for k, _ in seen)
    assert batches < count / 2, f"{batches} barriers for {count} messages"


def test_defer_acks_only_before_start(mosquitto) -> None:
    bus = _bus(mosquitto.url, "late")
    bus.start()
    try:
        with pytest.raises(RuntimeError):
            bus.defer_acks(lambda: None)
    finally:
        bus.stop()
