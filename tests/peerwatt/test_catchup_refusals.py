"""What a node says when catch-up cannot use a peer's blocks (found in a QA pass).

- A block refused in catch-up was logged at INFO, once per peer and error type, without its
  height, and counted nowhere: now a WARNING with the height and the reason (at most once per peer
  a minute, saying how many were not logged), counted in ``blocks_refused`` as ``catchup_<reason>``.
- After an erasure (``erase_member`` and ``peerwatt node erase``), a node made from genesis can
  never catch up (an erased block cannot be re-executed); it logged that once at INFO per peer as
  "block has erased payloads". Now one WARNING: at which block, and what to do.
"""

from __future__ import annotations

import json
import logging

import pytest

from chain.engine import Ledger
from market.app import MarketApp
from meter_agent.clock import SimClock
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from peerwatt.node.erasure import erase_departed
from peerwatt.node.http_api import NodeHttpApi
from peerwatt.node.ledger_api import blocks_json
from tests.reliability.test_erasure import vote_erasure
from tests.support.http_peer import HttpPeer, send_body
from tests.support.market_ledger import SETTLED_AT, T0, build_market
from tests.support.memory_net import Net


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_a_block_refused_in_catch_up_is_counted_and_logged_with_its_height(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    net = Net(tmp_path)
    net.crash(3)
    net.send(1)
    net.settle()
    blocks = blocks_json(net.nodes[0].ledger.store, 1, 100)
    for block in blocks:
        block["seals"] = []  # a peer that serves blocks no quorum sealed
    reply = json.dumps({"blocks": blocks}).encode()  # refused from its first bytes (5a18c32)
    with HttpPeer(lambda handler: send_body(handler, reply)) as hostile:
        back = net.start(3, peers=(hostile.address,))
        back._catch_up()
        assert back.ledger.height == 0
        assert back.status()["blocks_refused"] == {"catchup_no_quorum": 1}
        lines = _warnings(caplog, hostile.address)
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]
        assert "refused block 1 (no_quorum" in lines[0]
        net.now += 31  # asked again after its backoff, within a minute of the line: counted, not logged
        back._catch_up()
        assert back.status()["blocks_refused"] == {"catchup_no_quorum": 2}
        assert len(_warnings(caplog, hostile.address)) == 1
        net.now += 61  # 30 s backoff doubled, and the minute is over
        back._catch_up()
        assert back.status()["blocks_refused"] == {"catchup_no_quorum": 3}
        lines = _warnings(caplog, hostile.address)
        assert len(lines) == 2
        assert "refused block 1 (no_quorum" in lines[1]
        assert "1 more refused block(s) from this peer not logged" in lines[1]


@pytest.fixture
def erased_peer(tmp_path):
    c = build_market(tmp_path, validators=3, members=4)
    vote_erasure(c, 0, SETTLED_AT + 10)
    after = SETTLED_AT + 40 * 900  # past the correction window: the member's payloads may go
    c.run_block([], after)
    for ledger in c.ledgers:
        ledger.close()
    data = tmp_path / "validator-0"
    assert erase_departed(data, now=after).erased_members
    api = NodeHttpApi(data, dict, "127.0.0.1", 0)
    api.start()
    yield c, api.address
    api.stop()


def test_a_node_from_genesis_says_once_that_it_cannot_catch_up_past_an_erasure(tmp_path, erased_peer, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    c, peer = erased_peer
    ledger = Ledger.create(tmp_path / "fresh", c.genesis, MarketApp())
    now = [1000.0]
    node = Node(
        ledger,
        MemoryBus(MemoryBroker(), "fresh"),
        role="observer",
        clock=SimClock(T0, 1.0),
        peers=(peer, peer + "/"),  # the same store twice: two peers that both erased
        monotonic=lambda: now[0],
    )
    try:
        node._catch_up()
        now[0] += 31
        node._catch_up()
        lines = _warnings(caplog, "erased payloads")
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]
        assert f"at block {ledger.height + 1}" in lines[0]
        assert "cannot rebuild its state from genesis" in lines[0]
        assert "copy" in lines[0] and "ledger.sqlite" in lines[0]
    finally:
        ledger.close()


def test_a_copied_data_folder_does_not_give_the_node_another_validators_consensus_record(tmp_path, caplog):
    """docs/operations.md, "Copying a peer's ledger": the copy holds the peer's consensus record."""
    from peerwatt.node.runtime import BLOCKS_KEY, CONSENSUS_KEY

    caplog.set_level(logging.INFO, logger="peerwatt")
    net = Net(tmp_path)
    net.send(1)
    proposer = net.nodes[0]
    for _ in range(5):
        proposer.step()  # it proposes: its record holds the signed proposal
    record = proposer.ledger.store.get_local(CONSENSUS_KEY)
    assert record is not None and b"proposal" in record
    copy = net.nodes[1]
    copy.ledger.store.set_local(CONSENSUS_KEY, record)
    copy.ledger.store.set_local(BLOCKS_KEY, proposer.ledger.store.get_local(BLOCKS_KEY))
    copy._new_height()
    assert copy._sent == {}
    assert copy._core.sent == {}
    lines = [r.getMessage() for r in caplog.records if "a copied data folder" in r.getMessage()]
    assert lines == [
        f"the consensus record in this store is {proposer.key_id}'s, not this node's (a copied data "
        "folder): not taken back"
    ]
