"""Topic names and ids: the topics of DESIGN.md ("MQTT topics"; ``config`` is in docs/bus.md),
their QoS and retain rules, the checks of a topic, subscription pattern or id, and MQTT's
subscription matching.

Pure functions over strings, no I/O: the agent, the node and the ACLs of the broker all build
and parse topics here.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_TOPIC_BYTES = 65535
MAX_ID_CHARS = 128


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
    """True when ``topic`` matches the subscription ``pattern`` (MQTT rules, incl. ``$`` topics).

    Not paho's ``topic_matches_sub``, on purpose: it gives the same answers (the tests check the
    two against each other with hypothesis) but builds a matching trie on every call, about five
    times slower, and this runs for every subscription on every delivered message.
    """
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
        TopicKind("config", True, 1, True),
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
    def config(community: str, validator: str) -> str:
        """One validator's configuration history (chain/config_proof.py), retained: per validator,
        so a hostile validator can overwrite only its own (a light client takes the furthest
        history that verifies)."""
        return _build("config", community, validator)

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
