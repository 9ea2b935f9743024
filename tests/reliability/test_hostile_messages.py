"""Hostile messages through a real Mosquitto to a running sequencer node (kv app): replayed,
expired, high-S, wrong-community, oversized, unenrolled and revoked-key messages are all
rejected, counted by reason in the node's ``/v1/status``, and none is stored."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from chain.keys import generate_private_key
from chain.kvapp import KeyValueApp
from chain.signature import CURVE_ORDER, b64url_decode, b64url_encode
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from tests.support.localnet import Party, make_community
from tests.support.procnet import launch_community, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
NOW = int(time.time())
T0 = NOW - NOW % 900 - 900
WAIT_S = 30


def stored_tx_hashes(node) -> set[bytes]:
    conn = sqlite3.connect(f"file:{node.dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return {bytes(h) for (h,) in conn.execute("SELECT hash FROM txs")}
    finally:
        conn.close()


def stored_payloads(node) -> list[bytes]:
    conn = sqlite3.connect(f"file:{node.dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return [bytes(p) for (p,) in conn.execute("SELECT envelope FROM payloads")]
    finally:
        conn.close()


def body(value: int) -> dict:
    return {"interval": T0, "import_wh": value, "export_wh": 0, "serial": "S", "profile": "p"}


def high_s(raw: bytes) -> bytes:
    obj = json.loads(raw)
    sig = b64url_decode(obj["sig"])
    s = int.from_bytes(sig[32:], "big")
    obj["sig"] = b64url_encode(sig[:32] + (CURVE_ORDER - s).to_bytes(32, "big"))
    return json.dumps(obj).encode()


class Publisher:
    """One MQTT client that publishes and waits for the broker's acknowledgements."""

    def __init__(self, url: str) -> None:
        self.bus = MqttBus(BrokerConfig.from_url(url), "hostile-publisher")
        self.bus.start()
        assert self.bus.wait_connected(WAIT_S)

    def send(self, topic: str, payload: bytes) -> None:
        acked = threading.Event()
        self.bus.publish(topic, payload, on_ack=acked.set)
        assert acked.wait(WAIT_S), topic


def test_hostile_messages_rejected_counted_and_not_stored(tmp_path, mosquitto):
    c = make_community(validators=1, members=2, meters_per_member=1, time=T0)
    community = c.community
    good, victim = c.meters
    nodes = launch_community(c, tmp_path, mosquitto.url, KeyValueApp)
    node = nodes[0]
    publisher = None
    try:
        # connected to the broker, not only its API up: a message published before the node
        # subscribed is lost (the broker keeps none for a topic nobody reads), which timed out the
        # wait below once in a loaded full run
        wait_for(lambda: (node.status() or {}).get("broker_connected"), WAIT_S, "the node on the broker")
        publisher = Publisher(mosquitto.url)
        now = int(time.time())
        accepted = good.sign(community, "reading", body(1), created=now)
        revoke = c.validators[0].sign(
            community,
            "propose",
            {"action": "revoke_meter", "args": {"meter": victim.id}, "deadline": now + 3600},
            created=now,
        )
        publisher.send(Topics.readings(community, good.id), accepted.to_bytes())
        publisher.send(Topics.gov(community), revoke.to_bytes())
        wait_for(lambda: len(stored_tx_hashes(node)) == 2, WAIT_S, "the reading and the revocation")

        stranger = Party(generate_private_key(), "stranger")
        padded = accepted.to_bytes()[:-1] + b" " * (64 * 1024) + b"}"  # valid JSON, over 64 KiB
        hostile = {
            "replay": (good.id, accepted.to_bytes()),
            "expired": (
                good.id,
                good.sign(community, "reading", body(2), created=now - 3 * 86400).to_bytes(),
            ),
            "high_s": (good.id, high_s(good.sign(community, "reading", body(3), created=now).to_bytes())),
            "wrong_community": (good.id, good.sign("elm-street", "reading", body(4), created=now).to_bytes()),
            "too_large": (good.id, padded),
            "unknown_signer": (
                stranger.id,
                stranger.sign(community, "reading", body(5), created=now).to_bytes(),
            ),
            "revoked": (victim.id, victim.sign(community, "reading", body(6), created=now).to_bytes()),
        }
        for meter, raw in hostile.values():
            publisher.send(Topics.readings(community, meter), raw)
        expected = dict.fromkeys(hostile, 1)
        status = wait_for(
            lambda: (s := node.status()) and s["rejected"] == expected and s,
            WAIT_S,
            f"rejections {expected} (last status: {node.status()})",
        )
        assert status["accepted"] == 2
        time.sleep(1.0)  # a few more block periods: nothing else may be booked
        assert stored_tx_hashes(node) == {accepted.tx_hash, revoke.tx_hash}
        payloads = stored_payloads(node)
        assert all(raw not in payloads for name, (_, raw) in hostile.items() if name != "replay")
        assert node.status()["rejected"] == expected
    finally:
        if publisher is not None:
            publisher.bus.stop()
        for n in nodes:
            n.kill()
