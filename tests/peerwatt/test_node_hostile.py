"""Hostile input to a node: one message never ends the process, nor makes a sender forget.

Each test reproduces an attack of issue 13 on the in-memory bus with the real node logic.
"""

from __future__ import annotations

import collections
import json

import pytest

from chain.envelope import Rejected
from chain.kvapp import KeyValueApp
from chain.notice import open_notice, refusal_threshold
from chain.verify import verify_store
from meter_agent.receipts import ReceiptError
from peerwatt.bus import MemoryBus, Topics
from peerwatt.metrics import exposition, registry_for
from peerwatt.node.http_api import NodeHttpApi
from tests.support.memory_net import T0, Net

POISON_WH = 666_666


class BrittleApp(KeyValueApp):
    """A key-value app with a bug: a reading of POISON_WH crashes it (at intake or in a block)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def check_tx(self, ctx, env):
        if self.where == "check" and env.body["import_wh"] == POISON_WH:
            raise RuntimeError("app bug at intake")
        super().check_tx(ctx, env)

    def deliver_tx(self, ctx, env, position):
        if self.where == "deliver" and env.body["import_wh"] == POISON_WH:
            raise RuntimeError("app bug in a block")
        return super().deliver_tx(ctx, env, position)


def _notices_to(net: Net, meter: str) -> list[bytes]:
    got: list[bytes] = []
    bus = MemoryBus(net.broker, f"listener-{meter}")
    bus.subscribe(Topics.receipts(net.c.community, meter), lambda _t, p: got.append(p))
    bus.start()
    return got


def _trusted(net: Net) -> dict[str, str]:
    return {v.id: v.sec1_hex for v in net.c.validators}


def _reading(net: Net, meter_index: int, import_wh: int):
    meter = net.c.meters[meter_index]
    body = {"interval": T0, "import_wh": import_wh, "export_wh": 0, "serial": "S", "profile": "p"}
    return meter, meter.sign(net.c.community, "reading", body, created=T0)


def test_deeply_nested_message_is_refused_and_never_replayed_into_a_crash(tmp_path):
    net = Net(tmp_path)
    meter = net.c.meters[0]
    net.publisher.publish(Topics.orders(net.c.community, meter.id), b"[" * 40_000)
    net.settle()  # the sequencer refuses it with a reason instead of dying
    assert net.nodes[0].status()["rejected"].get("bad_json") == 1
    assert len(net.nodes[0].mempool) == 0
    net.crash(0)
    net.start(0)  # nothing poisonous is reloaded
    sent = net.send(1)
    net.settle()
    assert net.nodes[0].ledger.height >= 1
    stored = net.nodes[0].ledger.store.conn.execute("SELECT count(*) FROM txs").fetchone()[0]
    assert stored == len(sent)


def test_app_error_at_intake_quarantines_the_message_and_the_node_goes_on(tmp_path):
    net = Net(tmp_path, app_factory=lambda: BrittleApp("check"))
    meter, poison = _reading(net, 0, POISON_WH)
    net.publisher.publish(Topics.readings(net.c.community, meter.id), poison.to_bytes())
    sent = net.send(2, first=10)
    net.settle()
    seq = net.nodes[0]
    assert seq.status()["quarantined"] == 1
    assert [bytes(r) for r in seq.mempool.quarantined()] == [poison.to_bytes()]
    assert {n.ledger.height for n in net.nodes} == {seq.ledger.height} and seq.ledger.height >= 1
    assert seq.ledger.store.conn.execute("SELECT count(*) FROM txs").fetchone()[0] == len(sent)
    text = exposition(registry_for("node", seq.status)).decode()
    assert "peerwatt_node_quarantined_total 1.0" in text
    net.crash(0)
    net.start(0)
    net.settle()  # the quarantined message is not replayed
    assert net.nodes[0].status()["quarantined"] == 0 and len(net.nodes[0].mempool) == 0


def test_app_error_inside_a_block_quarantines_only_the_culprit(tmp_path):
    net = Net(tmp_path, app_factory=lambda: BrittleApp("deliver"))
    before = net.send(2)
    meter, poison = _reading(net, 1, POISON_WH)
    net.publisher.publish(Topics.readings(net.c.community, meter.id), poison.to_bytes())
    after = net.send(1, first=20)
    net.settle()
    seq = net.nodes[0]
    assert [bytes(r) for r in seq.mempool.quarantined()] == [poison.to_bytes()]
    hashes = {bytes(h) for (h,) in seq.ledger.store.conn.execute("SELECT hash FROM txs")}
    assert hashes == {e.tx_hash for e in before + after}
    assert {n.ledger.height for n in net.nodes} == {seq.ledger.height}
    for node in net.nodes:
        assert verify_store(node.ledger.store, BrittleApp("deliver")).txs == len(hashes)


def test_a_message_claiming_another_signer_causes_no_notice_to_that_signer(tmp_path):
    net = Net(tmp_path)
    attacker, victim = net.c.meters[0], net.c.meters[1]
    heard = _notices_to(net, victim.id)
    _, genuine = _reading(net, 1, 5)
    forged = genuine.to_dict() | {
        "sig": genuine.sig[:-4] + ("AAAA" if genuine.sig[-4:] != "AAAA" else "BBBB")
    }
    junk = b'{"signer": "%s", "seq": 7, "type": "order"}' % victim.id.encode()
    for payload in (junk, _compact_json(forged)):
        net.publisher.publish(Topics.orders(net.c.community, attacker.id), payload)
    net.settle()
    assert heard == []


def _told(net: Net, meter: str, heard: list[bytes]) -> tuple[list[dict], list]:
    """What a meter heard, split into inclusion proofs and verified refusal notices."""
    included = [json.loads(p) for p in heard if json.loads(p).get("type") == "included"]
    notices = [
        open_notice(p, community=net.c.community, meter=meter, trusted=_trusted(net))
        for p in heard
        if json.loads(p).get("type") == "notice"
    ]
    return included, notices


def test_confirmations_are_proofs_and_refusals_signed_notices_for_the_signer_only(tmp_path):
    """A final message is confirmed by an inclusion proof against the sealed header, which the
    meter checks with the bytes it signed; a refusal by signed notices of as many validators as two
    quorums share (the round's tellers), since one faulty validator alone must not make a meter
    forget a message."""
    from meter_agent.receipts import verify_included

    net = Net(tmp_path)
    meter, env = _reading(net, 0, 5)
    heard = _notices_to(net, meter.id)
    topic = Topics.readings(net.c.community, meter.id)
    net.publisher.publish(topic, env.to_bytes())
    net.settle()
    net.publisher.publish(topic, env.to_bytes())  # a resend of what is already final: a replay
    net.settle()
    included, notices = _told(net, meter.id, heard)
    check = {
        "community": net.c.community,
        "validators": _trusted(net),
        "quorum": net.c.genesis.doc["chain"]["quorum"],
    }
    assert len(included) == 1
    assert verify_included(included[0], meter=meter.id, payloads={env.seq: env.to_bytes()}, **check)[1] == [
        env.seq
    ]
    tampered = dict(env.body, import_wh=6)
    forged = meter.sign(net.c.community, "reading", tampered, created=T0).to_bytes()  # other bytes
    with pytest.raises(ReceiptError):
        verify_included(included[0], meter=meter.id, payloads={env.seq: forged}, **check)
    quorum = net.c.genesis.doc["chain"]["quorum"]
    assert refusal_threshold(len(net.c.validators), quorum) == 2  # 4 validators, quorum 3
    tellers = quorum  # a quorum tells, so the threshold is reached with n - q of them down
    assert [(n.seqs, n.refused) for n in notices] == [((env.seq,), "replay")] * tellers
    assert len({n.signer for n in notices}) == tellers
    # a seq older than the window was never booked: the sender's counter is behind (another copy
    # of its key sent newer seqs); it is told so apart from a resend of something held
    meter.seq += 5_000
    newer = meter.sign(net.c.community, "reading", dict(env.body, import_wh=6), created=T0)
    meter.seq = env.seq
    older = meter.sign(net.c.community, "reading", dict(env.body, import_wh=7), created=T0)
    for sent in (newer, older):
        net.publisher.publish(topic, sent.to_bytes())
        net.settle()
    included, notices = _told(net, meter.id, heard)
    assert [tx["seq"] for m in included for tx in m["txs"]] == [env.seq, newer.seq]
    assert [(n.seqs, n.refused) for n in notices[tellers:]] == [((older.seq,), "seq_behind")] * tellers
    other = net.c.meters[1].id
    refusal = next(p for p in heard if json.loads(p).get("type") == "notice")
    with pytest.raises(Rejected) as refused:
        open_notice(refusal, community=net.c.community, meter=other, trusted=_trusted(net))
    assert refused.value.reason == "wrong_recipient"
    with pytest.raises(ReceiptError):  # a proof for one meter is not taken by another
        verify_included(included[0], meter=other, payloads={env.seq: env.to_bytes()}, **check)


def test_full_disk_while_catching_up_is_reported_and_recovered(tmp_path):
    net = Net(tmp_path)
    net.crash(3)
    net.send(2)
    net.settle()
    api = NodeHttpApi(tmp_path / "n1", net.nodes[1].status, "127.0.0.1", 0)
    api.start()
    try:
        node3 = net.start(3, peers=(api.address,))
        store = node3.ledger.store
        (pages,) = store.conn.execute("PRAGMA page_count").fetchone()
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        net.send(1, first=100)
        net.settle()  # node 3 sees it is behind, catches up, and cannot store: it stays up
        assert node3.status()["store_error"]
        assert node3.ledger.height < net.nodes[0].ledger.height
        store.conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
        node3._catchup_after = 0.0
        net.send(1, first=200)
        net.settle()
        assert node3.status()["store_error"] is None
        assert node3.ledger.height == net.nodes[0].ledger.height
    finally:
        api.stop()


def _compact_json(obj) -> bytes:
    """Plain (non-canonical) JSON, as a hostile client would send it."""
    import json

    return json.dumps(obj, separators=(",", ":")).encode()


def test_a_refused_proposal_is_logged_with_its_signer_not_as_unauthenticated(tmp_path, caplog):
    """Found in a QA pass: a validator's proposal with a bad value was logged as 'rejected
    bad_value from an unauthenticated sender', which the operations guide says means a signature
    that did not verify. Only meters get a notice; the log names any enrolled signer."""
    import logging

    net = Net(tmp_path)
    validator = net.c.validators[1]
    proposal = validator.sign(
        net.c.community,
        "propose",
        {"action": "revoke_meter", "args": {"meter": "0" * 32}, "deadline": T0 + 86_400},
        T0,
    )
    caplog.set_level(logging.INFO)
    net.publisher.publish(Topics.gov(net.c.community), proposal.to_bytes())
    net.settle()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected ")]
    assert refusals and all("unauthenticated" not in m for m in refusals), refusals
    assert any(validator.id in m for m in refusals), refusals


def test_a_proposal_never_outgrows_a_block_message():
    """Blocks are cut by count and by bytes: 2,000 gridops-sized messages (up to 64 KiB each)
    would make a 128 MiB block that every validator refuses (messages.MAX_BLOCK_BYTES, 8 MiB)."""
    from chain import messages
    from peerwatt.node.runtime import MAX_BLOCK_TX_BYTES, MAX_BLOCK_TXS, first_that_fit

    big = [(b"x" * 60_000, None)] * 300
    taken = first_that_fit(big)
    assert 0 < len(taken) < 300 and sum(len(r) for r, _ in taken) <= MAX_BLOCK_TX_BYTES
    assert MAX_BLOCK_TX_BYTES < messages.MAX_BLOCK_BYTES
    small = [(b"x" * 500, None)] * 3000
    assert len(first_that_fit(small)) == MAX_BLOCK_TXS
    assert first_that_fit([(b"x" * (MAX_BLOCK_TX_BYTES + 1), None)]) != []  # one alone still goes


def test_one_signer_cannot_fill_the_mempool(tmp_path):
    """Found in a QA pass: one enrolled meter flooding valid orders grew the sequencer from 58 to
    503 MB (80,000 pending). Past its share a signer's messages are turned away for now, without
    a notice (its outbox sends them again), and the others' still get in."""
    net = Net(tmp_path)
    for node in net.nodes:
        node.max_pending_per_signer = 3
    heard = _notices_to(net, net.c.meters[0].id)
    flood, honest = net.c.meters[0], net.c.meters[1]
    sent = []
    for k in range(8):
        _, env = _reading(net, 0, 100 + k)
        net.publisher.publish(Topics.readings(net.c.community, flood.id), env.to_bytes())
        sent.append(env)
    _, other = _reading(net, 1, 7)
    net.publisher.publish(Topics.readings(net.c.community, honest.id), other.to_bytes())
    seq = net.nodes[0]
    seq.step()  # intake only: the block that would free the slots is not cut yet
    assert seq.status()["rejected"].get("busy", 0) >= 5
    assert (honest.id, other.seq) in seq._pending_keys
    assert seq._pending_per_signer[flood.id] <= 3
    net.settle()
    _, told = _told(net, flood.id, heard)
    assert all(n.refused != "busy" for n in told)  # turned away for now is not refused for good
    assert seq._pending_per_signer == collections.Counter()  # all booked or gone, counts back to 0


def test_a_burst_of_orders_for_one_interval_is_turned_away_before_it_reaches_a_block(tmp_path):
    """Found in a QA pass: under max_orders_per_interval (12) a meter's burst of replacements
    sent before the block that fills its count all passed intake and was booked, the extras as
    rejected results: a block's worth of transactions stored on every node, again for each
    interval. A node now counts the orders waiting for a block too: the 13th is refused at once."""
    from market.app import MarketApp

    params = {"interval_s": 900, "gate_s": 300, "max_orders_per_interval": 12}
    net = Net(tmp_path, app_factory=MarketApp, app="market", app_params=params)
    meter = net.c.meters[0]
    topic = Topics.orders(net.c.community, meter.id)
    for k in range(200):
        body = {"side": "sell", "interval": T0 + 1800, "energy_wh": 100 + k % 2, "limit_price": 100_000}
        net.publisher.publish(topic, meter.sign(net.c.community, "order", body, created=T0 + 10).to_bytes())
    net.settle()
    store = net.nodes[0].ledger.store
    orders = store.conn.execute("SELECT count(*) FROM txs WHERE type = 'order'").fetchone()[0]
    assert orders == 12, orders
    assert net.nodes[0].status()["rejected"].get("too_many_orders", 0) >= 188


def test_a_refusal_reaches_its_meter_with_a_teller_down(tmp_path):
    """Found in a QA pass: the tellers were 2q - n validators from the proposer in turn, and
    while the chain stays in round 0 the proposer does not change, so with the one after it down
    (an ordinary single failure; blocks still became final) every refusal had 1 notice of the 2 a
    meter needs: never acted on, resent until its horizon. A quorum tells now."""
    from chain.consensus import proposer_of

    net = Net(tmp_path)
    quorum = net.c.genesis.doc["chain"]["quorum"]
    validators = sorted(v.id for v in net.c.validators)
    sequencer = net.c.genesis.doc["chain"]["sequencer"]
    after = proposer_of(validators, sequencer, 1)
    net.crash(next(i for i, v in enumerate(net.c.validators) if v.id == after))
    meter, env = _reading(net, 0, 5)
    heard = _notices_to(net, meter.id)
    topic = Topics.readings(net.c.community, meter.id)
    for _ in range(2):  # booked, then a resend: a replay
        net.publisher.publish(topic, env.to_bytes())
        net.settle()
    _, notices = _told(net, meter.id, heard)
    signers = {n.signer for n in notices if n.refused == "replay"}
    assert len(signers) >= refusal_threshold(len(validators), quorum), notices
    assert after not in signers


def test_a_payload_larger_than_any_transaction_is_dropped_on_arrival(tmp_path):
    """Found in a QA pass on a real community: 40 payloads of 8.29 MB of valid JSON on a meter's
    own orders topic (its ACL allows it; the broker takes up to 8 MiB for blocks) were each parsed
    up to the block limit, twice, about 5 s each: every node stopped making blocks for 5 minutes
    and the honest households' orders expired. Such a payload is now turned away on arrival,
    unparsed and unstored."""
    net = Net(tmp_path, validators=1)
    node, meter = net.nodes[0], net.c.meters[0]
    junk = b'{"type":"order",' + b",".join(b'"k%d":1' % i for i in range(40_000)) + b"}"
    assert len(junk) > 64 * 1024
    for k in range(5):
        net.publisher.publish(Topics.orders(net.c.community, meter.id), junk.replace(b'"k0"', b'"z%d"' % k))
    assert node.status()["rejected"].get("too_large", 0) == 5  # counted on arrival, before any step
    assert node._inbox.qsize() == 0 and len(node.mempool) == 0


def test_a_transaction_is_taken_only_from_the_topic_it_belongs_on(tmp_path):
    """Found in a QA pass: a household put a proposal signed with its member key on the ledger
    through its meter's orders topic, although only the validators' operator accounts may publish
    on gov (docs/governance.md). A node now takes a meter's orders and readings only from that
    meter's own topics, and everything else only from gov; the signer of a copy put on another
    topic gets no notice (that would make its agent forget a message the ledger may still book)."""
    net = Net(tmp_path, validators=1)
    node = net.nodes[0]
    member, meter, other = net.c.members[0], net.c.meters[0], net.c.meters[1]
    heard = _notices_to(net, meter.id)
    proposal = member.sign(
        net.c.community,
        "propose",
        {"action": "revoke_meter", "args": {"meter": other.id}, "deadline": T0 + 86_400},
        T0,
    )
    readings = [_reading(net, 0, wh)[1] for wh in (5, 6, 7, 8)]
    net.publisher.publish(Topics.orders(net.c.community, meter.id), proposal.to_bytes())
    net.publisher.publish(Topics.readings(net.c.community, other.id), readings[0].to_bytes())  # another's
    net.publisher.publish(Topics.orders(net.c.community, meter.id), readings[1].to_bytes())  # not an order
    net.publisher.publish(Topics.gov(net.c.community), readings[2].to_bytes())  # a meter's, on gov
    net.settle()
    assert node.status()["rejected"].get("wrong_topic", 0) == 4
    assert node.ledger.chain_state["proposals"] == {}
    assert heard == []
    net.publisher.publish(Topics.readings(net.c.community, meter.id), readings[3].to_bytes())
    net.publisher.publish(Topics.gov(net.c.community), proposal.to_bytes())
    net.settle()
    store = node.ledger.store
    booked = {row[0] for row in store.conn.execute("SELECT type FROM txs")}
    assert booked == {"reading", "propose"}


def test_one_topics_flood_does_not_hold_the_others_back(tmp_path):
    """Found in a QA pass on a real community: one meter published 60,000 signed orders the
    ledger refuses (interval_closed) in a minute; the nodes took 125 s to work through them, first
    in, first out, and two honest households' orders missed their gate. Each topic now waits in its
    own queue, served in turn, and a topic with MAX_PER_TOPIC waiting takes no more."""
    from peerwatt.node.inbox import MAX_PER_TOPIC

    net = Net(tmp_path, validators=1)
    node, flood, honest = net.nodes[0], net.c.meters[0], net.c.meters[1]
    _, old = _reading(net, 0, 1)
    for k in range(MAX_PER_TOPIC + 500):  # copies re-encoded: each is a new payload, each refused
        payload = old.to_bytes().replace(b"{", b"{ " * (1 + k % 7), 1) + b" " * (k // 7)
        net.publisher.publish(Topics.readings(net.c.community, flood.id), payload)
    assert node.status()["rejected"].get("busy", 0) == 500  # turned away on arrival
    _, mine = _reading(net, 1, 7)
    net.publisher.publish(Topics.readings(net.c.community, honest.id), mine.to_bytes())
    node.step()  # one step: at most MAX_INBOX_PER_STEP messages, the honest one among them
    booked = node.ledger.store.conn.execute("SELECT count(*) FROM txs WHERE signer = ?", (honest.id,))
    assert (honest.id, mine.seq) in node._pending_keys or booked.fetchone()[0] == 1


def test_the_topic_rule_holds_for_a_message_the_mempool_kept_across_a_crash(tmp_path):
    """The mempool keeps the topic a message came on: a member's proposal put on its meter's
    orders topic, stored and then a crash before the node took it, is still refused after the
    restart (a129993 checked the topic only for messages taken before a crash)."""
    net = Net(tmp_path, validators=1)
    member, meter = net.c.members[0], net.c.meters[0]
    proposal = member.sign(
        net.c.community,
        "propose",
        {"action": "revoke_meter", "args": {"meter": net.c.meters[1].id}, "deadline": T0 + 86_400},
        T0,
    )
    net.publisher.publish(Topics.orders(net.c.community, meter.id), proposal.to_bytes())
    assert len(net.nodes[0].mempool) == 1  # stored on arrival, not taken yet
    net.crash(0)
    node = net.start(0)
    net.settle()
    assert node.status()["rejected"].get("wrong_topic", 0) == 1
    assert node.ledger.chain_state["proposals"] == {}


def test_a_resend_of_a_booked_message_that_has_expired_is_told_as_held_not_refused(tmp_path):
    """Found in a QA pass (a flood made the receipts late, the agents' outboxes sent again): the
    node checked expiry before replay, so a resend of an order the ledger had booked was refused
    as `expired`, and the agent logged "the ledger refused ...: expired" for an order booked ok."""
    net = Net(tmp_path)
    meter = net.c.meters[0]
    heard = _notices_to(net, meter.id)
    body = {"interval": T0, "import_wh": 5, "export_wh": 0, "serial": "S", "profile": "p"}
    env = meter.sign(net.c.community, "reading", body, created=T0, ttl_s=60)
    net.publisher.publish(Topics.readings(net.c.community, meter.id), env.to_bytes())
    net.settle()
    assert net.nodes[0].ledger.height >= 1
    net.clock.advance(3600)  # the receipt came late; the outbox sends the same bytes again
    net.publisher.publish(Topics.readings(net.c.community, meter.id), env.to_bytes())
    net.settle()
    _, told = _told(net, meter.id, heard)
    reasons = {n.refused for n in told if env.seq in n.seqs}
    assert reasons == {"replay"}, reasons


def test_a_wrong_topic_is_found_before_any_other_refusal(tmp_path):
    """Found in a QA pass: 30,000 orders for a closed interval on a meter's readings topic were
    refused as interval_closed and their signer was told so, while docs/protocol.md says a message
    on a wrong topic is refused as wrong_topic with no notice (anyone can copy another's message
    to a wrong topic)."""
    from market.app import MarketApp

    params = {"interval_s": 900, "gate_s": 300}
    net = Net(tmp_path, app_factory=MarketApp, app="market", app_params=params)
    meter = net.c.meters[0]
    heard = _notices_to(net, meter.id)
    body = {"side": "sell", "interval": T0 - 900, "energy_wh": 100, "limit_price": 100_000}
    closed = meter.sign(net.c.community, "order", body, created=T0 + 5)
    net.publisher.publish(Topics.readings(net.c.community, meter.id), closed.to_bytes())
    net.settle()
    rejected = net.nodes[0].status()["rejected"]
    assert rejected.get("wrong_topic", 0) == 1 and "interval_closed" not in rejected
    assert heard == []


def test_a_topic_queues_at_most_its_bytes_and_a_step_has_a_time_budget(tmp_path):
    """Found in a QA pass: 2,000 payloads just under 64 KiB on each of a household's two topics
    (11 ms each to refuse) held every node's loop about 5 s a step: no block for 67 s, and both
    honest households' orders for one interval missed their gate. A topic now queues at most
    MAX_BYTES_PER_TOPIC, and a step spends at most inbox_step_s on transactions."""
    from peerwatt.node.inbox import MAX_BYTES_PER_TOPIC

    net = Net(tmp_path, validators=1)
    node, meter = net.nodes[0], net.c.meters[0]
    size = 60 * 1024
    for k in range(200):
        junk = b'{"type":"order","n":"%06d","pad":"' % k + b"x" * (size - 40) + b'"}'
        net.publisher.publish(Topics.orders(net.c.community, meter.id), junk)
    waiting = node._inbox.qsize()
    assert waiting == MAX_BYTES_PER_TOPIC // len(junk)
    assert node.status()["rejected"]["busy"] == 200 - waiting
    node.inbox_step_s = 0.0  # the budget spent after one message: the rest waits for later steps
    node.step()
    assert node._inbox.qsize() == waiting - 1
