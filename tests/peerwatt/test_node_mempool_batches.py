"""A validator on MQTT writes its durable mempool once per batch read from the broker, and still
before the broker hears any message of the batch was received; the mempool's batch semantics."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from chain.engine import Ledger
from chain.kvapp import KeyValueApp
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from peerwatt.node import Node
from peerwatt.node.mempool import Mempool, MempoolError
from tests.support.localnet import make_community
from tests.support.procnet import wait_for

WAIT_S = 20.0


def _pending(path: Path) -> set[bytes]:
    """What another process would find in the mempool file now (committed rows only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {bytes(r) for (r,) in conn.execute("SELECT raw FROM pending")}
    finally:
        conn.close()


def test_batched_adds_are_durable_only_after_flush(tmp_path: Path) -> None:
    pool = Mempool(tmp_path / "mempool.sqlite")
    try:
        assert pool.add(b"one", batch=True) is True
        assert pool.add(b"one", batch=True) is False  # the same bytes, in the same batch
        assert pool.add(b"two", batch=True) is True
        assert _pending(pool.path) == set()  # not committed yet
        assert [raw for raw, _ in pool.all()] == [b"one", b"two"]  # this connection sees them
        pool.remove([b"one"])  # joins the open batch
        pool.flush()
        assert _pending(pool.path) == {b"two"}
        pool.flush()  # nothing open: nothing happens
        assert pool.add(b"two") is False  # an unbatched add commits at once, as before
        assert pool.add(b"three") is True
        assert _pending(pool.path) == {b"two", b"three"}
        pool.add(b"four", batch=True)
    finally:
        pool.close()  # flushes the open batch
    assert _pending(tmp_path / "mempool.sqlite") == {b"two", b"three", b"four"}


def test_a_batch_sqlite_rolled_back_is_reported(tmp_path: Path) -> None:
    pool = Mempool(tmp_path / "mempool.sqlite")
    try:
        pool.add(b"one", batch=True)
        pool._conn.execute("ROLLBACK")  # what SQLite does itself on some errors (disk full)
        with pytest.raises(MempoolError):
            pool.flush()
        assert pool.add(b"two", batch=True) is True  # a new batch opens
        pool.flush()
        assert _pending(pool.path) == {b"two"}
    finally:
        pool.close()


@pytest.mark.integration
def test_a_node_on_mqtt_commits_once_per_batch_and_before_its_acks(tmp_path: Path, mosquitto) -> None:
    now = int(time.time())
    c = make_community(validators=1, members=5, meters_per_member=2, time=now - now % 900 - 900)
    Ledger.create(tmp_path / "node", c.genesis, KeyValueApp()).close()
    ledger = Ledger.open(tmp_path / "node", KeyValueApp())
    pool = Mempool(tmp_path / "node" / "mempool.sqlite")
    commits: list[int] = []
    pool._conn.set_trace_callback(lambda sql: commits.append(1) if sql.strip().upper() == "COMMIT" else None)
    bus = MqttBus(BrokerConfig.from_url(mosquitto.url), "node-0")
    node = Node(ledger, bus, role="sequencer", key=c.validators[0].key, mempool=pool)
    durable_at_ack: list[tuple[int, int]] = []  # (messages acknowledged so far, rows then durable)
    lock = threading.Lock()
    client = bus._client
    sent_ack = client._send_puback

    def send_puback(mid: int):
        with lock:
            durable_at_ack.append((len(durable_at_ack) + 1, len(_pending(pool.path))))
        return sent_ack(mid)

    client._send_puback = send_puback  # every PUBACK the node sends (paho's own or deferred)
    envs = c.signed_readings(400, c.genesis.time, now)
    publisher = MqttBus(BrokerConfig.from_url(mosquitto.url), "publisher")
    try:
        node.start()  # subscribes; its loop (step) is not run, so nothing leaves the mempool
        assert bus.wait_connected(WAIT_S), bus.last_error
        publisher.start()
        assert publisher.wait_connected(WAIT_S), publisher.last_error
        assert bus.wait_subscribed(WAIT_S), bus.last_error
        for env in envs:
            publisher.publish(Topics.readings(c.community, env.signer), env.to_bytes())
        wait_for(lambda: len(durable_at_ack) >= len(envs), WAIT_S, "the node's acknowledgements")
    finally:
        publisher.stop()
        node.stop()
        pool.close()
        ledger.close()
    assert _pending(tmp_path / "node" / "mempool.sqlite") == {e.to_bytes() for e in envs}
    for acked, durable in durable_at_ack:
        assert durable >= acked, f"message {acked} acknowledged with only {durable} rows durable"
    assert len(commits) < len(envs) / 2, f"{len(commits)} mempool commits for {len(envs)} messages"


def test_a_pool_from_before_topics_opens_and_its_messages_have_no_topic(tmp_path):
    path = tmp_path / "mempool.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE pending (hash BLOB PRIMARY KEY, arrived REAL NOT NULL, raw BLOB NOT NULL)")
    conn.execute("INSERT INTO pending VALUES (?, 1.0, ?)", (Mempool.key(b"old"), b"old"))
    conn.commit()
    conn.close()
    pool = Mempool(path)
    try:
        assert pool.add(b"new", topic="peerwatt/oak-street/gov") is True
        assert pool.all() == [(b"old", ""), (b"new", "peerwatt/oak-street/gov")]
    finally:
        pool.close()
