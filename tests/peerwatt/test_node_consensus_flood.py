"""One validator flooding the consensus topics costs the others a bounded amount, and the chain
goes on (found in a QA pass on a real broker: every message on ``blocks`` and ``seals/#`` went
into one unbounded queue and was parsed in full before any cheap check; 40 signed 8 MB proposals
of a validator that was not the proposer, 8 MB of junk 3 times a second on its own seals topic,
or one honest seal replayed 10,000 times a second froze every honest node for 30 to 100 s and grew
it from 46 to 626 MB, and its stall warning blamed the honest validators as silent).

Validator 3's node is down; the test publishes with its key what a hostile validator would.
"""

from __future__ import annotations

import logging

import pytest

from chain.block import ZERO_HASH
from chain.envelope import sign_envelope
from peerwatt.bus import Topics
from peerwatt.node import runtime
from peerwatt.node.inbox import BLOCK_SHARE, VOTE_SHARE
from tests.support.memory_net import T0, Net

HOSTILE = 3


@pytest.fixture
def net(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3: 0, 1 and 2 finalise without 3
    net.crash(HOSTILE)
    return net


def _live(net: Net) -> list:
    return [node for node in net.nodes if node is not None]


def _seals_topic(net: Net, index: int = HOSTILE) -> str:
    return Topics.seals(net.c.community, net.c.validators[index].id)


def _counting(monkeypatch, name: str) -> list:
    """Calls of runtime.<name> (what the node calls it with), still doing what it does."""
    calls: list = []
    real = getattr(runtime, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, name, counted)
    return calls


def _proposal(net: Net, signer: int, round_: int, tag: int) -> bytes:
    """A signed block of height 1 for ``round_`` (``tag`` makes each one different)."""
    node = _live(net)[0]
    body = {
        "height": 1,
        "prev": node.ledger.head_hash.hex(),
        "time": T0 + tag,
        "tx_root": ZERO_HASH,
        "result_root": ZERO_HASH,
        "state_root": ZERO_HASH,
        "sequencer": net.c.validators[signer].id,
        "round": round_,
        "txs": [],
        "results": [],
        "proposal_round": round_,
        "valid_round": -1,
    }
    key = net.c.validators[signer].key
    return sign_envelope(
        key, type="block", community=net.c.community, seq=1, body=body, created=T0 + 10
    ).to_bytes()


def _finalises(net: Net) -> None:
    net.send(1)
    net.advance(30)
    assert [node.ledger.height for node in _live(net)] == [1, 1, 1]


def test_consensus_messages_larger_than_their_limit_are_dropped_on_arrival_unparsed(net, monkeypatch):
    """(QA: 8,000,029 bytes of junk on a validator's seals topic were read in full before
    `seal_too_large`, 3 a second froze the chain 65 s and grew each node to 626 MB.)"""
    parsed = _counting(monkeypatch, "parse_envelope")
    junk = b'{"type":"seal","x":[' + b'{"a":1},' * 1_000_000 + b'{"a":1}]}'
    assert runtime.MAX_VOTE_BYTES == 64 * 1024 < len(junk) < runtime.MAX_PROPOSAL_BYTES
    net.publisher.publish(_seals_topic(net), junk)
    net.publisher.publish(_seals_topic(net), b"x" * (runtime.MAX_VOTE_BYTES + 1))
    net.publisher.publish(Topics.blocks(net.c.community), b"x" * (runtime.MAX_PROPOSAL_BYTES + 1))
    for node in _live(net):  # counted on arrival, nothing queued
        assert node._consensus_inbox.qsize() == 0
        assert node.status()["rejected"] == {"seal_too_large": 2, "block_too_large": 1}
    net.settle()
    assert not [args for args in parsed if len(args[0]) > runtime.MAX_VOTE_BYTES]
    _finalises(net)


def test_the_largest_message_a_proposer_may_send_is_what_the_builder_makes():
    """The blocks topic's limit is derived from what an honest proposer builds (runtime.first_that_fit:
    at most MAX_BLOCK_TX_BYTES of transactions, half of a block message, the rest for its header
    and results), not a number of its own."""
    assert runtime.MAX_BLOCK_TX_BYTES <= runtime.MAX_PROPOSAL_BYTES // 2
    assert runtime.MAX_PROPOSAL_BYTES == runtime.messages.MAX_BLOCK_BYTES
    assert runtime.MAX_VOTE_BYTES == runtime.messages.MAX_MESSAGE_BYTES


def test_a_validators_flood_of_its_seals_topic_fills_its_own_share_only(net, caplog):
    count, max_bytes = VOTE_SHARE
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        for k in range(count + 100):
            net.publisher.publish(_seals_topic(net), b'{"type":"seal","n":%d}' % k)
        for node in _live(net):
            assert node._consensus_inbox.qsize() == count  # memory bounded
            assert node.status()["rejected"]["seal_busy"] == 100
            # another validator's vote still has its room
            assert node._consensus_inbox.has_room("vote", net.c.validators[1].id, 400)
        net.settle()
        big = 60 * 1024  # ... and its bytes: junk near the 64 KiB limit
        for k in range(40):
            net.publisher.publish(_seals_topic(net), b'{"n":%06d,"pad":"' % k + b"x" * big + b'"}')
        for node in _live(net):
            assert node._consensus_inbox.qsize() == max_bytes // (big + 20)
    flood_lines = [
        r.getMessage() for r in caplog.records if "dropping the votes of validator" in r.getMessage()
    ]
    assert len(flood_lines) == 3, flood_lines  # one per node for this flood, not one per message
    assert all(f"validator-3 ({net.c.validators[HOSTILE].id})" in line for line in flood_lines)
    net.settle()
    _finalises(net)


def test_a_non_proposers_flood_of_signed_blocks_is_bounded_and_refused_unparsed(net, monkeypatch):
    """(QA: 40 signed proposals of 8 MB from a validator that was not the proposer, each parsed in
    full before `block_not_proposer`: every node stuck ~30 s, 46 -> 515 MB.)"""
    count, _ = BLOCK_SHARE
    node = _live(net)[0]
    hostile = net.c.validators[HOSTILE].id
    round_ = next(r for r in (0, 1) if node._core.proposer(r) != hostile)
    flood = {_proposal(net, HOSTILE, round_, tag) for tag in range(count + 6)}
    parsed = _counting(monkeypatch, "parse_envelope")
    for raw in flood:
        net.publisher.publish(Topics.blocks(net.c.community), raw)
    for node in _live(net):
        assert node._consensus_inbox.qsize() == count
        assert node.status()["rejected"]["block_busy"] == 6
    net.settle()
    assert not [args for args in parsed if bytes(args[0]) in flood]  # refused before parsing
    for node in _live(net):
        assert node.status()["rejected"]["block_not_proposer"] == count
    _finalises(net)


def test_junk_naming_the_proposer_as_its_signer_does_not_take_the_proposers_share(net):
    """A block message's share is its signer's only if that validator's key signed the bytes as
    they are: junk naming the proposer waits with the other unattributed ones, and the proposer's
    own block still gets through."""
    count, _ = BLOCK_SHARE
    proposer = _live(net)[0]._core.proposer(0)
    index = next(i for i, v in enumerate(net.c.validators) if v.id == proposer)
    for tag in range(count + 10):  # signed by validator 3, naming the proposer as signer
        forged = _proposal(net, HOSTILE, 0, tag).replace(
            net.c.validators[HOSTILE].id.encode(), proposer.encode()
        )
        net.publisher.publish(Topics.blocks(net.c.community), forged)
    for node in _live(net):
        assert node.status()["rejected"]["block_busy"] == 10
        assert node._consensus_inbox.has_room("block", proposer, runtime.MAX_PROPOSAL_BYTES)
    assert index != HOSTILE
    _finalises(net)
