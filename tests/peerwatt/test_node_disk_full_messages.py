"""A node's log on a full disk: one line with what to do when a write fails, one line when writes
work again, and each later episode logged again (docs/operations.md).

Found in a QA pass: the sequencer logged `storing blocks again` while the disk was still full (a
catch-up that fetched nothing), `cannot write the mempool ...: database or disk is full` had no
hint and no line when the mempool was writable again, and a second disk-full episode of the
mempool in the same process was not logged at all.
"""

from __future__ import annotations

import logging

import pytest

from chain.store import StoreError
from peerwatt.node.http_api import NodeHttpApi
from tests.support.memory_net import Net

FULL = "database or disk is full"


def _fill(conn) -> None:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full


def _free(conn) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")  # space returns


def _lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_storing_blocks_again_only_after_a_block_was_stored(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    net = Net(tmp_path)
    net.send(1)
    net.settle()
    api = NodeHttpApi(tmp_path / "n0", net.nodes[0].status, "127.0.0.1", 0)
    api.start()
    try:
        node = net.nodes[1]
        node.peers = (api.address,)
        store = node.ledger.store
        _fill(store.conn)
        with pytest.raises(StoreError) as failed:  # a write of this node's, as its proposal's record
            store.add_alarm(0, "test", {"x": "y" * 100_000})
        node._store_failed(node.ledger.height + 1, failed.value)
        assert len(_lines(caplog, "cannot store block")) == 1
        node._catch_up()  # the peer has no block this node lacks: nothing was stored
        assert _lines(caplog, "storing blocks again") == []
        assert node.status()["store_error"]
        _free(store.conn)
        net.send(1, first=100)
        net.settle()
        assert node.ledger.height == net.nodes[0].ledger.height
        assert _lines(caplog, "storing blocks again") == ["storing blocks again"]
        assert node.status()["store_error"] is None
    finally:
        api.stop()


def test_a_full_mempool_is_logged_with_a_hint_when_writable_again_and_each_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    net = Net(tmp_path)
    net.send(1)
    net.settle()
    node = net.nodes[0]
    conn = node.mempool._conn
    for episode in (1, 2):
        _fill(conn)
        net.send(20, first=1000 * episode)
        net.settle()
        errors = _lines(caplog, "cannot write the mempool")
        assert len(errors) == episode, errors  # once an episode, not once a process
        assert FULL in errors[-1] and "free space, the node resumes" in errors[-1], errors[-1]
        assert len(_lines(caplog, "writing the mempool")) == episode - 1
        _free(conn)
        net.send(1, first=1000 * episode + 500)
        net.settle()
        again = _lines(caplog, "writing the mempool")
        assert len(again) == episode and str(node.mempool.path) in again[-1], again
    assert len(node.mempool) == 0  # nothing lost: every message reached a block
