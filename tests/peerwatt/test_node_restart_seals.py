"""A validator restarted in the middle of a height keeps its own seal (in-process nodes on the
in-memory bus)."""

from __future__ import annotations

from chain.kvapp import KeyValueApp
from chain.verify import verify_store
from tests.support.memory_net import Net


def test_validator_restarted_after_its_precommit_commits_with_its_own_seal(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3
    net.send(2)
    net.nodes[0].step()  # node 0 proposes and prevotes
    net.nodes[1].step()  # prevotes
    net.nodes[3].step()  # prevotes, sees the polka and precommits (its seal)
    assert "precommit:0" in net.nodes[3]._core.sent
    net.crash(3)  # before any other precommit reached it
    for _ in range(3):
        for node in net.nodes[1:3]:
            node.step()  # validators 1 and 2 precommit: with node 3's seal, a quorum
    assert net.nodes[1].ledger.height == 1
    # back, with no peer to catch up from: the seals of 1 and 2 wait for it at the broker, and
    # with its own (in its consensus record) they make the block final there too
    node = net.start(3)
    node.step()
    assert node.status()["quarantined"] == 0
    assert node.ledger.height == 1
    assert node.ledger.head_hash == net.nodes[1].ledger.head_hash
    assert verify_store(node.ledger.store, KeyValueApp()).blocks == 1
