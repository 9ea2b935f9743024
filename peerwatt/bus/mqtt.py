"""The message bus: one publish/subscribe interface, two transports.

Agents and nodes talk through a :class:`Bus`. In production that is :class:`MqttBus` (paho-mqtt 2
against Mosquitto, or the embedded amqtt broker of the demo); in tests it is :class:`MemoryBus`
on a :class:`MemoryBroker`, which keeps the same semantics in process, deterministically.

Semantics both transports share (see docs/bus.md):

- Persistent sessions: a client id's subscriptions live on at the broker while the client is away,
  and QoS 1 messages for it are queued and delivered, in order, when it comes back.
- ``publish(..., on_ack=...)``: ``on_ack`` fires once the broker has acknowledged the message
  (QoS 1: PUBACK; QoS 0: once written). That is the moment an agent's durable outbox may delete
  the entry. It may fire before ``publish`` returns, so record the entry first. A QoS 1 message
  published while disconnected is kept in memory and sent (then acknowledged) after reconnecting;
  a QoS 0 message published while disconnected is dropped.
- Delivery is at least once: after a broker crash a message can arrive twice; deduplication is
  the receiver's job (DESIGN.md: the replay window keyed by signer and seq).
- The last will is published when a client vanishes without a clean ``stop()``.

This module imports nothing else of ours and nothing heavy: the meter agent imports it.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
"""Called with (topic, payload) for each message matching a subscription."""
AckCallback = Callable[[], None]
ConnectionCallback = Callable[[bool], None]
Will = tuple[str, bytes, bool]
"""A last will: (topic, payload, retain); published with QoS 1."""

MAX_TOPIC_BYTES = 65535
MAX_ID_CHARS = 128
DEFAULT_SESSION_EXPIRY_S = 86400
# QoS 1 messages held in memory while unacknowledged (in flight or waiting for the broker). During
# a long outage newer ones are not queued: an agent's outbox keeps every message on disk and
# resends it, a node republishes its block and seals; so RAM stays bounded (a few MB).
DEFAULT_MAX_QUEUED_MESSAGES = 10_000
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30


class Bus(Protocol):
    """What agents and nodes need from a message bus (MQTT semantics)."""

    def start(self) -> None:
        """Connect (MQTT: in the background, reconnecting with backoff)."""

    def stop(self) -> None:
        """Disconnect cleanly: no last will is sent; the session stays at the broker."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
    ) -> None:
        """Publish; ``on_ack`` fires once the broker acknowledged the message."""

    def subscribe(self, pattern: str, handler: Handler, *, qos: int = 1) -> None:
        """Call ``handler(topic, payload)`` for messages matching ``pattern`` (+ and # wildcards)."""

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; True when connected."""

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""


# --------------------------------------------------------------------------------------------
# Topic names and patterns


def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name to publish to, else raise ValueError."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("an MQTT topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise ValueError(f"topic {topic!r} contains a wildcard (+ or #): only subscriptions may")
    _check_topic_text(topic, "topic")
    return topic


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription filter, else raise ValueError."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("an MQTT subscription pattern must be a non-empty string")
    _check_topic_text(pattern, "subscription pattern")
    levels = pattern.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"subscription pattern {pattern!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"subscription pattern {pattern!r}: '+' must be a whole level")
    return pattern


def _check_topic_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid UTF-8 text") from None
    if size > MAX_TOPIC_BYTES:
        raise ValueError(f"{what} is {size} bytes long; MQTT allows at most {MAX_TOPIC_BYTES}")


def topic_matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches the subscription ``pattern`` (MQTT rules, incl. ``$`` topics)."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    pattern_levels = pattern.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(pattern_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(pattern_levels) == len(topic_levels)


TOPIC_ROOT = "peerwatt"


class TopicKind(NamedTuple):
    """One kind of topic of DESIGN.md ("MQTT topics")."""

    name: str
    per_sender: bool  # the topic ends in the meter's or validator's id
    qos: int
    retain: bool


TOPIC_KINDS: dict[str, TopicKind] = {
    kind.name: kind
    for kind in (
        TopicKind("orders", True, 1, False),
        TopicKind("readings", True, 1, False),
        TopicKind("gov", False, 1, False),
        TopicKind("blocks", False, 1, True),
        TopicKind("headers", False, 1, True),
        TopicKind("seals", True, 1, False),
        TopicKind("receipts", True, 1, False),
        TopicKind("book", False, 0, True),
        TopicKind("status", True, 1, True),
    )
}


class TopicParts(NamedTuple):
    """A parsed peerwatt topic: its kind, community and (per-sender kinds) the sender's id."""

    kind: str
    community: str
    id: str | None


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be one topic level (a community, meter or validator id).

    Rejects empty ids, ids longer than MAX_ID_CHARS and ids containing ``/``, ``+``, ``#``, NUL
    or other control characters (they would change the topic's meaning or break brokers).
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"{what} {value[:20]!r}... is longer than {MAX_ID_CHARS} characters")
    for char in value:
        if char in "/+#":
            raise ValueError(f"{what} {value!r} must not contain {char!r}")
        if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            raise ValueError(f"{what} {value!r} must not contain control characters (or NUL)")
    _check_topic_text(value, what)
    return value


