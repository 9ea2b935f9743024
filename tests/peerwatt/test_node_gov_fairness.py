"""A node serves the shared gov topic per signer (found in a QA pass: one account's flood of
validly signed votes filled the gov queue and another member's proposal was turned away as busy;
peerwatt/node/inbox.py keys a shared topic's queue by signer, and the node must tell it the
payload)."""

from __future__ import annotations

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
