"""Topic names, subscription matching and broker configuration of peerwatt.bus."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from peerwatt.bus import (
    TOPIC_KINDS,
    BrokerConfig,
    TopicParts,
    check_pattern,
    check_topic,
    topic_matches,
    topics,
)

METER = "3f9a0c1d2e4b5a6978c0d1e2f3a4b5c6"


def test_builders_follow_design_topics() -> None:
    assert topics.orders("oak-street", METER) == f"peerwatt/oak-street/orders/{METER}"
    assert topics.readings("oak-street", METER) == f"peerwatt/oak-street/readings/{METER}"
    assert topics.gov("oak-street") == "peerwatt/oak-street/gov"
    assert topics.blocks("oak-street") == "peerwatt/oak-street/blocks"
    assert topics.headers("oak-street") == "peerwatt/oak-street/headers"
    assert topics.seals("oak-street", "v1") == "peerwatt/oak-street/seals/v1"
    assert topics.receipts("oak-street", METER) == f"peerwatt/oak-street/receipts/{METER}"
    assert topics.book("oak-street") == "peerwatt/oak-street/book"
    assert topics.status("oak-street", METER) == f"peerwatt/oak-street/status/{METER}"
    assert topics.config("oak-street", "v1") == "peerwatt/oak-street/config/v1"
    assert topics.pattern("oak-street", "config") == "peerwatt/oak-street/config/+"
    assert topics.parse("peerwatt/oak-street/config/v1") == TopicParts("config", "oak-street", "v1")


def test_kind_rules_match_design() -> None:
    assert {k: (v.qos, v.retain) for k, v in TOPIC_KINDS.items()} == {
        "orders": (1, False),
        "readings": (1, False),
        "gov": (1, False),
        "blocks": (1, True),
        "headers": (1, True),
        "seals": (1, False),
        "receipts": (1, False),
        "book": (0, True),
        "status": (1, True),
        "config": (1, True),  # a validator's configuration history, retained (docs/bus.md)
    }
    assert TOPIC_KINDS["config"].per_sender  # one per validator: each can overwrite only its own


@pytest.mark.parametrize("kind", sorted(TOPIC_KINDS))
def test_parse_inverts_build(kind: str) -> None:
    builder = getattr(topics, kind)
    sender = METER if TOPIC_KINDS[kind].per_sender else None
    topic = builder("oak-street", sender) if sender else builder("oak-street")
    assert topics.parse(topic) == TopicParts(kind, "oak-street", sender)
    assert topic_matches(topics.pattern("oak-street", kind), topic)
    assert topic_matches(topics.pattern("oak-street"), topic)
    assert not topic_matches(topics.pattern("elm-road", kind), topic)


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "+", "#", "nul\x00", "tab\t", "x" * 129])
def test_ids_with_topic_syntax_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        topics.orders(bad, METER)
    with pytest.raises(ValueError):
        topics.orders("oak-street", bad)
    with pytest.raises(ValueError):
        topics.pattern(bad)


@pytest.mark.parametrize(
    "topic",
    [
        "other/oak/orders/m1",  # not ours
        "peerwatt/oak",  # too short
        "peerwatt/oak/trades/m1",  # unknown kind
        "peerwatt/oak/orders",  # per-meter kind without the meter
        "peerwatt/oak/gov/m1",  # community-wide kind with an id
        "peerwatt/oak/orders/m1/extra",
        "peerwatt//orders/m1",  # empty community
        "peerwatt/oak/orders/",  # empty meter
    ],
)
def test_parse_rejects_foreign_and_malformed_topics(topic: str) -> None:
    with pytest.raises(ValueError):
        topics.parse(topic)


def test_pattern_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown topic kind"):
        topics.pattern("oak", "trades")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),  # '#' includes the parent level
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/+", "/x", True),  # empty levels are levels
        ("a/+/c", "a//c", True),
        ("#", "$SYS/x", False),  # wildcards at the start never match $ topics
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected
    assert topic_matches_sub(pattern, topic) is expected  # paho agrees


_level = st.text(alphabet="ab$", max_size=2)


@st.composite
def _pattern_and_topic(draw: st.DrawFn) -> tuple[str, str]:
    topic = "/".join(draw(st.lists(_level, min_size=1, max_size=4)))
    levels = draw(st.lists(st.one_of(_level, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels), topic


@given(_pattern_and_topic())
def test_topic_matches_agrees_with_paho(case: tuple[str, str]) -> None:
    pattern, topic = case
    assert topic_matches(pattern, topic) == topic_matches_sub(pattern, topic)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "x\x00"])
def test_check_topic_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        check_topic(bad)


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b", "#/a", "x\x00"])
def test_check_pattern_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        check_pattern(bad)


def test_check_topic_rejects_oversized_and_surrogates() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        check_topic("a" * 65536)
    with pytest.raises(ValueError, match="UTF-8"):
        check_topic("a\ud800")


# -- BrokerConfig ---------------------------------------------------------------------------


def test_from_url_plain_and_tls_defaults() -> None:
    plain = BrokerConfig.from_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.local", 1883, False, None)
    tls = BrokerConfig.from_url("mqtts://broker.local", ca_file="/etc/ca.pem")
    assert (tls.port, tls.tls, tls.ca_file) == (8883, True, "/etc/ca.pem")
    assert tls.url == "mqtts://broker.local:8883"


def test_from_url_credentials_are_percent_decoded_and_never_shown() -> None:
    config = BrokerConfig.from_url("mqtt://meter%2F1:p%40ss:w@10.0.0.2:1884")
    assert (config.username, config.password, config.port) == ("meter/1", "p@ss:w", 1884)
    assert "p@ss" not in repr(config) and "p@ss" not in config.url


def test_from_url_options_override_the_url() -> None:
    config = BrokerConfig.from_url("mqtts://old:pw@broker.local", username="m1", password="secret")
    assert (config.username, config.password, config.tls) == ("m1", "secret", True)


def test_from_url_ipv6() -> None:
    config = BrokerConfig.from_url("mqtt://[::1]:1999")
    assert (config.host, config.address) == ("::1", "[::1]:1999")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "broker.local:1883",  # no scheme
        "http://broker.local",
        "mqtt://",
        "mqtt://broker.local:notaport",
        "mqtt://broker.local:70000",
        "mqtt://broker.local:0",
        "mqtt://broker.local/topic",
        "mqtt://broker.local?x=1",
        "mqtt://:secret@broker.local",  # password without user
    ],
)
def test_from_url_rejects_bad_urls_with_one_line(url: str) -> None:
    with pytest.raises(ValueError) as info:
        BrokerConfig.from_url(url)
    assert "\n" not in str(info.value)


def test_from_url_error_hides_password() -> None:
    with pytest.raises(ValueError) as info:
        BrokerConfig.from_url("mqtt://user:hunter2@broker.local/path")
    assert "hunter2" not in str(info.value)


def test_from_url_rejects_unknown_option() -> None:
    with pytest.raises(ValueError, match="option"):
        BrokerConfig.from_url("mqtt://h", colour="blue")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": True},
        {"host": " "},
        {"keepalive": 0},
        {"ca_file": "/ca.pem"},  # TLS file without TLS
        {"tls": True, "key_file": "/k.pem"},  # key without certificate
        {"session_expiry_s": -1},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


def test_missing_tls_files_give_one_line_error(tmp_path: Path) -> None:
    config = BrokerConfig(tls=True, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="missing.pem") as info:
        config.ssl_context()
    assert "\n" not in str(info.value)


def test_printable_ids_are_accepted() -> None:
    for char in string.ascii_letters + string.digits + "-_.:@é":
        assert topics.status("oak", f"m{char}1").endswith(f"m{char}1")