def _build(kind: str, community: str, sender: str | None = None) -> str:
    topic = f"{TOPIC_ROOT}/{check_id(community, 'community id')}/{kind}"
    if sender is not None:
        topic += "/" + check_id(sender, f"{kind} sender id")
    return topic


class Topics:
    """Builders and parser for the topics of DESIGN.md: ``topics.orders("oak-street", meter)``."""

    @staticmethod
    def orders(community: str, meter: str) -> str:
        return _build("orders", community, meter)

    @staticmethod
    def readings(community: str, meter: str) -> str:
        return _build("readings", community, meter)

    @staticmethod
    def gov(community: str) -> str:
        return _build("gov", community)

    @staticmethod
    def blocks(community: str) -> str:
        return _build("blocks", community)

    @staticmethod
    def headers(community: str) -> str:
        """Final block headers with their seals (what a household's light client needs)."""
        return _build("headers", community)

    @staticmethod
    def seals(community: str, validator: str) -> str:
        return _build("seals", community, validator)

    @staticmethod
    def receipts(community: str, meter: str) -> str:
        return _build("receipts", community, meter)

    @staticmethod
    def book(community: str) -> str:
        return _build("book", community)

    @staticmethod
    def status(community: str, meter: str) -> str:
        return _build("status", community, meter)

    @staticmethod
    def pattern(community: str, kind: str | None = None) -> str:
        """Subscription pattern: every topic of a community, or every topic of one kind in it."""
        if kind is None:
            return f"{TOPIC_ROOT}/{check_id(community, 'community id')}/#"
        spec = Topics.kind(kind)
        return _build(kind, community) + ("/+" if spec.per_sender else "")

    @staticmethod
    def kind(name: str) -> TopicKind:
        """The QoS / retain / per-sender rules of one topic kind."""
        try:
            return TOPIC_KINDS[name]
        except KeyError:
            known = ", ".join(TOPIC_KINDS)
            raise ValueError(f"unknown topic kind {name!r} (known: {known})") from None

    @staticmethod
    def parse(topic: str) -> TopicParts:
        """Split a peerwatt topic into (kind, community, id); ValueError if it is not one."""
        levels = topic.split("/") if isinstance(topic, str) else []
        if len(levels) < 3 or levels[0] != TOPIC_ROOT:
            raise ValueError(f"{topic!r} is not a peerwatt topic ({TOPIC_ROOT}/<community>/...)")
        community, kind = levels[1], levels[2]
        spec = Topics.kind(kind)
        check_id(community, "community id")
        expected = 4 if spec.per_sender else 3
        if len(levels) != expected:
            shape = f"{TOPIC_ROOT}/<community>/{kind}" + ("/<id>" if spec.per_sender else "")
            raise ValueError(f"{topic!r} is not a valid {kind} topic (expected {shape})")
        sender = check_id(levels[3], f"{kind} sender id") if spec.per_sender else None
        return TopicParts(kind, community, sender)


topics = Topics()


def _check_publish_args(topic: str, payload: bytes, qos: int) -> bytes:
    check_topic(topic)
    if qos not in (0, 1):
        raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    return bytes(payload)


def _check_will(will: Will | None) -> Will | None:
    if will is None:
        return None
    topic, payload, retain = will
    return (check_topic(topic), _check_publish_args(topic, payload, 1), bool(retain))


def _check_client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not client_id or "\x00" in client_id:
        raise ValueError("an MQTT client id must be a non-empty string without NUL")
    return client_id


# --------------------------------------------------------------------------------------------
# Broker address and credentials


