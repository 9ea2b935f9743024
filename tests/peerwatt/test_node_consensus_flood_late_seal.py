"""A late seal of a validator whose seal the store holds, and an exact copy of a message handled,
cost a look-up (found in a QA pass on a real broker: one honest validator's valid 341-byte seal of
a recent final height, replayed ~10,000 times a second for 40 s, was queued and ECDSA-checked
copy by copy before the store dropped it as stored: height 8 -> 9 in ~100 s, 46 -> 222 MB)."""

from __future__ import annotations

from chain.block import header_hash
from chain.envelope import parse_envelope, sign_envelope
from tests.peerwatt.test_node_consensus_flood import HOSTILE, _counting, _finalises, _live, _seals_topic, net
from tests.support.memory_net import T0

__all__ = ["net"]  # the fixture


def test_a_stored_late_seal_and_copies_of_it_cost_a_look_up(net, monkeypatch):
    """(QA: one honest validator's 341-byte seal of a recent final height replayed ~10,000 times a
    second for 40 s: each copy queued and ECDSA-checked before the store dropped it as stored;
    the chain went from height 8 to 9 in 100 s, 46 -> 222 MB.)"""
    _finalises(net)
    node = _live(net)[0]
    header = node.ledger.store.header(1)
    stored = dict(node.ledger.store.seal_rows(1))
    round_ = parse_envelope(
        next(iter(stored.values())), community=net.c.community, now=None, interval_s=None
    ).body["round"]
    checked = _counting(monkeypatch, "check_seal_for")
    # validator 3 (down while the block was made) sends its seal late: checked and stored, once
    late = sign_envelope(
        net.c.validators[HOSTILE].key,
        type="seal",
        community=net.c.community,
        seq=1,
        body={"height": 1, "round": round_, "header": header_hash(header).hex()},
        created=T0 + 20,
    ).to_bytes()
    for _ in range(200):
        net.publisher.publish(_seals_topic(net), late)
    assert [n._consensus_inbox.qsize() for n in _live(net)] == [1, 1, 1]  # copies of one waiting
    net.settle()
    assert len(checked) == 3  # one check a node
    assert all(net.c.validators[HOSTILE].id in dict(n.ledger.store.seal_rows(1)) for n in _live(net))
    for _ in range(200):  # handled: a copy is dropped on arrival
        net.publisher.publish(_seals_topic(net), late)
    assert [n._consensus_inbox.qsize() for n in _live(net)] == [0, 0, 0]
    # a stored validator's seal in other bytes (another `created`): dropped before its check
    signer = net.c.validators[1]
    again = sign_envelope(
        signer.key,
        type="seal",
        community=net.c.community,
        seq=1,
        body={"height": 1, "round": round_, "header": header_hash(header).hex()},
        created=T0 + 30,
    ).to_bytes()
    assert again not in stored.values()
    for _ in range(50):
        net.publisher.publish(_seals_topic(net, 1), again)
        net.settle()
    assert len(checked) == 3
    net.send(1, first=1)
    net.advance(30)
    assert [n.ledger.height for n in _live(net)] == [2, 2, 2]
