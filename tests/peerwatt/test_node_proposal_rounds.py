"""A proposal's block must be created in the round it is proposed in, or, proposed again (its
valid round >= 0, line 15 of the paper), in that valid round or before (docs/ledger.md: a header's
``sequencer`` and ``round`` are the validator that created the block and the round it did).

Found in a QA pass: validator 0 proposed in round 0 a block whose header said validator 2 created
it in round 1001 (validate only checks that the sequencer is that round's proposer); it became
final and the chain's sequencer moved to validator 2.
"""

from __future__ import annotations

from chain.envelope import sign_envelope
from peerwatt.bus import Topics
from tests.support.memory_net import Net


def _proposal(net: Net, signer, block, proposal_round: int, valid_round: int) -> bytes:
    body = dict(block.to_body(), proposal_round=proposal_round, valid_round=valid_round)
    env = sign_envelope(
        signer.key, type="block", community=net.c.community, seq=1, body=body, created=int(net.clock.now())
    )
    return env.to_bytes()


def _validator(net: Net, key_id: str):
    return next(v for v in net.c.validators if v.id == key_id)


def test_a_block_claiming_another_round_and_creator_is_refused(tmp_path):
    net = Net(tmp_path)
    net.crash(0)  # validator 0, round 0's proposer, proposes what it likes
    net.send(1)
    net.settle()
    honest = net.nodes[1]
    later = next(r for r in range(1000, 1100) if honest._core.proposer(r) == net.c.validators[2].id)
    block = honest.ledger.propose([e for _, e in honest._pending], int(net.clock.now()), round_=later)
    net.publisher.publish(Topics.blocks(net.c.community), _proposal(net, net.c.validators[0], block, 0, -1))
    net.settle()
    for node in net.nodes[1:]:
        assert node.status()["rejected"].get("block_wrong_round") == 1
        assert node._core.proposals == {}
    net.advance(60)  # round 0 times out; round 1's proposer creates a block in round 1
    header = honest.ledger.store.header(1)
    assert {n.ledger.height for n in net.nodes[1:]} == {1}
    assert header["round"] >= 1 and header["round"] != later
    assert header["sequencer"] == honest.ledger.sequencer() == _validator(net, header["sequencer"]).id


def test_a_block_proposed_again_was_created_in_its_valid_round_or_before(tmp_path):
    net = Net(tmp_path)
    net.send(1)
    node = net.nodes[2]
    node._drain(node._inbox)  # its transactions, nothing else: still in round 0
    core = node._core
    made_in_0 = node.ledger.propose([e for _, e in node._pending], int(net.clock.now()), round_=0)
    assert made_in_0.header["sequencer"] == core.proposer(0)
    second = _validator(net, core.proposer(1))
    # round 1's proposer proposes it again with valid round 0 (what line 15 sends): taken
    node._take_block(_proposal(net, second, made_in_0, 1, 0))
    assert core.proposals[1].value == made_in_0.hash.hex()
    assert "block_wrong_round" not in node.status()["rejected"]
    # the same block as a new block of round 1 (valid round -1): it was not created in round 1
    node._take_block(_proposal(net, second, made_in_0, 1, -1))
    assert node.status()["rejected"].get("block_wrong_round") == 1