@dataclass(frozen=True)
class BrokerConfig:
    """Where the MQTT broker is and how to log in. ``keepalive`` is in seconds."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's trusted CAs
    cert_file: str | None = None  # client certificate (may hold the key too)
    key_file: str | None = None
    keepalive: int = 30
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S  # MQTT 5: how long the broker keeps us
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES  # unacknowledged QoS 1 kept in RAM

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError("MQTT broker host must be a non-empty name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"MQTT broker port must be an integer, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"MQTT broker port {self.port} is outside 1..65535")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int):
            raise ValueError(f"MQTT keepalive must be an integer number of seconds, not {self.keepalive!r}")
        if not 5 <= self.keepalive <= 65535:
            raise ValueError(f"MQTT keepalive {self.keepalive} s is outside 5..65535 s")
        if not isinstance(self.session_expiry_s, int) or not 0 <= self.session_expiry_s < 2**32:
            raise ValueError(f"MQTT session expiry {self.session_expiry_s!r} s is outside 0..2^32-1")
        if type(self.max_queued_messages) is not int or self.max_queued_messages < 1:
            raise ValueError(f"max_queued_messages {self.max_queued_messages!r} must be a positive integer")
        if self.password is not None and self.username is None:
            raise ValueError("an MQTT password was given without a username")
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        given = [name for name, value in files.items() if value]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} given but TLS is off (use mqtts:// or tls = true)")
        if self.key_file and not self.cert_file:
            raise ValueError("an MQTT TLS key_file was given without a cert_file")

    @classmethod
    def from_url(cls, url: str, **options: object) -> BrokerConfig:
        """Parse ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, port 8883).

        ``options`` set the other fields (ca_file, cert_file, key_file, keepalive, ...) and override
        the URL's (e.g. username and password kept out of the URL). User name and password in the
        URL are percent-decoded. Raises ValueError with a one-line message.
        """
        if not isinstance(url, str) or not url.strip():
            raise ValueError("MQTT broker URL is empty (expected mqtt://host:port)")
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: unexpected path, query or fragment")
        tls = scheme == "mqtts"
        username = urllib.parse.unquote(parts.username) if parts.username is not None else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if port == 0:
            raise ValueError(f"bad MQTT broker URL {_redact(url)!r}: port 0")
        fields: dict[str, object] = {
            "host": parts.hostname,
            "port": port or (8883 if tls else 1883),
            "username": username or None,
            "password": password,
            "tls": tls,
        }
        try:
            return cls(**{**fields, **options})  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(f"bad MQTT broker option: {exc}") from None

    @property
    def address(self) -> str:
        """``host:port`` for messages (IPv6 hosts in brackets); never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL without credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.address}"

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for this broker (verifies the broker's certificate and host name)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.sslsocket_class = _ClosingSSLSocket
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f)
            raise ValueError(f"cannot load the MQTT TLS files ({files}): {_describe(exc)}") from None
        return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its TLS handshake fails.

    paho leaves the socket of a failed handshake (e.g. an unknown CA) open for the garbage
    collector; each retry would leak one.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except OSError:
            self.close()
            raise


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"


