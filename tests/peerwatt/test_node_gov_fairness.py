"""A node serves the shared gov topic per signer (found in a QA pass: one account's flood of
validly signed votes filled the gov queue and another member's proposal was turned away as busy;
peerwatt/node/inbox.py keys a shared topic's queue by signer, and the node must tell it the
payload)."""

from __future__ import annotations

from chain.canonical import dumps_checked
from peerwatt.bus import Topics
from peerwatt.node.inbox import FairInbox
from tests.support.memory_net import T0, Net


def test_a_flood_of_one_signers_votes_does_not_turn_away_anothers_proposal(tmp_path):
    net = Net(tmp_path, validators=1)
    node = net.nodes[0]
    node._inbox = FairInbox(max_per_topic=20)  # small shares, so a small flood fills one
    hostile, honest = net.c.members[0], net.c.members[1]
    gov = Topics.gov(net.c.community)
    for _ in range(200):  # more than the topic's whole bound (8 shares of 20)
        vote = hostile.sign(net.c.community, "vote", {"proposal": "ab" * 32, "vote": "yes"}, created=T0)
        net.publisher.publish(gov, vote.to_bytes())
    proposal = honest.sign(
        net.c.community,
        "propose",
        {"action": "set_param", "args": {"name": "x", "value": 1}, "deadline": T0 + 86_400},
        T0,
    )
    net.publisher.publish(gov, proposal.to_bytes())
    assert node.status()["rejected"].get("busy", 0) >= 200 - 20  # the flood beyond its share
    net.settle()
    assert proposal.tx_hash.hex() in node.ledger.chain_state["proposals"]


def test_messages_naming_signers_that_did_not_sign_them_take_no_share(tmp_path):
    """One operator account can publish on gov with any signer field: made-up key ids, or real
    members' ids over its own signature. Dropped before they queue, so they cannot fill the
    topic's shares (found in a QA pass: 8 made-up signers turned every proposal away as busy)."""
    net = Net(tmp_path, validators=1)
    node = net.nodes[0]
    node._inbox = FairInbox(max_per_topic=20)  # the topic holds 8 shares of 20
    hostile, honest = net.c.members[0], net.c.members[1]
    gov = Topics.gov(net.c.community)
    named = [f"{n:032x}" for n in range(100)] + [net.c.members[2].id]
    for n in range(200):
        vote = hostile.sign(net.c.community, "vote", {"proposal": "ab" * 32, "vote": "yes"}, created=T0)
        forged = vote.to_dict() | {"signer": named[n % len(named)]}
        net.publisher.publish(gov, dumps_checked(forged))
    proposal = honest.sign(
        net.c.community,
        "propose",
        {"action": "set_param", "args": {"name": "x", "value": 1}, "deadline": T0 + 86_400},
        T0,
    )
    net.publisher.publish(gov, proposal.to_bytes())
    rejected = node.status()["rejected"]
    assert rejected.get("busy", 0) == 0
    assert rejected.get("unknown_signer", 0) + rejected.get("bad_signature", 0) == 200
    net.settle()
    assert proposal.tx_hash.hex() in node.ledger.chain_state["proposals"]
