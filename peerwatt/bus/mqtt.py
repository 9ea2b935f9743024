"""The bus over a real MQTT broker: :class:`MqttBus`, paho-mqtt 2 with its network loop in a
thread, the MQTT 5 -> 3.1.1 protocol probe, persistent sessions, reconnects with backoff and
acknowledgements for the durable outbox.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from peerwatt.bus.config import BrokerConfig, _describe
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

# One logger for the whole bus, named as before the bus became a package (log filters use it).
log = logging.getLogger("peerwatt.bus")

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
READ_CHUNK = 65536  # bytes taken from the socket at once (paho asks for 1 byte, then the rest)
READ_BATCH = 1000  # packets handled per wake-up of the network loop before it writes again
# Two clients with one client id (a copied agent folder beside the real one: the same certificate,
# so the same account and client id) push each other off the broker, each as the other
# reconnects, every second or so. A connection lost within TAKEOVER_SHORT_S of being accepted,
# TAKEOVER_REPEATS times in a row, fits that pattern: said once, and the lost and regained
# connections are no longer logged one by one (found in a QA pass: two lines a second, forever,
# and nothing said that another agent with this account ran); one line every TAKEOVER_LOG_EVERY_S
# counts them while it lasts, and one says when a connection holds again. The timing alone is a
# guess: a network that keeps dropping one client's connections looks the same (found in a later
# QA pass), so that line names both and the last reason. Certain is only an MQTT 5 broker's
# DISCONNECT "Session taken over" (_SESSION_TAKEN_OVER; Mosquitto sends it from 2.0.15 on, to
# MQTT 5 clients), said at once.
TAKEOVER_SHORT_S = 10.0
TAKEOVER_REPEATS = 3
TAKEOVER_LOG_EVERY_S = 600.0
_SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code: another client took this client id
_SUBSCRIPTION_IDENTIFIER = 0x0B  # the MQTT 5 property every message to a bus subscription carries


class _SubscriptionIds:
    """The properties of a PUBLISH that carried only subscription identifiers (what the bus reads)."""

    __slots__ = ("SubscriptionIdentifier",)

    def __init__(self, ids: list[int]) -> None:
        self.SubscriptionIdentifier = ids


def publish_packet_bytes(topic: str, payload_bytes: int, qos: int) -> int:
    """The size of an MQTT 5 PUBLISH of ``payload_bytes`` to ``topic`` without properties, as a
    broker's Maximum Packet Size counts it (the whole packet: fixed header included)."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + payload_bytes
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """An MQTT variable byte integer at ``pos``: (value, position after it), None if malformed."""
    value, shift = 0, 0
    for _ in range(4):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def parse_publish_v5(packet: bytes, qos: int) -> tuple[bytes, int, list[int], bytes] | None:
    """(topic, mid, subscription ids, payload) of an MQTT 5 PUBLISH body (after the fixed header)
    whose properties are only subscription identifiers; None for anything else (other properties,
    such as a topic alias, or a malformed packet), which paho's own decoder then handles."""
    end = len(packet)
    if end < 2:
        return None
    pos = 2 + int.from_bytes(packet[0:2], "big")
    if pos > end:
        return None
    topic = bytes(packet[2:pos])
    mid = 0
    if qos:
        if pos + 2 > end:
            return None
        mid = int.from_bytes(packet[pos : pos + 2], "big")
        pos += 2
    length = _varint(packet, pos)
    if length is None or length[1] + length[0] > end:
        return None
    props_end = length[1] + length[0]
    pos = length[1]
    ids = []
    while pos < props_end:
        if packet[pos] != _SUBSCRIPTION_IDENTIFIER:
            return None
        value = _varint(packet, pos + 1)
        if value is None or value[1] > props_end:
            return None
        ids.append(value[0])
        pos = value[1]
    return topic, mid, ids, bytes(packet[props_end:])


