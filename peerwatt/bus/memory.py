"""The in-memory transport for tests: :class:`MemoryBroker` keeps Mosquitto's semantics (wildcards,
retained messages, persistent sessions, last wills, QoS 1 acknowledgements, session takeover)
in process and deterministically; :class:`MemoryBus` is a client of it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

from peerwatt.bus.interface import (
    AckCallback,
    ConnectionCallback,
    Handler,
    Will,
    _check_will,
    check_client_id,
    check_publish_args,
)
from peerwatt.bus.topics import check_pattern, topic_matches


class _Delivery(NamedTuple):
    client_id: str
    topic: str
    payload: bytes
    qos: int


class _Session:
    __slots__ = ("subscriptions", "offline")

    def __init__(self) -> None:
        self.subscriptions: dict[str, int] = {}  # pattern -> granted QoS
        self.offline: deque[_Delivery] = deque()  # QoS 1 messages waiting for the client


class MemoryBroker:
    """An in-process MQTT broker for tests: same semantics as Mosquitto, deterministic.

    Wildcards, retained messages (an empty retained payload deletes), persistent sessions (a
    stopped or crashed client keeps its subscriptions and gets its QoS 1 messages, in order,
    when it starts again), last wills, QoS 1 acknowledgements and session takeover (a second bus
    with a connected client id takes over; the old one is disconnected and its will published).

    Delivery: every message, ack and will goes through one FIFO queue; ``drain()`` runs it until
    empty. With ``auto_drain=True`` (default) ``publish``/``start``/``subscribe``/``crash`` drain
    before returning, so tests are synchronous: when ``publish()`` returns, every handler has run
    and ``on_ack`` has fired. A handler that publishes only enqueues (the running drain delivers
    it next), so re-entrancy never recurses. With ``auto_drain=False`` nothing is delivered until
    the test calls ``drain()``. Handlers run on the draining thread without the broker's lock;
    an exception from a handler propagates out of ``drain()`` (and so out of ``publish()``):
    tests see it. Messages are delivered once per client, to every matching handler of its bus.
    """

    def __init__(self, *, auto_drain: bool = True) -> None:
        self.auto_drain = auto_drain
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        self._online: dict[str, MemoryBus] = {}
        self._retained: dict[str, bytes] = {}
        self._route_cache: dict[str, list[tuple[str, int]]] = {}
        self._events: deque[_Delivery | AckCallback] = deque()
        self._draining = False

    def drain(self) -> int:
        """Deliver everything pending (messages, acks, wills); return how many were processed.

        Called from inside a handler (or while another thread drains) it returns 0 at once: the
        running drain delivers what was queued.
        """
        with self._lock:
            if self._draining:
                return 0
            self._draining = True
        processed = 0
        try:
            while True:
                with self._lock:
                    if not self._events:
                        # Cleared under the same lock as the emptiness check: an event queued
                        # by another thread from now on finds no drain running and drains itself.
                        self._draining = False
                        return processed
                    event = self._events.popleft()
                    if isinstance(event, _Delivery):
                        bus = self._online.get(event.client_id)
                        if bus is None:  # went offline after this was queued
                            self._keep_for_later(event)
                            continue
                        handlers = bus._handlers_for(event.topic)
                processed += 1
                if isinstance(event, _Delivery):
                    for handler in handlers:
                        handler(event.topic, event.payload)
                else:
                    event()
        except BaseException:
            with self._lock:
                self._draining = False
            raise

    @property
    def pending(self) -> int:
        """Number of queued events not yet delivered."""
        with self._lock:
            return len(self._events)

    def retained(self) -> dict[str, bytes]:
        """A copy of the retained messages by topic."""
        with self._lock:
            return dict(self._retained)

    def queued_for(self, client_id: str) -> int:
        """How many QoS 1 messages wait for an offline client id."""
        with self._lock:
            session = self._sessions.get(client_id)
            return len(session.offline) if session else 0

    # -- called by MemoryBus (under self._lock) ----------------------------------------------

    def _connect_locked(self, bus: MemoryBus) -> MemoryBus | None:
        previous = self._online.get(bus.client_id)
        if previous is bus:
            return None
        if previous is not None:
            self._disconnect_locked(previous, send_will=True)
        if bus.client_id not in self._sessions:
            self._route_cache.clear()
        session = self._sessions.setdefault(bus.client_id, _Session())
        self._online[bus.client_id] = bus
        # Published before anything still in the queue: they go first, in order.
        self._events.extendleft(reversed(session.offline))
        session.offline.clear()
        for pattern, qos in bus._patterns().items():
            self._subscribe_locked(bus.client_id, pattern, qos, pattern in bus._retained_always)
        return previous

    def _disconnect_locked(self, bus: MemoryBus, *, send_will: bool) -> None:
        if self._online.get(bus.client_id) is not bus:
            return
        del self._online[bus.client_id]
        bus._connected = False
        waiting = [e for e in self._events if isinstance(e, _Delivery) and e.client_id == bus.client_id]
        if waiting:
            self._events = deque(
                e for e in self._events if not (isinstance(e, _Delivery) and e.client_id == bus.client_id)
            )
            for delivery in waiting:
                self._keep_for_later(delivery)
        if send_will and bus._will is not None:
            topic, payload, retain = bus._will
            self._route_locked(topic, payload, 1, retain)

    def _keep_for_later(self, delivery: _Delivery) -> None:
        session = self._sessions.get(delivery.client_id)
        if session is not None and delivery.qos >= 1:
            session.offline.append(delivery)

    def _subscribe_locked(self, client_id: str, pattern: str, qos: int, always: bool = False) -> None:
        session = self._sessions[client_id]
        is_new = pattern not in session.subscriptions
        session.subscriptions[pattern] = max(qos, session.subscriptions.get(pattern, 0))
        self._route_cache.clear()
        if is_new or always:  # MQTT 5 retain handling "send if new subscription", or "send"
            for topic, payload in self._retained.items():
                if topic_matches(pattern, topic):
                    self._events.append(_Delivery(client_id, topic, payload, qos))

    def _route_locked(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
        targets = self._route_cache.get(topic)
        if targets is None:  # who subscribed to this topic, with which QoS (cached until it changes)
            targets = []
            for client_id, session in self._sessions.items():
                granted = [q for p, q in session.subscriptions.items() if topic_matches(p, topic)]
                if granted:
                    targets.append((client_id, max(granted)))
            if len(self._route_cache) >= 10_000:
                self._route_cache.clear()
            self._route_cache[topic] = targets
        for client_id, granted_qos in targets:
            delivery = _Delivery(client_id, topic, payload, min(qos, granted_qos))
            if client_id in self._online:
                self._events.append(delivery)
            else:
                self._keep_for_later(delivery)


class MemoryBus:
    """The bus on a :class:`MemoryBroker` (same constructor shape as :class:`MqttBus`).

    ``crash()`` simulates an abrupt disconnect (network cut or dead process): the broker publishes
    the last will; ``start()`` reconnects. ``stop()`` is the clean disconnect (no will). In both
    cases the session (subscriptions, queued QoS 1 messages) stays at the broker, and QoS 1
    messages published while disconnected stay in this bus and are sent on the next ``start()``.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        *,
        will: Will | None = None,
        on_connection_change: ConnectionCallback | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = check_client_id(client_id)
        self._will = _check_will(will)
        self._on_connection_change = on_connection_change
        self._connected = False
        self._subscriptions: list[tuple[str, int, Handler]] = []
        self._retained_always: set[str] = set()  # patterns whose retained messages come at every connect
        self._unsent: deque[tuple[str, bytes, int, bool, AckCallback | None]] = deque()

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float) -> bool:
        return self._connected

    def wait_subscribed(self, timeout: float) -> bool:
        return self._connected  # subscriptions take effect at once

    def start(self) -> None:
        broker = self.broker
        with broker._lock:
            if self._connected:
                return
            taken_over = broker._connect_locked(self)
            self._connected = True
            unsent = list(self._unsent)
            self._unsent.clear()
        if taken_over is not None:
            taken_over._notify(False)
        self._notify(True)
        for topic, payload, qos, retain, on_ack in unsent:
            self._send(topic, payload, qos, retain, on_ack)
        self._auto_drain()

    def stop(self) -> None:
        self._disconnect(send_will=False)

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the last will."""
        self._disconnect(send_will=True)
        self._auto_drain()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
    ) -> None:
        payload = check_publish_args(topic, payload, qos)
        self._send(topic, payload, qos, retain, on_ack)
        self._auto_drain()

    def subscribe(
        self, pattern: str, handler: Handler, *, qos: int = 1, retained_always: bool = False
    ) -> None:
        check_pattern(pattern)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
        with self.broker._lock:
            if retained_always:
                self._retained_always.add(pattern)
            self._subscriptions.append((pattern, qos, handler))
            if self._connected:
                self.broker._subscribe_locked(self.client_id, pattern, qos, retained_always)
        self._auto_drain()

    # -- internals ----------------------------------------------------------------------------

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool, on_ack: AckCallback | None) -> None:
        broker = self.broker
        with broker._lock:
            if not self._connected:
                if qos >= 1:
                    self._unsent.append((topic, payload, qos, retain, on_ack))
                return
            broker._route_locked(topic, payload, qos, retain)
            if on_ack is not None:
                broker._events.append(on_ack)

    def _disconnect(self, *, send_will: bool) -> None:
        with self.broker._lock:
            if not self._connected:
                return
            self.broker._disconnect_locked(self, send_will=send_will)
        self._notify(False)

    def _auto_drain(self) -> None:
        if self.broker.auto_drain:
            self.broker.drain()

    def _patterns(self) -> dict[str, int]:
        wanted: dict[str, int] = {}
        for pattern, qos, _handler in self._subscriptions:
            wanted[pattern] = max(qos, wanted.get(pattern, 0))
        return wanted

    def _handlers_for(self, topic: str) -> list[Handler]:
        return [h for pattern, _q, h in self._subscriptions if topic_matches(pattern, topic)]

    def _notify(self, connected: bool) -> None:
        if self._on_connection_change is not None:
            self._on_connection_change(connected)
