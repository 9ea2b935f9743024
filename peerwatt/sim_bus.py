"""The message exchange of a `peerwatt simulate` study: bulk-synchronous, deterministic.

A study's clients (nodes and agents) live in hosts (peerwatt/sim_host.py), each host in the
coordinator's process or in a worker process. Nothing is delivered inside a host: every message
goes through the coordinator, in supersteps.

- In a host, each client has a :class:`RelayBus`. ``publish`` only records the message (with the
  host's :class:`HostExchange`); the host hands what its clients published to the coordinator at
  the end of a superstep.
- The coordinator's :class:`Router` orders everything published in a superstep by the publishing
  client (its place in the study's fixed list of clients), then by publish order, and routes each
  message to the clients whose subscriptions match (MQTT rules, peerwatt/bus/topics.py), in that
  list's order. Each host gets its clients' deliveries in the next superstep.

A client's inputs (its deliveries, in order, per superstep) therefore do not depend on which
host or process it lives in, nor on how the clients are grouped into hosts: the outcome of a
study depends on its options only.

MQTT semantics kept: retained messages (an empty retained payload deletes; delivered to a new
subscription), one delivery per client and message to every matching handler of its bus, QoS 1
acknowledgements. Every client stays connected for the whole study, so nothing is queued for
offline clients, QoS 0 is never dropped, and there are no last wills. An ``on_ack`` fires when the
coordinator has routed the message (MQTT's meaning of an acknowledgement: the broker has it): in
its publisher's host, at the start of the next superstep, in publish order, before that
superstep's deliveries.
"""

from __future__ import annotations

from collections.abc import Iterable

from peerwatt.bus.interface import AckCallback, Handler, check_client_id, check_publish_args
from peerwatt.bus.topics import check_pattern, topic_matches

# (plain tuples: they cross the pipes to the workers, pickled, by the ten thousand)
Published = tuple[str, str, bytes, int, bool]  # publishing client, topic, payload, QoS, retain
Delivery = tuple[str, str, bytes]  # receiving client, topic, payload


class RelayBus:
    """One client's bus in a host (the :class:`peerwatt.bus.Bus` interface): publishing records
    the message for the coordinator, subscriptions are reported to it, and the host calls the
    handlers with what the coordinator routed here (see the module docstring)."""

    def __init__(self, exchange: HostExchange, client_id: str) -> None:
        self._exchange = exchange
        self.client_id = check_client_id(client_id)
        self._connected = False
        self._subscriptions: list[tuple[str, Handler]] = []
        self._handlers: dict[str, list[Handler]] = {}  # topic -> matching handlers (cache)
        self._unsent: list[tuple[str, bytes, int, bool, AckCallback | None]] = []

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float) -> bool:
        return self._connected

    def wait_subscribed(self, timeout: float) -> bool:
        return self._connected  # the coordinator routes by the subscriptions reported before

    def start(self) -> None:
        if self._connected:
            return
        self._connected = True
        unsent, self._unsent = self._unsent, []
        for topic, payload, qos, retain, on_ack in unsent:
            self._exchange._publish(self.client_id, topic, payload, qos, retain, on_ack)

    def stop(self) -> None:
        self._connected = False

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
        if not self._connected:
            if qos >= 1:  # like a disconnected MQTT client: QoS 1 waits for start(), QoS 0 is lost
                self._unsent.append((topic, payload, qos, retain, on_ack))
            return
        self._exchange._publish(self.client_id, topic, payload, qos, bool(retain), on_ack)

    def subscribe(
        self, pattern: str, handler: Handler, *, qos: int = 1, retained_always: bool = False
    ) -> None:
        """As Bus.subscribe; ``retained_always`` changes nothing here: a study's clients never
        reconnect."""
        check_pattern(pattern)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
        self._subscriptions.append((pattern, handler))
        self._handlers.clear()
        self._exchange._subscribed.append((self.client_id, pattern))

    def _deliver(self, topic: str, payload: bytes) -> None:
        handlers = self._handlers.get(topic)
        if handlers is None:
            handlers = [h for pattern, h in self._subscriptions if topic_matches(pattern, topic)]
            if len(self._handlers) >= 10_000:
                self._handlers.clear()
            self._handlers[topic] = handlers
        for handler in handlers:
            handler(topic, payload)


