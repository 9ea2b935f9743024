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

The package imports nothing else of ours and nothing heavy: the meter agent imports it.

- ``topics``: topic names, ids and subscription matching
- ``interface``: the :class:`Bus` protocol and the argument checks both transports share
- ``config``: :class:`BrokerConfig` (address, credentials, TLS)
- ``mqtt``: :class:`MqttBus`, the transport over a real broker
- ``memory``: :class:`MemoryBroker` and :class:`MemoryBus`, the in-process transport for tests

``from peerwatt.bus import X`` is the public API; the modules are its layout.
"""

from __future__ import annotations

from peerwatt.bus.config import DEFAULT_MAX_QUEUED_MESSAGES, DEFAULT_SESSION_EXPIRY_S, BrokerConfig
from peerwatt.bus.interface import AckCallback, Bus, ConnectionCallback, Handler, Will
from peerwatt.bus.memory import MemoryBroker, MemoryBus
from peerwatt.bus.mqtt import (
    PROTOCOL_CHOICES,
    RECONNECT_MAX_DELAY_S,
    RECONNECT_MIN_DELAY_S,
    MqttBus,
    subscription_id,
)

# Last: binds ``peerwatt.bus.topics`` to the Topics instance (the API since before the package),
# shadowing the submodule's name on the package; import the module's names from it directly.
from peerwatt.bus.topics import (
    MAX_ID_CHARS,
    MAX_TOPIC_BYTES,
    TOPIC_KINDS,
    TOPIC_ROOT,
    TopicKind,
    TopicParts,
    Topics,
    check_id,
    check_pattern,
    check_topic,
    topic_matches,
    topics,
)

__all__ = [
    "DEFAULT_MAX_QUEUED_MESSAGES",
    "DEFAULT_SESSION_EXPIRY_S",
    "MAX_ID_CHARS",
    "MAX_TOPIC_BYTES",
    "PROTOCOL_CHOICES",
    "RECONNECT_MAX_DELAY_S",
    "RECONNECT_MIN_DELAY_S",
    "TOPIC_KINDS",
    "TOPIC_ROOT",
    "AckCallback",
    "BrokerConfig",
    "Bus",
    "ConnectionCallback",
    "Handler",
    "MemoryBroker",
    "MemoryBus",
    "MqttBus",
    "TopicKind",
    "TopicParts",
    "Topics",
    "Will",
    "check_id",
    "check_pattern",
    "check_topic",
    "subscription_id",
    "topic_matches",
    "topics",
]
