"""The interface every transport implements: :class:`Bus`, its callback types and the checks of
the arguments given to it (topic, payload, QoS, last will, client id), shared by both transports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from peerwatt.bus.topics import check_topic

Handler = Callable[[str, bytes], None]
"""Called with (topic, payload) for each message matching a subscription."""
AckCallback = Callable[[], None]
ConnectionCallback = Callable[[bool], None]
Will = tuple[str, bytes, bool]
"""A last will: (topic, payload, retain); published with QoS 1."""


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

    def subscribe(
        self, pattern: str, handler: Handler, *, qos: int = 1, retained_always: bool = False
    ) -> None:
        """Call ``handler(topic, payload)`` for messages matching ``pattern`` (+ and # wildcards).

        Retained messages come with a subscription new to the session; ``retained_always``: at
        every (re)connection, also when the broker resumes a session that had it (MQTT 5 retain
        handling 0), for a client that may have lost what it took from them."""

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; True when connected."""

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until connected with every subscription in effect at
        the broker; True then (a message published afterwards reaches the handlers)."""

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""


def check_publish_args(topic: str, payload: bytes, qos: int) -> bytes:
    """The payload of a publish as bytes, after checking its topic and QoS (every bus's rule)."""
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
    return (check_topic(topic), check_publish_args(topic, payload, 1), bool(retain))


def check_client_id(client_id: str) -> str:
    """``client_id``, checked as every bus takes it: a non-empty string without NUL."""
    if not isinstance(client_id, str) or not client_id or "\x00" in client_id:
        raise ValueError("an MQTT client id must be a non-empty string without NUL")
    return client_id
