"""The in-memory transport: the MQTT semantics tests of agents and nodes rely on."""

from __future__ import annotations

import threading

import pytest

from peerwatt.bus import Bus, MemoryBroker, MemoryBus


def collect(bus: MemoryBus, pattern: str, *, qos: int = 1) -> list[tuple[str, bytes]]:
    received: list[tuple[str, bytes]] = []
    bus.subscribe(pattern, lambda topic, payload: received.append((topic, payload)), qos=qos)
    return received


def started(broker: MemoryBroker, client_id: str, **kwargs: object) -> MemoryBus:
    bus = MemoryBus(broker, client_id, **kwargs)  # type: ignore[arg-type]
    bus.start()
    return bus


def test_memory_bus_satisfies_the_bus_protocol() -> None:
    bus: Bus = MemoryBus(MemoryBroker(), "c")
    assert not bus.connected
    bus.start()
    assert bus.connected and bus.wait_connected(0)


def test_wildcards_route_to_matching_handlers_only() -> None:
    broker = MemoryBroker()
    sub = started(broker, "sub")
    orders = collect(sub, "peerwatt/oak/orders/+")
    everything = collect(sub, "peerwatt/oak/#")
    pub = started(broker, "pub")
    pub.publish("peerwatt/oak/orders/m1", b"o1")
    pub.publish("peerwatt/oak/readings/m1", b"r1")
    pub.publish("peerwatt/elm/orders/m1", b"other community")
    assert orders == [("peerwatt/oak/orders/m1", b"o1")]
    assert everything == [("peerwatt/oak/orders/m1", b"o1"), ("peerwatt/oak/readings/m1", b"r1")]


def test_publish_is_synchronous_with_auto_drain_and_acks_fire() -> None:
    broker = MemoryBroker()
    sub = started(broker, "sub")
    got = collect(sub, "t")
    acks: list[int] = []
    pub = started(broker, "pub")
    pub.publish("t", b"1", on_ack=lambda: acks.append(1))
    assert got == [("t", b"1")] and acks == [1]


def test_manual_drain_delivers_in_publish_order() -> None:
    broker = MemoryBroker(auto_drain=False)
    sub = started(broker, "sub")
    got = collect(sub, "t/#")
    acks: list[int] = []
    pub = started(broker, "pub")
    for i in range(5):
        pub.publish(f"t/{i}", str(i).encode(), on_ack=lambda i=i: acks.append(i))
    assert got == [] and acks == [] and broker.pending == 10
    assert broker.drain() == 10
    assert [p for _t, p in got] == [b"0", b"1", b"2", b"3", b"4"] and acks == [0, 1, 2, 3, 4]
    assert broker.drain() == 0


def test_retained_message_reaches_later_subscribers_and_empty_payload_clears_it() -> None:
    broker = MemoryBroker()
    pub = started(broker, "pub")
    pub.publish("peerwatt/oak/blocks", b"block 7", retain=True)
    pub.publish("peerwatt/oak/blocks", b"block 8", retain=True)
    late = started(broker, "late")
    got = collect(late, "peerwatt/oak/+")
    assert got == [("peerwatt/oak/blocks", b"block 8")]
    pub.publish("peerwatt/oak/blocks", b"", retain=True)
    assert broker.retained() == {}
    assert collect(started(broker, "later"), "peerwatt/oak/+") == []


def test_resubscribing_on_reconnect_does_not_repeat_retained() -> None:
    broker = MemoryBroker()
    started(broker, "pub").publish("s", b"online", retain=True)
    sub = started(broker, "sub")
    got = collect(sub, "s")
    sub.stop()
    sub.start()
    assert got == [("s", b"online")]


def test_persistent_session_queues_qos1_in_order_across_stop_start() -> None:
    broker = MemoryBroker()
    sub = started(broker, "node")
    got = collect(sub, "peerwatt/oak/orders/+")
    sub.stop()
    pub = started(broker, "agent")
    acks: list[int] = []
    for i in range(50):
        pub.publish("peerwatt/oak/orders/m1", b"%d" % i, on_ack=lambda i=i: acks.append(i))
    pub.publish("peerwatt/oak/orders/m1", b"qos0 is not queued", qos=0)
    assert acks == list(range(50)) and got == [] and broker.queued_for("node") == 50
    sub.start()
    assert [int(p) for _t, p in got] == list(range(50))
    assert broker.queued_for("node") == 0


def test_session_belongs_to_the_client_id_not_the_object() -> None:
    """A restarted process (new bus, same client id) gets what was queued for the old one."""
    broker = MemoryBroker()
    first = started(broker, "node")
    collect(first, "t")
    first.stop()
    started(broker, "pub").publish("t", b"while away")
    second = MemoryBus(broker, "node")
    got = collect(second, "t")
    second.start()
    assert got == [("t", b"while away")]


def test_qos0_subscription_downgrades_and_is_not_queued() -> None:
    broker = MemoryBroker()
    sub = started(broker, "sub")
    got = collect(sub, "book", qos=0)
    sub.stop()
    started(broker, "pub").publish("book", b"snapshot")
    sub.start()
    assert got == []


