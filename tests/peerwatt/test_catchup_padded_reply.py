"""A catch-up reply holds what was asked and nothing else (found in a QA pass).

A peer answered ``{"blocks":[],"x":[{},{},...]}``: 60 MiB held the node's loop 8 s per attempt (99
MiB: 30 s and 3 GB), and as an empty reply was no failure the peer was asked again every 2 s, never
backed off. Now the reply's first bytes refuse it, a reply is bounded by the blocks asked for, and a
parse that ends past the reply's deadline is a CatchupTimeout.
"""

from __future__ import annotations

import json
import time

import pytest

from peerwatt.node import catchup
from peerwatt.node.catchup import CatchupTimeout, max_reply_bytes
from peerwatt.node.ledger_api import blocks_json
from tests.support.catchup_client import fetch_blocks
from tests.support.http_peer import HttpPeer, send_body
from tests.support.memory_net import Net

PADDED_EMPTY = b'{"blocks":[],"x":[' + b"{}," * (2 * 1024 * 1024) + b"{}]}"  # 6 MiB


@pytest.fixture
def peer():
    peers: list[HttpPeer] = []

    def make(body: bytes) -> HttpPeer:
        peers.append(HttpPeer(lambda handler: send_body(handler, body)))
        return peers[-1]

    yield make
    for one in peers:
        one.close()


def test_a_padded_empty_reply_is_a_failure_the_node_backs_off_from(tmp_path, peer):
    hostile = peer(PADDED_EMPTY)
    net = Net(tmp_path)
    node = net.nodes[3]
    node.peers = (hostile.address,)
    net.now += 3
    started = time.perf_counter()
    node._catch_up()
    assert time.perf_counter() - started < 1.0
    state = node._peer_catchup[hostile.address]
    assert state.failures == 1
    assert state.skip_until > net.now


@pytest.mark.parametrize(
    "body, why",
    [
        (PADDED_EMPTY, "no blocks, yet"),
        (b'{"blocks": []' + b" " * 1000 + b"}", "no blocks, yet"),
        (b'{"x": 1, "blocks": []}', "does not begin with its 'blocks' list"),
        (b"[]", "does not begin with its 'blocks' list"),
    ],
)
def test_a_reply_is_refused_by_its_first_bytes(peer, body, why):
    with pytest.raises(ValueError, match=why):
        fetch_blocks(peer(body).address, 1, "oak-street", 900, timeout_s=5.0)


def test_an_honest_empty_reply_is_no_failure(peer):
    assert fetch_blocks(peer(json.dumps({"blocks": []}).encode()).address, 1, "oak-street", 900) == []


def _blocks(tmp_path) -> tuple[Net, list]:
    net = Net(tmp_path)
    net.send(1)
    net.settle()
    net.send(1)
    net.settle()
    blocks = blocks_json(net.nodes[0].ledger.store, 1, 100)
    assert len(blocks) >= 2
    return net, blocks


def test_blocks_with_an_unknown_key_beside_them_are_refused(tmp_path, peer):
    net, blocks = _blocks(tmp_path)
    community, interval_s = net.nodes[0].community, net.nodes[0].ledger.genesis.interval_s
    honest = peer(json.dumps({"blocks": blocks}).encode())
    assert len(fetch_blocks(honest.address, 1, community, interval_s)) == len(blocks)
    padded = peer(json.dumps({"blocks": blocks, "x": [{}] * 1000}).encode())
    with pytest.raises(ValueError, match="nothing else"):
        fetch_blocks(padded.address, 1, community, interval_s)


def test_more_blocks_than_asked_for_are_refused(tmp_path, peer):
    net, blocks = _blocks(tmp_path)
    community, interval_s = net.nodes[0].community, net.nodes[0].ledger.genesis.interval_s
    hostile = peer(json.dumps({"blocks": blocks}).encode())
    with pytest.raises(ValueError, match=f"{len(blocks)} blocks, 1 asked for"):
        fetch_blocks(hostile.address, 1, community, interval_s, limit=1)


def test_a_reply_is_bounded_by_the_blocks_asked_for(peer):
    size = max_reply_bytes(1) + 1
    hostile = peer(b'{"blocks": [' + b" " * (size - 14) + b"]}")
    with pytest.raises(ValueError, match=f"reply larger than {size - 1} bytes"):
        fetch_blocks(hostile.address, 1, "oak-street", 900, limit=1)


def test_a_parse_that_ends_past_the_deadline_is_a_timeout(peer, monkeypatch):
    parse = catchup.loads_strict

    def slow_parse(raw, **kwargs):
        time.sleep(0.5)
        return parse(raw, **kwargs)

    monkeypatch.setattr(catchup, "loads_strict", slow_parse)
    with pytest.raises(CatchupTimeout, match="past its deadline"):
        fetch_blocks(peer(b'{"blocks": []}').address, 1, "oak-street", 900, timeout_s=0.2)


def test_a_largest_block_of_non_ascii_text_is_fetched(tmp_path):
    """Found in a review: the bound of 2x the block's size per block refused a legal block of
    emoji text, which the API's JSON escapes to 3x its canonical bytes (a 4-byte character is 12
    bytes as two \\u escapes): no node could catch up past it, at any batch size."""
    from chain.canonical import dumps_checked
    from chain.kvapp import KeyValueApp
    from chain.messages import MAX_BLOCK_BYTES
    from peerwatt.node.http_api import NodeHttpApi
    from tests.support.localnet import make_community

    c = make_community(validators=3, members=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    t = c.genesis.time + 10
    args = {"action": "set_param", "args": {"x": "\U0001f600" * 15000}, "deadline": t + 3600}
    # larger than a live proposal may be (MAX_BLOCK_TX_BYTES of transactions), as a block made
    # before that bound may be: catch-up takes any final block up to MAX_BLOCK_BYTES
    proposals = [c.members[0].sign(c.community, "propose", args, created=t) for _ in range(130)]
    block = c.ledgers[0].propose(proposals, t)
    c.commit_as_final(block, t)
    assert 0.9 * MAX_BLOCK_BYTES < len(dumps_checked(block.to_body())) <= MAX_BLOCK_BYTES
    for ledger in c.ledgers:
        ledger.close()
    api = NodeHttpApi(tmp_path / "validator-1", dict, "127.0.0.1", 0)
    api.start()
    try:
        got = fetch_blocks(api.address, 1, c.community, c.genesis.interval_s, timeout_s=30, limit=1)
    finally:
        api.stop()
    assert [b.hash for b, _seals in got] == [block.hash]
