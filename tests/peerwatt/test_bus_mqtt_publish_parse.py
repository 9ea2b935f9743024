"""The bus's fast decoder of MQTT 5 PUBLISH packets (peerwatt.bus.mqtt.parse_publish_v5) agrees
with paho's own decoder on every packet it accepts, and leaves to paho every packet with any
other property (a topic alias, user properties, ...)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from peerwatt.bus.mqtt import parse_publish_v5

V5 = MQTTProtocolVersion.MQTTv5


def _body(topic: bytes, qos: int, mid: int, properties: Properties, payload: bytes) -> bytes:
    head = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    return head + properties.pack() + payload


def _paho(body: bytes, qos: int):
    try:
        return _packet.decode_publish(0x30 | (qos << 1), body, V5)
    except Exception:  # paho refuses it
        return None


@settings(max_examples=400, deadline=None)
@given(
    topic=st.binary(max_size=80),
    qos=st.sampled_from([0, 1]),
    mid=st.integers(1, 65535),
    ids=st.lists(st.integers(1, 2**28 - 1), max_size=3),
    other=st.sampled_from([None, "TopicAlias", "MessageExpiryInterval", "ContentType", "UserProperty"]),
    payload=st.binary(max_size=300),
)
def test_same_as_paho_on_well_formed_packets(topic, qos, mid, ids, other, payload) -> None:
    properties = Properties(PacketTypes.PUBLISH)
    if ids:
        properties.SubscriptionIdentifier = ids
    if other == "TopicAlias":
        properties.TopicAlias = 3
    elif other == "MessageExpiryInterval":
        properties.MessageExpiryInterval = 60
    elif other == "ContentType":
        properties.ContentType = "application/json"
    elif other == "UserProperty":
        properties.UserProperty = ("k", "v")
    body = _body(topic, qos, mid, properties, payload)
    ours = parse_publish_v5(body, qos)
    theirs = _paho(body, qos)
    assert theirs is not None
    if other is not None:
        assert ours is None  # paho decodes it
        return
    assert ours == (
        theirs.topic,
        theirs.mid,
        list(getattr(theirs.properties, "SubscriptionIdentifier", [])),
        theirs.payload,
    )


@settings(max_examples=600, deadline=None)
@given(body=st.binary(max_size=60), qos=st.sampled_from([0, 1]))
def test_whatever_it_accepts_paho_decodes_alike(body: bytes, qos: int) -> None:
    ours = parse_publish_v5(body, qos)
    if ours is None:
        return
    theirs = _paho(body, qos)
    assert theirs is not None, "accepted a packet paho refuses"
    assert ours == (
        theirs.topic,
        theirs.mid,
        list(getattr(theirs.properties, "SubscriptionIdentifier", [])),
        theirs.payload,
    )
