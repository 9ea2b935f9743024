"""A validator that equivocates or floods its own messages costs every node a bounded amount
(found in a QA pass of the consensus: one validator's 3,000 different prevotes of one round grew
each node by 64.5 MB and wrote 2,999 alarm rows).

Per validator, kind and round a node keeps the first message and one different one (the
evidence), writes one equivocation alarm per validator and height, and refuses any further
different message before checking its signature, counting it in ``rejected``.
"""

from __future__ import annotations

import os

from chain.block import ZERO_HASH
from chain.consensus import PRECOMMIT, PREVOTE
from chain.envelope import sign_envelope
from peerwatt.bus import Topics
from tests.support.memory_net import T0, Net


def _alarms(node) -> int:
    return node.ledger.store.conn.execute("SELECT count(*) FROM local_alarms").fetchone()[0]


def _vote(net: Net, signer: int, kind: str, round_: int, header: str) -> None:
    key = net.c.validators[signer].key
    env = sign_envelope(
        key,
        type=kind,
        community=net.c.community,
        seq=1,
        body={"height": 1, "round": round_, "header": header},
        created=T0 + 10,
    )
    net.publisher.publish(Topics.seals(net.c.community, net.c.validators[signer].id), env.to_bytes())


def test_an_equivocators_votes_are_kept_twice_per_round_and_alarmed_once_per_height(tmp_path):
    net = Net(tmp_path)
    net.crash(1)  # validator 1's key sends what it likes; 0, 2 and 3 are a quorum
    bad = net.c.validators[1].id
    for _ in range(100):
        _vote(net, 1, "prevote", 0, os.urandom(32).hex())
        _vote(net, 1, "seal", 0, os.urandom(32).hex())
    net.settle()
    for node in (net.nodes[0], net.nodes[2], net.nodes[3]):
        core = node._core
        assert sum(1 for (_, _, signer, _) in node._votes if signer == bad) == 4  # 2 prevotes, 2 seals
        for kind in (PREVOTE, PRECOMMIT):
            assert sum(bad in signers for signers in core.votes_for[(kind, 0)].values()) == 2
        status = node.status()
        assert status["equivocations"] == 2  # one piece of evidence per kind and round
        assert status["rejected"]["seal_equivocation"] == 2 * 98
        assert _alarms(node) == 1  # one row per validator and height
    _vote(net, 1, "prevote", 1, "ab" * 32)  # its vote of another round still counts
    net.settle()
    assert net.nodes[2]._core.prevotes[1][bad].value == "ab" * 32
    net.send(1)
    net.advance(60)
    assert [n.ledger.height for n in net.nodes if n is not None] == [1, 1, 1]


def _proposal(net: Net, signer: int, round_: int, results: list, *, valid_round: int = -1) -> bytes:
    """A signed block of height 1 (its header need not re-execute: it is never voted for)."""
    node = next(n for n in net.nodes if n is not None)
    body = {
        "height": 1,
        "prev": node.ledger.head_hash.hex(),
        "time": T0,
        "tx_root": os.urandom(32).hex(),
        "result_root": ZERO_HASH,
        "state_root": ZERO_HASH,
        "sequencer": net.c.validators[signer].id,
        "round": round_,
        "txs": [],
        "results": results,
        "proposal_round": round_,
        "valid_round": valid_round,
    }
    key = net.c.validators[signer].key
    return sign_envelope(
        key, type="block", community=net.c.community, seq=1, body=body, created=T0 + 10
    ).to_bytes()


def test_a_proposer_keeps_at_most_two_blocks_a_round_in_memory(tmp_path):
    """A QA pass: 60 different signed proposals of ~1 MB in one round grew 4 nodes by 255 MB."""
    net = Net(tmp_path)
    net.crash(0)  # validator 0 proposes round 0 and sends what it likes
    junk = ["x" * 100] * 100
    for _ in range(30):
        net.publisher.publish(Topics.blocks(net.c.community), _proposal(net, 0, 0, junk))
    ahead = next(r for r in range(2, 10) if net.nodes[1]._core.proposer(r) == net.c.validators[0].id)
    net.publisher.publish(Topics.blocks(net.c.community), _proposal(net, 0, ahead, junk))
    net.settle()
    for node in net.nodes[1:]:
        assert len(node._blocks) == 2  # the first and the evidence
        status = node.status()
        assert status["rejected"]["block_equivocation"] == 28
        assert status["rejected"]["block_round_ahead"] == 1
        assert status["equivocations"] == 1 and _alarms(node) == 1
    net.send(1)
    net.advance(60)
    assert [n.ledger.height for n in net.nodes[1:]] == [1, 1, 1]
