"""Catch-up from a slow or hostile peer is bounded in time, and such a peer is skipped for a while.

Found in a QA pass: ``fetch_blocks`` gave ``urlopen`` a 5 s timeout, which is per socket read, so
a validator answering catch-up requests one byte every 3 s held the caller (the node's main loop)
as long as it liked; on a 4-validator community all three honest nodes stopped making blocks,
logged nothing and did not stop on SIGTERM within 40 s.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest

from peerwatt.node.http_api import NodeHttpApi
from tests.support.catchup_client import fetch_blocks
from tests.support.http_peer import Answer, HttpPeer
from tests.support.memory_net import Net

DRIP_S = 0.3  # a byte this often: every socket read succeeds within any per-read timeout
DRIPS = 40  # 12 s in all


def _drip(where: str = "body") -> Answer:
    """An answer sent one byte at a time, in its body or in its headers (no Content-Length)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        try:
            if where == "body":
                handler.send_response(200)
                handler.end_headers()
                handler.wfile.write(b'{"blocks": [')
            else:
                handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
            handler.wfile.flush()
            for _ in range(DRIPS):
                time.sleep(DRIP_S)
                handler.wfile.write(b" " if where == "body" else b"a")
                handler.wfile.flush()
        except OSError:  # the client gave up
            return

    return answer


@pytest.fixture
def slow_peer():
    """Makes an HTTP peer that answers every request one byte at a time (in its body or headers)."""
    with ExitStack() as peers:
        yield lambda where="body": peers.enter_context(HttpPeer(_drip(where)))


@pytest.mark.parametrize("where", ["body", "headers"])
def test_fetch_blocks_ends_at_its_deadline_however_slowly_the_peer_sends(slow_peer, where):
    peer = slow_peer(where)
    started = time.monotonic()
    with pytest.raises((OSError, ValueError)) as failed:
        fetch_blocks(peer.address, 1, "oak-street", 900, timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"fetch_blocks returned after {elapsed:.1f} s (timeout_s=1.0)"
    assert "no complete reply within" in str(failed.value)


def test_fetch_blocks_ends_at_once_when_the_node_is_stopping(slow_peer):
    peer = slow_peer()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(OSError, match="the node is stopping"):
        fetch_blocks(peer.address, 1, "oak-street", 900, timeout_s=30.0, stop=stop)
    assert time.monotonic() - started < 1.5


def test_a_node_skips_a_slow_peer_for_a_while_and_catches_up_from_the_others(tmp_path, slow_peer, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    net = Net(tmp_path)
    net.crash(3)
    net.send(1)
    net.settle()
    assert net.nodes[0].ledger.height > 0
    api = NodeHttpApi(tmp_path / "n0", net.nodes[0].status, "127.0.0.1", 0)
    api.start()
    peer = slow_peer()
    try:
        back = net.start(3, peers=(peer.address, api.address))
        back.catchup_timeout_s = 1.0
        started = time.monotonic()
        back._catch_up()
        elapsed = time.monotonic() - started
        assert elapsed < 4.0, f"catch-up took {elapsed:.1f} s with one slow peer"
        assert back.ledger.height == net.nodes[0].ledger.height  # from the honest peer
        warned = [
            r for r in caplog.records if r.levelno == logging.WARNING and peer.address in r.getMessage()
        ]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
        assert "no complete reply within" in warned[0].getMessage()
        assert "skipping this peer for 30 s" in warned[0].getMessage()
        assert peer.requests == 1
        # asked again soon (a vote for a later height, the republish timer): the slow peer is skipped
        started = time.monotonic()
        back._catch_up()
        assert time.monotonic() - started < 1.0
        assert peer.requests == 1
        net.now += 31  # its backoff is over: asked once more, then skipped for twice as long
        back._catch_up()
        assert peer.requests == 2
        warned = [r.getMessage() for r in caplog.records if peer.address in r.getMessage()]
        assert "skipping this peer for 60 s" in warned[-1]
    finally:
        api.stop()


def test_sigterm_during_the_catch_up_at_start_stops_node_run_at_once(tmp_path) -> None:
    """`peerwatt node run` caught up at start without its stop event, so a SIGTERM then waited
    for the catch-up (up to its deadline for each peer) before the node saw it."""
    import signal

    from chain.keys import save_private_key
    from chain.kvapp import KeyValueApp
    from peerwatt.ports import free_port
    from tests.support.localnet import make_community
    from tests.support.procnet import NodeProcess, create_store, wait_for

    c = make_community(validators=2, members=1)
    peer = HttpPeer(_drip())
    node = NodeProcess(1, tmp_path, "validator", f"mqtt://127.0.0.1:{free_port()}", [peer.address])
    node.dir.mkdir(parents=True)
    create_store(node.dir / "data", c, KeyValueApp)
    save_private_key(c.validators[1].key, node.dir / "validator.key")
    node.write_config(0.2)
    node.start()
    try:
        wait_for(lambda: peer.requests > 0, 30, "the catch-up request at start")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        node.proc.wait(15)
        assert time.monotonic() - started < 2.5, node.log_path.read_text()
    finally:
        node.kill()
        peer.close()


def test_sigusr1_dumps_every_threads_stack_and_the_node_runs_on(tmp_path) -> None:
    """A node that does not answer or does not stop says where it waits: `kill -USR1 PID` writes
    every thread's stack to its log (added after a validator once did not exit within 15 s of
    SIGTERM in a full test run; tests/support/procnet.py now asks for it before killing)."""
    import signal

    from chain.keys import save_private_key
    from chain.kvapp import KeyValueApp
    from peerwatt.ports import free_port
    from tests.support.localnet import make_community
    from tests.support.procnet import NodeProcess, create_store, wait_for

    c = make_community(validators=1, members=1)
    node = NodeProcess(0, tmp_path, "sequencer", f"mqtt://127.0.0.1:{free_port()}", [])
    node.dir.mkdir(parents=True)
    create_store(node.dir / "data", c, KeyValueApp)
    save_private_key(c.validators[0].key, node.dir / "validator.key")
    node.write_config(0.2)
    node.start()
    try:
        wait_for(lambda: node.status() is not None, 30, "the node's API")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "Current thread" in node.log_path.read_text(), 10, "the stacks in the log")
        assert node.proc.poll() is None and node.status() is not None  # it runs on
        assert node.stop() == 0
    finally:
        node.kill()