def test_publish_while_disconnected_is_sent_and_acked_on_start() -> None:
    broker = MemoryBroker()
    got = collect(started(broker, "sub"), "t")
    pub = MemoryBus(broker, "pub")
    acks: list[str] = []
    pub.publish("t", b"queued", on_ack=lambda: acks.append("queued"))
    pub.publish("t", b"dropped", qos=0, on_ack=lambda: acks.append("dropped"))
    assert got == [] and acks == []
    pub.start()
    assert got == [("t", b"queued")] and acks == ["queued"]


def test_last_will_on_crash_but_not_on_stop() -> None:
    broker = MemoryBroker()
    watcher = started(broker, "dashboard")
    status = collect(watcher, "peerwatt/oak/status/+")
    will = ("peerwatt/oak/status/m1", b"offline", True)
    agent = started(broker, "agent-m1", will=will)
    agent.publish("peerwatt/oak/status/m1", b"online", retain=True)
    agent.stop()
    assert status == [("peerwatt/oak/status/m1", b"online")]
    agent.start()
    agent.crash()
    assert status[-1] == ("peerwatt/oak/status/m1", b"offline")
    assert broker.retained() == {"peerwatt/oak/status/m1": b"offline"}
    assert not agent.connected


def test_connection_changes_are_reported() -> None:
    broker = MemoryBroker()
    changes: list[bool] = []
    bus = MemoryBus(broker, "c", on_connection_change=changes.append)
    bus.start()
    bus.start()  # idempotent
    bus.crash()
    bus.start()
    bus.stop()
    assert changes == [True, False, True, False]


def test_takeover_by_same_client_id_disconnects_the_old_bus_with_its_will() -> None:
    broker = MemoryBroker()
    watcher_got = collect(started(broker, "w"), "will")
    old_changes: list[bool] = []
    old = started(broker, "dup", will=("will", b"gone", False), on_connection_change=old_changes.append)
    started(broker, "dup")
    assert not old.connected and old_changes == [True, False]
    assert watcher_got == [("will", b"gone")]


def test_reentrant_publish_from_handler_is_queued_not_recursive() -> None:
    """A handler that publishes to its own topic drains iteratively, in order, boundedly."""
    broker = MemoryBroker()
    bus = started(broker, "echo")
    seen: list[int] = []
    depth = 0
    max_depth = 0

    def bounce(topic: str, payload: bytes) -> None:
        nonlocal depth, max_depth
        depth += 1
        max_depth = max(max_depth, depth)
        n = int(payload)
        seen.append(n)
        if n < 2000:  # far deeper than Python's recursion limit if it recursed
            bus.publish("ping", b"%d" % (n + 1))
        depth -= 1

    bus.subscribe("ping", bounce)
    bus.publish("ping", b"0")
    assert seen == list(range(2001))
    assert max_depth == 1


def test_handler_exception_propagates_and_broker_keeps_working() -> None:
    broker = MemoryBroker()
    bus = started(broker, "c")
    good: list[bytes] = []

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("handler bug")
        good.append(payload)

    bus.subscribe("t", handler)
    with pytest.raises(RuntimeError, match="handler bug"):
        bus.publish("t", b"bad")
    bus.publish("t", b"ok")
    assert good == [b"ok"]


def test_messages_queued_for_a_client_that_leaves_mid_drain_stay_in_order() -> None:
    broker = MemoryBroker(auto_drain=False)
    sub = started(broker, "sub")
    got = collect(sub, "t")
    pub = started(broker, "pub")
    for i in range(3):
        pub.publish("t", b"%d" % i)
    sub.stop()  # before the queue ran: the three go to the session, in order
    pub.publish("t", b"3")
    sub.start()
    broker.drain()
    assert [p for _t, p in got] == [b"0", b"1", b"2", b"3"]


def test_publishes_from_many_threads_are_all_delivered_without_a_manual_drain() -> None:
    broker = MemoryBroker()
    got = collect(started(broker, "sub"), "t")
    pub = started(broker, "pub")
    threads = [threading.Thread(target=pub.publish, args=("t", b"%d" % i)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert broker.pending == 0
    assert sorted(int(p) for _t, p in got) == list(range(50))


@pytest.mark.parametrize(
    ("topic", "payload", "qos", "error"),
    [
        ("a/+", b"x", 1, ValueError),
        ("", b"x", 1, ValueError),
        ("a", b"x", 2, ValueError),
        ("a", "text", 1, TypeError),
    ],
)
def test_bad_publish_arguments(topic: str, payload: bytes, qos: int, error: type[Exception]) -> None:
    bus = started(MemoryBroker(), "c")
    with pytest.raises(error):
        bus.publish(topic, payload, qos=qos)


def test_bad_subscribe_and_client_id() -> None:
    bus = started(MemoryBroker(), "c")
    with pytest.raises(ValueError):
        bus.subscribe("a/#/b", lambda t, p: None)
    with pytest.raises(ValueError):
        MemoryBus(MemoryBroker(), "")
    with pytest.raises(ValueError):
        MemoryBus(MemoryBroker(), "c", will=("a/#", b"x", False))