def _describe(exc: BaseException | None) -> str:
    """A short, single-line reason for a connection or file error."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[:1].lower() + exc.strerror[1:]
        return f"{text}: {exc.filename}" if exc.filename else text
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Real MQTT (paho-mqtt 2)


def subscription_id(pattern: str) -> int:
    """The MQTT 5 subscription identifier of a pattern (1 .. 2^28-1), the same in every process.

    Stable ids matter: messages queued in a persistent session carry the id given by the process
    that subscribed, and are delivered to the process that resumes the session.
    """
    digest = hashlib.sha256(pattern.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % (2**28 - 1) + 1


PROTOCOL_CHOICES = ("auto", "5", "3.1.1")
_UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK "Unsupported protocol version" (3.1.1 code 1)


class _PahoClient(mqtt.Client):
    """paho's client, keeping why the last connection attempt failed (``last_connect_error``).

    paho reports a failed attempt through ``on_connect_fail`` without saying why; the reason is
    what the user needs to read ("connection refused", "certificate verify failed"). It also
    closes the loop's wake-up sockets on ``loop_stop`` (paho leaks them on a stop/start cycle).
    """

    last_connect_error = "unknown error"

    def reconnect(self) -> MQTTErrorCode:
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
        self.client_id = _check_client_id(client_id)
        self._will = _check_will(will)
        self._on_connection_change = on_connection_change
        self._auto_protocol = protocol == "auto"
        self._probe_timeout_s = probe_timeout_s
        self._probe_timer: threading.Timer | None = None
        self._probe_attempt: object | None = None  # the connection attempt the timer watches
        self._protocol = MQTTProtocolVersion.MQTTv311 if protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self._ssl_context = config.ssl_context() if config.tls else None

        self._client_lock = threading.Lock()  # guards _client and _running; never held in paho
        self._running = False
        self._client = self._new_client()

        self._subs_lock = threading.Lock()
        self._subscriptions: list[tuple[str, int, Handler]] = []

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

        self._connected = threading.Event()
        self._error_lock = threading.Lock()
        self._last_error: str | None = None

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

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
    ) -> None:
        payload = _check_publish_args(topic, payload, qos)
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

    def subscribe(self, pattern: str, handler: Handler, *, qos: int = 1) -> None:
        check_pattern(pattern)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
        with self._subs_lock:
            self._subscriptions.append((pattern, qos, handler))
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
        client.on_message = self._on_message
        return client

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
        if not wanted:
            return
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            # MQTT 5 brokers send one copy per matching subscription: the subscription identifier
            # on each copy says whose handlers it is for. Retained messages are asked for only by
            # subscriptions new to the session: a resumed session has already seen them.
            for pattern, qos in wanted.items():
                properties = Properties(PacketTypes.SUBSCRIBE)
                properties.SubscriptionIdentifier = subscription_id(pattern)
                options = SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
                client.subscribe((pattern, options), properties=properties)
        else:
            client.subscribe(list(wanted.items()))

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        try:
            if client is not self._client:
                return
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
            with self._subs_lock:
                wanted: dict[str, int] = {}
                for pattern, qos, _handler in self._subscriptions:
                    wanted[pattern] = max(qos, wanted.get(pattern, 0))
            self._send_subscriptions(client, wanted)
            if not self._protocol_decided:
                with self._early_lock:
                    for topic, payload, qos, retain, on_ack in self._early_messages:
                        self._publish_now(client, topic, payload, qos, retain, on_ack)
                    self._early_messages.clear()
                    self._protocol_decided = True
            with self._error_lock:
                if self._last_error is not None:
                    log.info("connected to the MQTT broker at %s", self.config.address)
                self._last_error = None
            self._connected.set()
            self._notify(True)
        except Exception:
            log.exception("MQTT on_connect failed")

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
                return
            self._connected.clear()
            if self._running:
                self._report(
                    f"lost the connection to the MQTT broker at {self.config.address} "
                    f"({reason_code}); reconnecting"
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
            log.warning("the MQTT broker refused the message to %s: %s", topic, reason_code)
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
            handlers = [
                h
                for pattern, _q, h in self._subscriptions
                if topic_matches(pattern, topic) and (not ids or subscription_id(pattern) in ids)
            ]
        for handler in handlers:
            self._call(handler, f"handler for {topic}", topic, payload)

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


# --------------------------------------------------------------------------------------------
# In-memory transport


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
            self._subscribe_locked(bus.client_id, pattern, qos)
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

    def _subscribe_locked(self, client_id: str, pattern: str, qos: int) -> None:
        session = self._sessions[client_id]
        is_new = pattern not in session.subscriptions
        session.subscriptions[pattern] = max(qos, session.subscriptions.get(pattern, 0))
        self._route_cache.clear()
        if is_new:  # like MQTT 5 "retain handling: send if new subscription"
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
        self.client_id = _check_client_id(client_id)
        self._will = _check_will(will)
        self._on_connection_change = on_connection_change
        self._connected = False
        self._subscriptions: list[tuple[str, int, Handler]] = []
        self._unsent: deque[tuple[str, bytes, int, bool, AckCallback | None]] = deque()

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float) -> bool:
        return self._connected

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
        payload = _check_publish_args(topic, payload, qos)
        self._send(topic, payload, qos, retain, on_ack)
        self._auto_drain()

    def subscribe(self, pattern: str, handler: Handler, *, qos: int = 1) -> None:
        check_pattern(pattern)
        if qos not in (0, 1):
            raise ValueError(f"QoS must be 0 or 1, not {qos!r}")
        with self.broker._lock:
            self._subscriptions.append((pattern, qos, handler))
            if self._connected:
                self.broker._subscribe_locked(self.client_id, pattern, qos)
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
