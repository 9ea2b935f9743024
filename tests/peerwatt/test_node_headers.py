"""The sequencer publishes each final block's header with its seals on the headers topic: what a
household's light client may read instead of the full blocks (docs/bus.md, docs/privacy.md)."""

from __future__ import annotations

from chain.block import header_hash
from chain.canonical import dumps_checked, loads_strict
from chain.engine import check_seal_for
from chain.envelope import parse_envelope
from peerwatt.bus import MemoryBus, Topics
from tests.support.memory_net import Net


def test_each_final_header_is_published_with_a_quorum_of_seals_and_the_last_is_retained(tmp_path):
    net = Net(tmp_path)
    community = net.c.community
    arrived: list[bytes] = []
    household = MemoryBus(net.broker, "household")
    household.subscribe(Topics.headers(community), lambda t, p: arrived.append(p))
    household.start()
    net.send(3)
    net.settle()
    net.send(2, first=10)
    net.settle()
    sequencer = net.nodes[0]
    height = sequencer.ledger.height
    assert height >= 2
    validators = dict(sequencer.ledger.validators())
    heights = []
    for payload in arrived:
        message = loads_strict(payload)
        assert set(message) == {"header", "seals"}
        header = message["header"]
        assert header == sequencer.ledger.store.header(header["height"])
        signers = set()
        for seal_obj in message["seals"]:
            seal = parse_envelope(dumps_checked(seal_obj), community=community, now=None, interval_s=None)
            check_seal_for(validators, community, header["height"], header_hash(header), seal)
            signers.add(seal.signer)
        assert len(signers) >= sequencer.ledger.quorum()
        heights.append(header["height"])
    assert heights == list(range(1, height + 1))  # every final block once, in order

    late = []
    newcomer = MemoryBus(net.broker, "newcomer")
    newcomer.subscribe(Topics.headers(community), lambda t, p: late.append(p))
    newcomer.start()
    assert [loads_strict(p)["header"]["height"] for p in late] == [height]  # retained: the last one
