"""Sequencer + validators as in-process nodes on the in-memory bus: fast network scenarios."""

from __future__ import annotations

import pytest

from chain.envelope import parse_envelope, verify_envelope
from chain.execute import public_key_from_hex
from chain.kvapp import KeyValueApp
from chain.verify import verify_store
from dashboard.ledger import LedgerReader
from peerwatt.bus import Topics
from peerwatt.node.http_api import NodeHttpApi
from tests.support.memory_net import T0, Net, dump


def test_transactions_reach_final_blocks_on_every_node(tmp_path):
    net = Net(tmp_path)
    sent = net.send(20)
    net.settle()
    heights = {n.ledger.height for n in net.nodes}
    assert len(heights) == 1 and heights.pop() >= 1
    stored = sum(n for (n,) in net.nodes[0].ledger.store.conn.execute("SELECT count(*) FROM txs"))
    assert stored == len(sent) == 120
    dumps = [dump(n.ledger) for n in net.nodes]
    assert all(d == dumps[0] for d in dumps)
    for node in net.nodes:
        assert verify_store(node.ledger.store, KeyValueApp()).txs == 120
    assert len(net.nodes[0].mempool) == 0


def test_one_validator_down_chain_goes_on_two_down_it_halts_safely(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3
    net.crash(3)
    net.send(2)
    net.settle()
    h = net.nodes[0].ledger.height
    assert h >= 1
    net.crash(2)
    net.send(2, first=100)
    net.settle()
    assert net.nodes[0].ledger.height == h  # no quorum: nothing finalised
    assert net.nodes[1].ledger.height == h
    net.start(2)
    net.settle()
    assert net.nodes[0].ledger.height == h + 1
    # validator 3 was down all along: it catches up over the HTTP API of a peer
    api = NodeHttpApi(tmp_path / "n1", net.nodes[1].status, "127.0.0.1", 0)
    api.start()
    try:
        node3 = net.start(3, peers=(api.address,))
        net.send(1, first=200)
        net.settle()
        assert node3.ledger.height == net.nodes[0].ledger.height
        assert verify_store(node3.ledger.store, KeyValueApp()).blocks == node3.ledger.height
    finally:
        api.stop()


def test_sequencer_crash_loses_nothing_and_stores_nothing_twice(tmp_path):
    net = Net(tmp_path)
    sent = net.send(5)
    # the sequencer took the messages into its mempool, then dies before finishing anything
    for node in net.nodes[1:]:
        node.step()
    net.crash(0)
    sent += net.send(5, first=50)  # queued at the broker for the sequencer's session
    net.start(0)
    net.settle()
    hashes = [bytes(h) for (h,) in net.nodes[0].ledger.store.conn.execute("SELECT hash FROM txs")]
    assert len(hashes) == len(set(hashes)) == len(sent)
    assert {e.tx_hash for e in sent} == set(hashes)


def test_proposer_crash_with_unfinished_block_reproposes_it_identically(tmp_path):
    net = Net(tmp_path)
    net.send(3)
    net.nodes[0].step()  # proposes (and prevotes); the others have not answered yet
    proposal = net.nodes[0]._core.sent["proposal:0"]
    first_hash = proposal.value
    net.nodes[1].step()  # validator 1 prevotes it
    net.crash(0)
    node = net.start(0)  # takes back its record: the same proposal, never a second one
    assert node._core.sent["proposal:0"] == proposal
    net.settle()
    assert all(n.ledger.height == 1 for n in net.nodes)
    assert all(n.ledger.head_hash.hex() == first_hash for n in net.nodes)
    assert all(n.status()["equivocations"] == 0 for n in net.nodes)


def test_rejections_are_counted_by_reason(tmp_path):
    net = Net(tmp_path)
    env = net.send(1)[0]
    net.settle()
    net.publisher.publish(Topics.readings(net.c.community, env.signer), env.to_bytes())  # replay
    net.publisher.publish(Topics.readings(net.c.community, env.signer), b'{"not": "a message"}')
    net.settle()
    rejected = net.nodes[0].status()["rejected"]
    assert rejected.get("replay") == 1 and rejected.get("missing_field") == 1


@pytest.mark.parametrize(
    "path", ["/v1/status", "/v1/blocks?from=0&limit=5", "/v1/proof?height=1&index=0", "/metrics"]
)
def test_http_api(tmp_path, path):
    import json
    import urllib.request

    net = Net(tmp_path, validators=1)
    net.send(1)
    net.settle()
    api = NodeHttpApi(tmp_path / "n0", net.nodes[0].status, "127.0.0.1", 0)
    api.start()
    try:
        with urllib.request.urlopen(api.address + path, timeout=5) as response:
            raw = response.read()
    finally:
        api.stop()
    if path == "/metrics":
        text = raw.decode()
        assert "peerwatt_node_height 1.0" in text and "peerwatt_node_accepted_total 6.0" in text
        return
    body = json.loads(raw)
    assert body
    if path.startswith("/v1/proof"):
        from chain.block import result_leaves
        from chain.merkle import proof_from_hex, verify_inclusion

        leaf = result_leaves([body["result"]])[0]
        assert verify_inclusion(
            leaf,
            0,
            body["tree_size"],
            proof_from_hex(body["proof"]),
            bytes.fromhex(body["header"]["result_root"]),
        )


def test_full_disk_on_a_validator_is_reported_and_recovered(tmp_path):
    net = Net(tmp_path)
    net.send(1)
    net.settle()
    store = net.nodes[1].ledger.store
    (pages,) = store.conn.execute("PRAGMA page_count").fetchone()
    store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    net.send(30, first=10)
    net.settle()
    assert net.nodes[1].status()["store_error"] and "full" in net.nodes[1].status()["store_error"]
    assert net.nodes[1].ledger.height < net.nodes[0].ledger.height  # nothing half-written
    store.conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
    net.send(1, first=100)
    net.settle()
    assert net.nodes[1].status()["store_error"] is None
    assert net.nodes[1].ledger.height == net.nodes[0].ledger.height
    assert verify_store(net.nodes[1].ledger.store, KeyValueApp()).blocks == net.nodes[1].ledger.height


def test_clock_skew_is_refused_with_a_reason(tmp_path):
    net = Net(tmp_path)
    meter = net.c.meters[0]
    now = int(net.clock.now())
    body = {"interval": T0, "import_wh": 1, "export_wh": 0, "serial": "S", "profile": "p"}
    ahead = meter.sign(net.c.community, "reading", body, created=now + 600)  # clock 10 minutes fast
    behind = meter.sign(net.c.community, "reading", body, created=now - 7200, ttl_s=3600)  # slow / stale
    for env in (ahead, behind):
        net.publisher.publish(Topics.readings(net.c.community, meter.id), env.to_bytes())
    net.settle()
    rejected = net.nodes[0].status()["rejected"]
    assert rejected.get("from_future") == 1 and rejected.get("expired") == 1
    assert net.nodes[0].ledger.height == 0  # nothing was booked


def test_sequencer_restarting_after_validators_finalised_its_block_finishes_it(tmp_path):
    net = Net(tmp_path)
    net.send(3)
    net.nodes[0].step()  # proposes, seals, publishes
    for _ in range(3):
        for node in net.nodes[1:]:
            node.step()  # validators seal, see the quorum, and commit
    assert all(n.ledger.height == 1 for n in net.nodes[1:]) and net.nodes[0].ledger.height == 0
    net.crash(0)  # the seals waiting in the sequencer's memory are lost with it
    net.start(0)
    net.settle()
    assert net.nodes[0].ledger.height == 1
    assert net.nodes[0].ledger.head_hash == net.nodes[1].ledger.head_hash
    net.send(1, first=10)
    net.settle()
    assert {n.ledger.height for n in net.nodes} == {2}


def test_proposer_dies_the_next_in_turn_takes_over_and_keeps_the_role(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3: one may fail
    first = net.nodes[0]._core.proposer(0)
    dead = next(i for i, n in enumerate(net.nodes) if n.key_id == first)
    net.crash(dead)
    sent = net.send(2)
    net.settle()
    live = [n for n in net.nodes if n is not None]
    assert all(n.ledger.height == 0 for n in live)  # nobody proposes round 0
    net.advance(live[0].timeouts.propose_s + live[0].timeouts.precommit_s + 1)
    assert {n.ledger.height for n in live} == {1}
    header = live[0].ledger.head
    assert header["round"] >= 1 and header["sequencer"] != first
    assert all(n.status()["failovers"] >= 1 for n in live)
    reader = LedgerReader(tmp_path / f"n{(dead + 1) % 4}")  # what the dashboard shows
    assert reader.failovers() == 1 and reader.sequencer() == header["sequencer"]
    reader.close()
    stored = {bytes(h) for (h,) in live[0].ledger.store.conn.execute("SELECT hash FROM txs")}
    assert stored == {e.tx_hash for e in sent}  # nothing the dead proposer held is lost
    # the new proposer keeps the role: the next block needs no timeout
    net.send(1, first=100)
    net.settle()
    net.advance(0.5)
    assert {n.ledger.height for n in live} == {2} and live[0].ledger.head["round"] == 0
    assert live[0].ledger.sequencer() == header["sequencer"]
    # the old proposer comes back and follows the chain from the bus and its peers
    api = NodeHttpApi(tmp_path / f"n{(dead + 1) % 4}", live[0].status, "127.0.0.1", 0)
    api.start()
    try:
        back = net.start(dead, peers=(api.address,))
        back.catch_up_at_start()
        net.send(1, first=200)
        net.settle()
        net.advance(1)
    finally:
        api.stop()
    assert {n.ledger.height for n in net.nodes} == {3}
    for node in net.nodes:
        assert verify_store(node.ledger.store, KeyValueApp()).blocks == 3


def test_a_locked_validator_keeps_the_prevotes_behind_its_lock_across_a_restart(tmp_path):
    """The polka behind a lock may exist nowhere else once its signers are gone; the validator
    persists those signed prevotes and sends them again (chain/consensus.py record())."""
    net = Net(tmp_path)
    net.send(1)
    for i in (0, 1, 2):  # proposal and prevotes; node 2 sees the polka first and locks
        net.nodes[i].step()
    locked = net.nodes[2]._core
    assert locked.locked_round == 0
    relay = list(net.nodes[2]._relay)
    assert len(relay) >= 3
    net.crash(2)
    back = net.start(2)
    assert back._relay == relay and back._core.locked_value == locked.locked_value
    signers = set()
    for raw in relay:
        vote = parse_envelope(raw, community=net.c.community, now=None, interval_s=None)
        key = back.ledger.validators()[vote.signer]["key"]
        verify_envelope(vote, public_key_from_hex(key), key_id_hex=vote.signer)
        assert (vote.type, vote.body["header"]) == ("prevote", locked.locked_value)
        signers.add(vote.signer)
    assert len(signers) >= 3
    net.settle()
    assert {n.ledger.height for n in net.nodes} == {1}