def subscription_id(pattern: str) -> int:
    """The MQTT 5 subscription identifier of a pattern (1 .. 2^28-1), the same in every process.

    Stable ids matter: messages queued in a persistent session carry the id given by the process
    that subscribed, and are delivered to the process that resumes the session.
    """
    digest = hashlib.sha256(pattern.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % (2**28 - 1) + 1


PROTOCOL_CHOICES = ("auto", "5", "3.1.1")
_UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK "Unsupported protocol version" (3.1.1 code 1)


def _hint(reason_code: ReasonCode) -> str:
    """What a refusal in a PUBACK may mean, for its log line ("" when nothing is known)."""
    if reason_code == "Not authorized":
        return (
            " (the broker's ACL gives this account no right to publish on that topic; an ACL an "
            'older peerwatt wrote lacks rights a newer one needs: docs/operations.md, "Updating '
            'peerwatt")'
        )
    return ""


def _session_taken_over(flags: mqtt.DisconnectFlags, reason_code: ReasonCode) -> bool:
    """The broker said, in an MQTT 5 DISCONNECT, that another client connected with this client id
    (paho hands the DISCONNECT's reason code to on_disconnect, flagged as from the server)."""
    return bool(flags.is_disconnect_packet_from_server) and getattr(reason_code, "value", None) == (
        _SESSION_TAKEN_OVER
    )


def _why_disconnected(flags: mqtt.DisconnectFlags, reason_code: ReasonCode) -> str:
    """Why an established connection ended, in words for the log line. A broker that stops (or a
    network that fails) just closes the socket, which paho reports as "Unspecified error"; so does
    Mosquitto before 2.0.15 when a second client takes the client id. An MQTT 5 broker that hangs up on
    purpose may say why in a DISCONNECT packet."""
    if flags.is_disconnect_packet_from_server:
        if reason_code == "Session taken over":
            return (
                "the broker says: Session taken over: another client connected with this client "
                "id; is this program running twice?"
            )
        return f"the broker says: {reason_code}"
    if reason_code == "Unspecified error":
        return (
            "the connection closed: the broker stopped or restarted, the network failed, or "
            "another client connected with this client id"
        )
    return str(reason_code)


class _PahoClient(mqtt.Client):
    """paho's client, keeping why the last connection attempt failed (``last_connect_error``).

    paho reports a failed attempt through ``on_connect_fail`` without saying why; the reason is
    what the user needs to read ("connection refused", "certificate verify failed"). It also
    closes the loop's wake-up sockets on ``loop_stop`` (paho leaks them on a stop/start cycle).

    Reading: paho takes a packet from the socket in three or more ``recv`` calls (the command
    byte, each byte of the length, the rest) and handles one or a few packets per wake-up of its
    loop. This client takes up to READ_CHUNK bytes per ``recv`` and serves paho's small reads
    from them, and handles every packet that has arrived (up to READ_BATCH) in one wake-up,
    always ending with nothing buffered (so the loop's ``select`` sees every byte not yet read).
    After each such batch it calls ``after_read`` (the bus's deferred acknowledgements).

    An MQTT 5 PUBLISH whose only properties are subscription identifiers (every message to a
    bus subscription) is decoded by ``parse_publish_v5`` instead of paho's general property
    decoder, which built a Properties object field by field for each message.
    """

    last_connect_error = "unknown error"
    after_read: Callable[[], None] | None = None

    def __init__(self, *args, **kwargs) -> None:
        self._rbuf = b""  # bytes received and not yet handed to paho
        self._rbuf_sock: object | None = None  # the socket they came from
        self._socket_done = False  # this batch is full: hand over what is buffered, read no more
        super().__init__(*args, **kwargs)

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf, self._rbuf_sock = b"", None
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = _describe(exc)
            raise

    def loop_stop(self) -> MQTTErrorCode:
        rc = super().loop_stop()
        if self._thread is None:
            # loop_start() creates a new wake-up socket pair without closing the previous one:
            # close it once the loop thread is gone, so a stop/start cycle leaks no socket.
            self._reset_sockets(sockpair_only=True)
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rbuf_sock is not self._sock:  # a new connection: nothing old may leak into it
            self._rbuf, self._rbuf_sock = b"", self._sock
        if not self._rbuf:
            if self._socket_done:  # as if nothing had arrived: select() sees it next time
                raise BlockingIOError()
            data = super()._sock_recv(max(bufsize, READ_CHUNK))
            if len(data) <= bufsize:
                return data  # everything (or b"": the connection closed)
            self._rbuf = data
        data, self._rbuf = self._rbuf[:bufsize], self._rbuf[bufsize:]
        return data

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if self._protocol != MQTTProtocolVersion.MQTTv5 or qos > 1:
            return super()._handle_publish()
        parsed = parse_publish_v5(self._in_packet["packet"], qos)
        if parsed is None:
            return super()._handle_publish()
        topic, mid, ids, payload = parsed
        message = mqtt.MQTTMessage(mid=mid, topic=topic)
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.properties = _SubscriptionIds(ids) if ids else None
        message.payload = payload
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == 0 or self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(mid)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle the packets that have arrived: until the socket has no more (paho's
        MQTT_ERR_AGAIN; a packet cut short waits in paho's state for its rest), or, once
        READ_BATCH were handled, until the buffered bytes are used up."""
        self._socket_done = False
        try:
            handled = 0
            while True:
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                handled += 1
                if handled >= max(max_packets, READ_BATCH):
                    self._socket_done = True
        finally:
            self._socket_done = False
            if self.after_read is not None:
                self.after_read()


class MqttBus:
    """The bus over a real MQTT broker, with paho-mqtt 2 running its network loop in a thread.

    - MQTT 5 when the broker speaks it, else 3.1.1 (``protocol="auto"``: MQTT 5 is tried first;
      when the broker refuses that protocol version, or does not answer the MQTT 5 CONNECT
      within ``probe_timeout_s``, the bus continues with 3.1.1). ``protocol="5"`` or ``"3.1.1"``
      skips the probe.
    - Persistent session: MQTT 5 clean_start=False with a session expiry interval
      (``config.session_expiry_s``, 1 day by default); MQTT 3.1.1 clean_session=False.
    - Reconnects forever with exponential backoff (1 s doubling to 30 s) and re-subscribes on
      every connect. An unreachable broker is reported as one line in ``last_error`` and logged
      once per distinct cause.
    - Messages published before the first connection are kept by the bus itself (the protocol
      version is not known yet); later QoS 1 messages are queued by paho while disconnected
      (no limit) and re-sent after reconnecting; ``on_ack`` fires when the broker acknowledged.
    - Each handler gets a message once even when several of the bus's patterns match it: on
      MQTT 5 the broker sends one copy per subscription and each copy's subscription identifier
      (see ``subscription_id``) selects the handlers it is for.

    - Acknowledgements of received QoS 1 messages: sent when the handlers returned; after
      ``defer_acks(barrier)``, sent for all the messages read in one go after their handlers
      returned and ``barrier()`` ran once (a node makes its handlers' writes durable there in one
      transaction instead of one per message).

    Handlers, ``on_ack`` and ``on_connection_change`` run on paho's network thread: they must be
    quick and thread-safe (hand heavy work to a queue). They may call ``publish`` and
    ``subscribe``. Exceptions they raise are logged, never propagated into the network loop.
    """

    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        *,
        will: Will | None = None,
        on_connection_change: ConnectionCallback | None = None,
        protocol: str = "auto",
        probe_timeout_s: float = 5.0,
    ) -> None:
        if protocol not in PROTOCOL_CHOICES:
            raise ValueError(f"MQTT protocol must be one of {', '.join(PROTOCOL_CHOICES)}")
        if not probe_timeout_s > 0:
            raise ValueError(f"probe_timeout_s must be positive, not {probe_timeout_s!r}")
        self.config = config
        self.client_id = check_client_id(client_id)
        self._will = _check_will(will)
        self._on_connection_change = on_connection_change
        self._auto_protocol = protocol == "auto"
        self._probe_timeout_s = probe_timeout_s
        self._probe_timer: threading.Timer | None = None
        self._probe_attempt: object | None = None  # the connection attempt the timer watches
        self._connack_seen = False  # this connection attempt got a CONNACK (accepted or refused)
        self._protocol = MQTTProtocolVersion.MQTTv311 if protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self._ssl_context = config.ssl_context() if config.tls else None

        # defer_acks: the barrier, and the (client, mid, qos) of messages read, not yet acknowledged
        self._ack_barrier: Callable[[], None] | None = None
        self._unacked: list[tuple[mqtt.Client, int, int]] = []

        self._client_lock = threading.Lock()  # guards _client and _running; never held in paho
        self._running = False
        self._client = self._new_client()

        self._subs_lock = threading.Lock()
        self._subscriptions: list[tuple[str, int, Handler]] = []
        self._retained_always: set[str] = set()  # patterns whose retained messages come at every connect
        self._sub_ids: list[tuple[str, int, Handler]] = []  # (pattern, subscription_id, handler)

        # Until the first successful connection the protocol version is unknown, so messages wait
        # here instead of in a paho client that may still be replaced by a 3.1.1 one.
        self._early_lock = threading.RLock()  # RLock: an on_ack may publish during the flush
        self._protocol_decided = False
        self._early_messages: list[tuple[str, bytes, int, bool, AckCallback | None]] = []

        # mid -> on_ack of messages handed to paho and not yet acknowledged. paho may report the
        # ack before publish() returns the mid, so such acks wait in _acked_early.
        self._acks = threading.Condition()
        self._pending_acks: dict[int, tuple[AckCallback | None, int, str]] = {}  # mid -> on_ack, qos, topic
        self._acked_early: dict[int, bool] = {}

        # SUBSCRIBEs of this connection the broker has not answered yet: mid -> patterns (a SUBACK
        # may come before subscribe() returns the mid: such mids wait in _subacked_early)
        self._suback_lock = threading.Lock()
        self._awaiting_suback: dict[int, list[str]] = {}
        self._subacked_early: dict[int, list[ReasonCode]] = {}
        self._subscribed = threading.Event()

        self._connected = threading.Event()
        self._error_lock = threading.Lock()
        self._last_error: str | None = None
        self._ever_connected = False  # the first connection is "connected", later ones "again"
        # the take-over pattern (TAKEOVER_SHORT_S): when the current connection was accepted,
        # how many in a row were lost within TAKEOVER_SHORT_S, and while the pattern lasts its
        # line, whether the broker said so (else it is a guess from the timing), when it was last
        # logged, the connections lost since, and the timer that says a connection held
        self._connected_at: float | None = None
        self._short_lived = 0
        self._contested: str | None = None
        self._contested_certain = False
        self._contested_logged_at = 0.0
        self._taken_over = 0
        self._hold_timer: threading.Timer | None = None
        # the broker's Maximum Packet Size from its MQTT 5 CONNACK (None: it named none, or 3.1.1)
        self._max_packet_bytes: int | None = None
        self._too_large_topics: set[str] = set()  # logged once each

    # -- public interface ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str | None:
        """Why the bus is not connected (one line), or None."""
        return self._last_error

    @property
    def protocol(self) -> str | None:
        """The MQTT version in use once connected: "5" or "3.1.1" (None before that)."""
        if not self._protocol_decided:
            return None
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection; True when connected."""
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until connected and the broker has answered every
        subscription (its SUBACKs): a message published after that reaches this bus's handlers.
        A subscription the broker refused is logged; it counts as answered."""
        deadline = time.monotonic() + timeout
        while self._connected.wait(max(deadline - time.monotonic(), 0)):
            if self._subscribed.wait(max(deadline - time.monotonic(), 0)) and self.connected:
                return True
            if time.monotonic() >= deadline:
                break
        return False

    def start(self) -> None:
        """Connect in the background (returns at once; see ``wait_connected``)."""
        with self._client_lock:
            if self._running:
                return
            self._running = True
            client = self._client
        self._connect(client)

    def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Disconnect cleanly (no last will); the broker keeps the session.

        While connected, first waits up to ``flush_timeout_s`` for outstanding acknowledgements.
        Unacknowledged messages stay queued in this object and are sent if it is started again.
        """
        with self._client_lock:
            if not self._running:
                return
            self._running = False
            client = self._client
        if self.connected and flush_timeout_s > 0:
            with self._acks:
                self._acks.wait_for(self._nothing_unacked, flush_timeout_s)
        self._cancel_probe_timer()
        client.disconnect()
        client.loop_stop()
        if self._connected.is_set():  # no on_disconnect came (e.g. stopped from a handler)
            self._connected.clear()
            self._notify(False)
        with self._error_lock:
            self._last_error = None
            self._connected_at, self._short_lived, self._contested = None, 0, None
            self._contested_certain = False
            self._cancel_hold_timer()

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
        if not self._protocol_decided:
            with self._early_lock:
                if not self._protocol_decided:
                    if qos == 0:  # never connected yet: QoS 0 is not kept, as in paho
                        log.debug("not connected: QoS 0 message to %s dropped", topic)
                    elif len(self._early_messages) >= self.config.max_queued_messages:
                        self._queue_full(topic)
                    else:
                        self._early_messages.append((topic, payload, qos, retain, on_ack))
                    return
        self._publish_now(self._client, topic, payload, qos, retain, on_ack)

    def defer_acks(self, barrier: Callable[[], None]) -> None:
        """Acknowledge received QoS 1 messages in batches: the messages read from the broker in
        one go are handled one by one, then ``barrier()`` runs once (on the network thread), then
        they are all acknowledged; a message whose batch was cut by a lost connection is not
        acknowledged (the broker sends it again). Call before ``start``."""
        with self._client_lock:
            if self._running:
                raise RuntimeError("defer_acks must be called before start")
            self._ack_barrier = barrier
            client = self._client
        self._arm_acks(client)

    def subscribe(
        self, pattern: str, handler: Handler, *, qos: int = 1, retained_always: bool = False
    ) -> None:
        check_pattern(pattern)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
        with self._subs_lock:
            if retained_always:
                self._retained_always.add(pattern)
            self._subscriptions.append((pattern, qos, handler))
            self._sub_ids = [(p, subscription_id(p), h) for p, _q, h in self._subscriptions]
            granted = max(q for p, q, _h in self._subscriptions if p == pattern)
        if self.connected:
            self._send_subscriptions(self._client, {pattern: granted})

    # -- paho client --------------------------------------------------------------------------

    def _new_client(self) -> _PahoClient:
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            client = _PahoClient(CallbackAPIVersion.VERSION2, self.client_id, protocol=self._protocol)
        else:
            client = _PahoClient(
                CallbackAPIVersion.VERSION2,
                self.client_id,
                clean_session=False,
                protocol=self._protocol,
            )
        client.suppress_exceptions = True  # our callbacks log their own errors; never kill the loop
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        client.max_queued_messages_set(self.config.max_queued_messages)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
        if self._will is not None:
            topic, payload, retain = self._will
            client.will_set(topic, payload, qos=1, retain=retain)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if self._ack_barrier is not None:
            self._arm_acks(client)
        return client

    def _arm_acks(self, client: _PahoClient) -> None:
        client.manual_ack_set(True)
        client.after_read = lambda: self._after_read(client)

    def _connect(self, client: _PahoClient) -> None:
        host, port, keepalive = self.config.host, self.config.port, self.config.keepalive
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            properties = None  # absent means 0: the session ends with the connection
            if self.config.session_expiry_s:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self.config.session_expiry_s
            client.connect_async(host, port, keepalive, clean_start=False, properties=properties)
        else:
            client.connect_async(host, port, keepalive)
        client.loop_start()

    def _probing(self) -> bool:
        return (
            self._auto_protocol
            and not self._protocol_decided
            and self._protocol == MQTTProtocolVersion.MQTTv5
        )

    def _on_pre_connect(self, client: _PahoClient, userdata: object) -> None:
        """Before each connection attempt while probing for MQTT 5: arm the CONNACK watchdog.

        A 3.1.1-only broker may never answer an MQTT 5 CONNECT (amqtt misreads its properties
        and waits for bytes that never come), so no CONNACK in time also means "use 3.1.1".
        """
        self._connack_seen = False
        self._cancel_probe_timer()
        if client is self._client and self._probing():
            self._probe_attempt = attempt = object()
            timer = threading.Timer(self._probe_timeout_s, self._probe_expired, args=(client, attempt))
            timer.daemon = True
            self._probe_timer = timer
            timer.start()

    def _cancel_probe_timer(self) -> None:
        """The attempt ended (CONNACK, refused, or closed): no CONNACK timeout for it."""
        self._probe_attempt = None
        timer, self._probe_timer = self._probe_timer, None
        if timer is not None:
            timer.cancel()

    def _probe_expired(self, client: _PahoClient, attempt: object) -> None:
        if attempt is not self._probe_attempt or client is not self._client or not self._probing():
            return
        log.info(
            "no answer to MQTT 5 CONNECT from %s within %s s; trying MQTT 3.1.1",
            self.config.address,
            self._probe_timeout_s,
        )
        client.disconnect()
        self._fall_back_to_311(client)

    def _fall_back_to_311(self, old: _PahoClient) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (off the network thread, which it joins)."""
        old.loop_stop()
        with self._client_lock:
            if self._client is not old:
                return
            self._protocol = MQTTProtocolVersion.MQTTv311
            self._client = new = self._new_client()
            running = self._running
        log.info("MQTT broker %s does not speak MQTT 5; using MQTT 3.1.1", self.config.address)
        if running:
            self._connect(new)

    def _publish_now(
        self,
        client: mqtt.Client,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        on_ack: AckCallback | None,
    ) -> None:
        limit = self._max_packet_bytes
        if limit is not None and publish_packet_bytes(topic, len(payload), qos) > limit:
            self._too_large(topic, len(payload), limit)
            return
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            log.debug("not connected: QoS 0 message to %s dropped", topic)
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self._queue_full(topic)
            return
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        with self._acks:
            accepted = self._acked_early.pop(info.mid, None)
            if accepted is None:
                self._pending_acks[info.mid] = (on_ack, qos, topic)
                return
            self._acks.notify_all()
        if not accepted:
            log.warning("the MQTT broker refused the message to %s", topic)
        elif on_ack is not None:
            self._call(on_ack, "on_ack")

    def _too_large(self, topic: str, size: int, limit: int) -> None:
        """Not sent: a broker drops a client that sends a packet above its limit, and paho would
        send it again on every reconnection, so nothing after it would get through either (each
        message was held up behind it). Logged once per topic; not acknowledged (an outbox keeps
        it)."""
        if topic in self._too_large_topics:
            return
        self._too_large_topics.add(topic)
        log.error(
            "not sent: a message of %d bytes to %s is larger than the MQTT broker's maximum packet "
            "size (%d bytes) at %s: raise max_packet_size in the broker's configuration (docs/bus.md)",
            size, topic, limit, self.config.address,
        )  # fmt: skip

    def _queue_full(self, topic: str) -> None:
        self._report(
            f"MQTT send queue is full ({self.config.max_queued_messages} unacknowledged messages): "
            f"message to {topic} not queued (it is resent from the outbox when the broker is back)"
        )

    def queued_messages(self) -> int:
        """QoS 1 messages held in memory, not yet acknowledged by the broker."""
        with self._early_lock:
            early = len(self._early_messages)
        with self._acks:
            return early + sum(1 for _ack, qos, _topic in self._pending_acks.values() if qos)

    def _send_subscriptions(self, client: mqtt.Client, wanted: dict[str, int]) -> None:
        if wanted:
            self._subscribed.clear()
        if not wanted:
            return
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            # MQTT 5 brokers send one copy per matching subscription: the subscription identifier
            # on each copy says whose handlers it is for. Retained messages are asked for only by
            # subscriptions new to the session (a resumed session has already seen them), or
            # always for those subscribed with retained_always.
            for pattern, qos in wanted.items():
                properties = Properties(PacketTypes.SUBSCRIBE)
                properties.SubscriptionIdentifier = subscription_id(pattern)
                retain = (
                    SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
                    if pattern in self._retained_always
                    else SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
                )
                options = SubscribeOptions(qos=qos, retainHandling=retain)
                self._await_suback(client.subscribe((pattern, options), properties=properties), [pattern])
        else:
            self._await_suback(client.subscribe(list(wanted.items())), list(wanted))

    def _await_suback(self, sent: tuple[MQTTErrorCode, int | None], patterns: list[str]) -> None:
        rc, mid = sent
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # not sent (the connection went): sent again at the next connect
        with self._suback_lock:
            answer = self._subacked_early.pop(mid, None)
            if answer is None:
                self._awaiting_suback[mid] = patterns
            if not self._awaiting_suback:
                self._subscribed.set()
        if answer is not None:
            self._log_refusals(patterns, answer)

    @staticmethod
    def _log_refusals(patterns: list[str], reason_codes: list[ReasonCode]) -> None:
        for pattern, code in zip(patterns, reason_codes, strict=False):
            if code.is_failure:
                log.warning("the MQTT broker refused the subscription to %s: %s", pattern, code)

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        try:
            if client is not self._client:
                return
            self._connack_seen = True  # accepted or refused: the broker answered this attempt
            self._cancel_probe_timer()
            if reason_code.is_failure:
                if self._probing() and reason_code.value == _UNSUPPORTED_PROTOCOL_VERSION:
                    client.disconnect()
                    threading.Thread(
                        target=self._fall_back_to_311,
                        args=(client,),
                        name=f"mqtt-fallback-{self.client_id}",
                        daemon=True,
                    ).start()
                    return
                self._report(
                    f"the MQTT broker at {self.config.address} refused the connection: "
                    f"{reason_code} (check the credentials and the broker's ACL); retrying"
                )
                return
            self._max_packet_bytes = getattr(properties, "MaximumPacketSize", None)
            with self._subs_lock:
                wanted: dict[str, int] = {}
                for pattern, qos, _handler in self._subscriptions:
                    wanted[pattern] = max(qos, wanted.get(pattern, 0))
            with self._suback_lock:  # a new connection: earlier SUBSCRIBEs will not be answered
                self._awaiting_suback.clear()
                self._subacked_early.clear()
                self._subscribed.set()
            self._send_subscriptions(client, wanted)
            if not self._protocol_decided:
                with self._early_lock:
                    for topic, payload, qos, retain, on_ack in self._early_messages:
                        self._publish_now(client, topic, payload, qos, retain, on_ack)
                    self._early_messages.clear()
                    self._protocol_decided = True
            self._connection_made()
            self._connected.set()
            self._notify(True)
        except Exception:
            log.exception("MQTT on_connect failed")

    def _on_subscribe(self, client, userdata, mid: int, reason_codes: list[ReasonCode], properties) -> None:
        try:
            if client is not self._client:
                return
            with self._suback_lock:
                patterns = self._awaiting_suback.pop(mid, None)
                if patterns is None:  # subscribe() has not registered the mid yet
                    self._subacked_early[mid] = list(reason_codes)
                if not self._awaiting_suback:
                    self._subscribed.set()
            if patterns is not None:
                self._log_refusals(patterns, reason_codes)
        except Exception:
            log.exception("MQTT on_subscribe failed")

    def _on_connect_fail(self, client, userdata) -> None:
        if client is self._client:
            self._cancel_probe_timer()  # no broker there at all: that says nothing about MQTT 5
        reason = getattr(client, "last_connect_error", "unknown error")
        self._report(f"cannot reach the MQTT broker at {self.config.address}: {reason}; retrying")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            if client is not self._client:
                return
            self._cancel_probe_timer()
            if not self._connected.is_set():
                if self._running and not self._connack_seen:
                    # TCP (and TLS) went through but the broker hung up before its CONNACK
                    self._report(
                        f"the MQTT broker at {self.config.address} closed the connection before "
                        f"accepting it ({reason_code}): a client certificate it no longer accepts "
                        "(revoked, or not from the community CA), or a client id its ACL refuses?"
                        "; retrying"
                    )
                return
            self._connected.clear()
            self._subscribed.clear()
            if self._running:
                self._connection_lost(
                    _why_disconnected(flags, reason_code), _session_taken_over(flags, reason_code)
                )
            self._notify(False)
        except Exception:
            log.exception("MQTT on_disconnect failed")

    def _on_publish(self, client, userdata, mid: int, reason_code: ReasonCode, properties) -> None:
        """PUBACK (QoS 1) or written (QoS 0). An MQTT 5 PUBACK may refuse the message (ACL)."""
        accepted = not reason_code.is_failure
        with self._acks:
            if mid not in self._pending_acks:  # publish() has not registered it yet
                self._acked_early[mid] = accepted
                return
            on_ack, _qos, topic = self._pending_acks.pop(mid)
            self._acks.notify_all()
        if not accepted:
            hint = _hint(reason_code)
            log.warning("the MQTT broker refused the message to %s: %s%s", topic, reason_code, hint)
        elif on_ack is not None:
            self._call(on_ack, "on_ack")

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("dropped an MQTT message whose topic is not UTF-8")
            return
        payload = bytes(message.payload)
        ids = getattr(message.properties, "SubscriptionIdentifier", None) if message.properties else None
        with self._subs_lock:
            subs = self._sub_ids
        handlers = [
            h for pattern, sid, h in subs if (not ids or sid in ids) and topic_matches(pattern, topic)
        ]
        try:
            for handler in handlers:
                self._call(handler, f"handler for {topic}", topic, payload)
        finally:
            if self._ack_barrier is not None and message.qos > 0:
                self._unacked.append((client, message.mid, message.qos))

    def _after_read(self, client: _PahoClient) -> None:
        """End of a batch read by ``client`` (network thread, defer_acks): the barrier, then the
        batch's acknowledgements, on the connection the messages came on."""
        unacked, self._unacked = self._unacked, []
        barrier = self._ack_barrier
        if barrier is not None:  # also after QoS 0 messages alone: their writes are not left open
            self._call(barrier, "ack barrier")
        if not unacked or client is not self._client or not self.connected:
            return  # the connection went: the broker sends them again
        for origin, mid, qos in unacked:
            if origin is client:
                client.ack(mid, qos)

    # -- connections made and lost (network thread) ------------------------------------------

    def _connection_made(self) -> None:
        """A connection was accepted: said after a problem ("connected" the first time, "again"
        after that; nothing while the take-over pattern lasts), and timed (_connection_lost)."""
        with self._error_lock:
            self._connected_at = time.monotonic()
            if self._contested is None and self._last_error is not None:
                again = " again" if self._ever_connected else ""
                log.warning("connected to the MQTT broker at %s%s", self.config.address, again)
            self._ever_connected = True
            self._last_error = None
            if self._contested is not None:  # says so if this one holds
                self._cancel_hold_timer()
                timer = threading.Timer(TAKEOVER_SHORT_S, self._check_held, args=(self._connected_at,))
                timer.daemon = True
                self._hold_timer = timer
                timer.start()

    def _connection_lost(self, why: str, taken_over: bool = False) -> None:
        """An established connection ended (``why``, in words; ``taken_over``: the broker said
        another client took this client id): logged, unless it is one more of the take-over
        pattern (TAKEOVER_SHORT_S), which is said once when it is recognised: at once when the
        broker says so, else after TAKEOVER_REPEATS short connections, as a guess."""
        now = time.monotonic()
        with self._error_lock:
            self._cancel_hold_timer()
            made, self._connected_at = self._connected_at, None
            short = made is not None and now - made < TAKEOVER_SHORT_S
            self._short_lived = self._short_lived + 1 if short else 0
            if not short and not taken_over:
                self._contested, self._contested_certain = None, False
            if taken_over and not self._contested_certain:  # certain: said now, plainly
                self._contested = self._last_error = (
                    f"another client is using this account's client id ({self._whose_id()}): the "
                    f"MQTT broker at {self.config.address} closed this client's connection saying "
                    '"Session taken over", as it does when another client connects with the same '
                    "client id. A copy of this agent (a copied folder with the same certificate or "
                    "account) is running elsewhere. Stop the other one. Each lost connection is no "
                    "longer logged while it lasts"
                )
                self._contested_certain, self._contested_logged_at, self._taken_over = True, now, 0
                log.warning("%s", self._contested)
                return
            if self._contested is not None:  # one more: counted, and a line now and then
                self._taken_over += 1
                if not self._contested_certain:  # the status keeps the last reason
                    self._contested = self._dropped_line(why)
                self._last_error = self._contested
                if now - self._contested_logged_at < TAKEOVER_LOG_EVERY_S:
                    return
                self._contested_logged_at, taken, self._taken_over = now, self._taken_over, 0
                if self._contested_certain:
                    log.warning(
                        "still: %d more connection(s) to the MQTT broker at %s taken over by another "
                        "client with this account's client id (%s) in the last %d min",
                        taken, self.config.address, self._whose_id(), TAKEOVER_LOG_EVERY_S // 60,
                    )  # fmt: skip
                else:
                    log.warning(
                        "still: %d more connection(s) to the MQTT broker at %s dropped within %g s of "
                        "connecting in the last %d min; last reason: %s",
                        taken, self.config.address, TAKEOVER_SHORT_S, TAKEOVER_LOG_EVERY_S // 60, why,
                    )  # fmt: skip
                return
            if self._short_lived >= TAKEOVER_REPEATS:
                self._contested = self._last_error = self._dropped_line(why)
                self._contested_logged_at, self._taken_over = now, 0
                log.warning("%s", self._contested)
                return
        self._report(f"lost the connection to the MQTT broker at {self.config.address} ({why}); reconnecting")

    def _dropped_line(self, why: str) -> str:
        """The take-over pattern seen in the timing alone (with _error_lock held): a guess, which
        names both of its causes and the last reason."""
        return (
            f"the MQTT broker at {self.config.address} dropped this client's connection "
            f"{self._short_lived} times in a row within {TAKEOVER_SHORT_S:g} s of connecting: another "
            f"client with this client id ({self._whose_id()}; a copy of this agent?), or a network "
            f"that keeps dropping the connection; last reason: {why}. Each lost connection is no "
            "longer logged while it lasts"
        )

    def _check_held(self, made: float) -> None:
        """TAKEOVER_SHORT_S after a connection made while the take-over pattern lasted: if it is
        still up, the other client (or the network's trouble) is gone; say so."""
        with self._error_lock:
            if self._contested is None or self._connected_at != made or not self._connected.is_set():
                return
            certain = self._contested_certain
            self._contested, self._contested_certain, self._short_lived = None, False, 0
            self._hold_timer = None
            taken, self._taken_over = self._taken_over, 0
        if certain:
            log.warning(
                "the connection to the MQTT broker at %s has held for %g s: no other client is using "
                "this account's client id (%s) now (%d connection(s) were taken over since the last "
                "line)",
                self.config.address, TAKEOVER_SHORT_S, self._whose_id(), taken,
            )  # fmt: skip
        else:
            log.warning(
                "the connection to the MQTT broker at %s has held for %g s: whatever dropped it "
                "(another client with this client id (%s), or the network) has stopped (%d "
                "connection(s) were dropped since the last line)",
                self.config.address, TAKEOVER_SHORT_S, self._whose_id(), taken,
            )  # fmt: skip

    def _cancel_hold_timer(self) -> None:
        """(With _error_lock held.)"""
        timer, self._hold_timer = self._hold_timer, None
        if timer is not None:
            timer.cancel()

    def _whose_id(self) -> str:
        """The client id the broker knows this client by, as far as the bus can tell."""
        if self.config.cert_file:
            return f"{self.client_id}, or the client certificate's account where the broker uses that"
        return self.client_id

    @property
    def contested(self) -> str | None:
        """While the take-over pattern lasts (another client uses this client id, or, when the broker
        has not said so, a network that keeps dropping the connection: see TAKEOVER_SHORT_S), the
        line that says so, with the last reason; else None. (``last_error`` is None while a
        connection is up, which in that pattern is about half of the time.)"""
        return self._contested

    @property
    def taken_over(self) -> bool:
        """True while ``contested`` is certain: the broker said "Session taken over" (MQTT 5), so
        another client uses this client id; False for the hedged guess from the timing alone and
        when nothing is contested. The agent's status carries it as ``broker_taken_over``, so a
        reader (the dashboard) need not recognise the words."""
        return self._contested is not None and self._contested_certain

    # -- helpers ------------------------------------------------------------------------------

    def _nothing_unacked(self) -> bool:
        # QoS 0 entries are ignored: one lost in a reconnect is never reported by paho.
        return all(qos == 0 for _on_ack, qos, _topic in self._pending_acks.values())

    def _notify(self, connected: bool) -> None:
        if self._on_connection_change is not None:
            self._call(self._on_connection_change, "on_connection_change", connected)

    def _report(self, message: str) -> None:
        with self._error_lock:
            if message == self._last_error:
                return
            self._last_error = message
        log.warning("%s", message)

    @staticmethod
    def _call(function: Callable[..., None], what: str, *args: object) -> None:
        try:
            function(*args)
        except Exception:
            log.exception("MQTT %s raised", what)