class HostExchange:
    """A host's side of the exchange: its clients' buses, what they published and subscribed
    since the last superstep, and the acknowledgements still to fire."""

    def __init__(self) -> None:
        self._buses: dict[str, RelayBus] = {}
        self._published: list[Published] = []
        self._subscribed: list[tuple[str, str]] = []
        self._acks: list[AckCallback] = []  # of messages not taken yet
        self._routed_acks: list[AckCallback] = []  # of messages taken (routed before the next step)

    def bus(self, client_id: str) -> RelayBus:
        if client_id in self._buses:
            raise ValueError(f"client id {client_id!r} is taken")
        bus = self._buses[client_id] = RelayBus(self, client_id)
        return bus

    def _publish(
        self, client: str, topic: str, payload: bytes, qos: int, retain: bool, on_ack: AckCallback | None
    ) -> None:
        self._published.append((client, topic, payload, qos, retain))
        if on_ack is not None:
            self._acks.append(on_ack)

    def routed(self) -> None:
        """The coordinator routed everything :meth:`take` gave it: fire those messages'
        acknowledgements, in publish order (what was published since stays unacknowledged)."""
        acks, self._routed_acks = self._routed_acks, []
        for on_ack in acks:
            on_ack()

    def deliver(self, deliveries: Iterable[Delivery]) -> int:
        """Call the handlers of the routed messages, in order; returns how many there were."""
        count = 0
        buses = self._buses
        for client, topic, payload in deliveries:
            buses[client]._deliver(topic, payload)
            count += 1
        return count

    def take(self) -> tuple[list[Published], list[tuple[str, str]]]:
        """What the clients published and subscribed since the last call (for the coordinator)."""
        published, self._published = self._published, []
        subscribed, self._subscribed = self._subscribed, []
        self._routed_acks.extend(self._acks)
        self._acks = []
        return published, subscribed


class Router:
    """The coordinator's broker: routes a superstep's messages in a fixed order (see the module
    docstring); ``clients`` is the study's list of client ids in that order."""

    def __init__(self, clients: list[str]) -> None:
        self._rank = {client: i for i, client in enumerate(clients)}
        if len(self._rank) != len(clients):
            raise ValueError("client ids must be unique")
        self._subscriptions: dict[str, list[str]] = {}  # client -> patterns
        self._retained: dict[str, bytes] = {}
        self._routes: dict[str, list[str]] = {}  # topic -> subscribed clients in rank order
        self.messages = 0  # routed so far (each once, whatever the number of receivers)
        self.deliveries = 0

    def route(self, published: list[Published], subscribed: list[tuple[str, str]]) -> list[Delivery]:
        """The deliveries of one superstep: first the retained messages for new subscriptions,
        then ``published`` in order of publishing client (stable: each client's own order kept)."""
        out: list[Delivery] = []
        for client, pattern in sorted(subscribed, key=lambda s: self._rank[s[0]]):
            patterns = self._subscriptions.setdefault(client, [])
            if pattern in patterns:
                continue
            patterns.append(pattern)
            self._routes.clear()
            for topic, payload in self._retained.items():  # MQTT 5 "send retained if new"
                if topic_matches(pattern, topic):
                    out.append((client, topic, payload))
        rank = self._rank
        for _client, topic, payload, _qos, retain in sorted(published, key=lambda p: rank[p[0]]):
            if retain:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)
            targets = self._routes.get(topic)
            if targets is None:
                targets = sorted(
                    (
                        c
                        for c, patterns in self._subscriptions.items()
                        if any(topic_matches(p, topic) for p in patterns)
                    ),
                    key=rank.__getitem__,
                )
                if len(self._routes) >= 10_000:
                    self._routes.clear()
                self._routes[topic] = targets
            out.extend((target, topic, payload) for target in targets)
        self.messages += len(published)
        self.deliveries += len(out)
        return out
