"""The agent's status tells what the ledger said about its own messages (issues 16 and 17):
``last_receipt`` (height and time of the last receipt that verified) and ``enrolled`` (from the
validator-signed notices and the receipts it verified), with one log line when trading starts.

Receipts come from a real market ledger (tests/support/market_ledger.py) through the node's own
receipt builder; notices are signed with the community's validator keys.
"""

from __future__ import annotations

import json
import logging

import pytest

from chain.keys import generate_private_key
from chain.notice import sign_notice
from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterError, MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from peerwatt.node.ledger_api import block_receipts
from tests.support.market_ledger import T0, build_market


class NoMeter:
    """These tests never poll: the agent only listens to its receipts topic."""

    def read(self) -> MeterSample:
        raise MeterError("no meter in this test")


@pytest.fixture
def market(tmp_path):
    c = build_market(tmp_path / "ledgers")
    yield c
    for ledger in c.ledgers:
        ledger.close()


def _agent(c, tmp_path, index: int = 0) -> tuple[Agent, MemoryBus, str]:
    broker = MemoryBroker()
    meter = c.meters[index]  # 0: a seller of the traded interval; 1: a meter without trades
    agent = Agent(
        key=meter.key,
        genesis=c.genesis,
        bus=MemoryBus(broker, meter.id),
        reader=NoMeter(),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=lambda: 1_764_010_000,
        heartbeat_s=0,
    )
    agent.start()
    sequencer = MemoryBus(broker, "sequencer")
    sequencer.start()
    return agent, sequencer, Topics.receipts(c.community, meter.id)


def _receipts(c, meter: str) -> list[dict]:
    store = c.ledgers[0].store
    return [r for h in range(1, store.height() + 1) for m, r in block_receipts(store, h) if m == meter]


def test_last_receipt_is_the_last_one_that_verified(market, tmp_path):
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    assert agent.status()["last_receipt"] is None
    receipts = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] in ("trade", "settlement")]
    kinds = [r["result"]["kind"] for r in receipts]
    assert "trade" in kinds and "settlement" in kinds, kinds
    for receipt in receipts:
        sequencer.publish(topic, json.dumps(receipt).encode())
    last = receipts[-1]
    expected = {
        "height": last["header"]["height"],
        "time": last["header"]["time"],
        "kind": last["result"]["kind"],
    }
    assert agent.status()["last_receipt"] == expected
    # a receipt that does not verify raises an alarm and changes nothing
    forged = json.loads(json.dumps(receipts[0]))
    forged["result"]["energy_wh"] += 1
    sequencer.publish(topic, json.dumps(forged).encode())
    status = agent.status()
    assert status["last_receipt"] == expected and status["alarms"]
    # it survives a restart of the agent (kept in its state file), with the trades' totals
    totals = agent.totals()
    assert totals["sold_wh"] > 0
    agent.stop()
    again, _, _ = _agent(c, tmp_path)
    assert again.status()["last_receipt"] == expected
    assert again.totals() == totals


def _kept_seq(agent: Agent, c, k: int) -> int:
    """Sign and keep one reading (a message the ledger may then refuse); its seq."""
    body = {"interval": T0 - 900 * k, "import_wh": 1000 + k, "export_wh": 5, "serial": "x", "profile": "sim"}
    agent._send("reading", Topics.readings(c.community, agent.meter_id), body, 86400)
    return agent.outbox.last_seq()


def test_enrolled_follows_the_notices_and_trading_start_is_logged_once(market, tmp_path, caplog):
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    meter = c.meters[0].id
    assert agent.status()["enrolled"] == "unknown"
    seqs = {k: _kept_seq(agent, c, k) for k in (1, 2, 6)}  # refusals count for kept messages only

    def refusal(k: int, reason: str) -> None:
        seq = seqs[k]
        for validator in c.validators:  # 3 of 3 (quorum 3): as many as two quorums share
            sequencer.publish(
                topic,
                sign_notice(
                    validator.key,
                    community=c.community,
                    meter=meter,
                    seqs=[seq],
                    created=0,
                    seq=1,
                    refused=reason,
                ),
            )

    refusal(1, "not_enrolled")
    assert agent.status()["enrolled"] is False
    refusal(2, "expired")  # says nothing about enrolment
    assert agent.status()["enrolled"] is False
    # a forged notice changes nothing
    sequencer.publish(
        topic,
        sign_notice(
            generate_private_key(),
            community=c.community,
            meter=meter,
            seqs=[3],
            created=0,
            seq=1,
            refused="x",
        ),
    )
    assert agent.status()["enrolled"] is False
    with caplog.at_level(logging.INFO, logger="peerwatt.agent"):
        for receipt in [r for r in _receipts(c, meter) if r["result"]["kind"] == "trade"][:2]:
            sequencer.publish(topic, json.dumps(receipt).encode())
    assert agent.status()["enrolled"] is True
    started = [r for r in caplog.records if "trading starts" in r.getMessage()]
    assert len(started) == 1, [r.getMessage() for r in caplog.records]
    refusal(6, "unknown_signer")
    assert agent.status()["enrolled"] is False


def test_one_validator_alone_cannot_make_the_agent_forget_or_resign(market, tmp_path):
    """Found in a QA pass: one validator's notices (any validator may write to receipts topics)
    made an agent forget three readings never booked ("final at height 999999") and, with two
    seq_behind refusals, re-sign and then give up for good with an alarm to get a new key. A
    refusal is believed from as many validators as two quorums share (here 3 of 3, quorum 3); a
    final message only by proof."""
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    meter = c.meters[0].id
    seqs = []
    for k in range(3):
        agent._send(
            "reading",
            Topics.readings(c.community, meter),
            {
                "interval": T0 - 900 * k,
                "import_wh": 1000 + k,
                "export_wh": 5,
                "serial": "x",
                "profile": "sim",
            },
            86400,
        )
        seqs.append(agent.outbox.last_seq())

    def kept() -> list[int]:
        return [seq for seq, _topic, _payload in agent.outbox.messages(seqs)]

    assert kept() == seqs

    def notice(validator: int, reason: str) -> bytes:
        key = c.validators[validator].key
        return sign_notice(
            key, community=c.community, meter=meter, seqs=seqs, created=0, seq=1, refused=reason
        )

    for _ in range(2):
        for validator in (1, 2):  # two of the three
            sequencer.publish(topic, notice(validator, "seq_behind"))
            sequencer.publish(topic, notice(validator, "expired"))
    agent._sign_again_ahead(1_764_010_000)  # what the next poll does with seq_behind refusals
    assert kept() == seqs and agent.resigned == 0
    assert not agent.status()["alarms"]
    sequencer.publish(topic, notice(0, "expired"))  # the third agrees: believed
    assert kept() == []
    assert agent._refusals == {}  # nothing remembered of messages that are gone


def test_a_verified_receipt_means_enrolled(market, tmp_path):
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    receipt = next(r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "trade")
    sequencer.publish(topic, json.dumps(receipt).encode())
    assert agent.status()["enrolled"] is True


def test_only_the_newest_trades_are_kept_and_the_state_file_agrees(market, tmp_path, monkeypatch):
    monkeypatch.setattr("meter_agent.agent.MAX_RECEIPTS", 1)
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    receipts = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] in ("trade", "settlement")]
    for receipt in receipts:
        sequencer.publish(topic, json.dumps(receipt).encode())
    newest = max(r["result"].get("interval") or 0 for r in receipts)
    assert len(agent.trades) == 1
    (kept,) = agent.trades.values()
    assert kept["interval"] == newest
    trades = dict(agent.trades)
    agent.stop()
    again, _, _ = _agent(c, tmp_path)
    assert again.trades == trades


def test_a_receipt_writes_its_own_trade_not_every_trade_kept(market, tmp_path):
    """With 400 trades kept from before, one receipt's write to the state file stays small (it
    rewrote all of them, ~90 KB of JSON with a full sync, on every receipt)."""
    c = market
    kept = {f"{i:024x}:{i:024x}": {"interval": 900 * i, "side": "sell", "energy_wh": i} for i in range(400)}
    state = Outbox(tmp_path / "agent.sqlite")
    state.save("trades", kept)  # as an older agent kept them: still read
    state.close()
    agent, sequencer, topic = _agent(c, tmp_path)
    assert len(agent.trades) == 400
    (receipt, *_) = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "trade"]
    statements: list[str] = []
    agent.outbox._conn.set_trace_callback(statements.append)
    sequencer.publish(topic, json.dumps(receipt).encode())
    agent.outbox._conn.set_trace_callback(None)
    assert len(agent.trades) == 401
    assert 0 < sum(len(s) for s in statements) < 5_000


def test_a_corrected_reading_s_adjustment_is_in_the_agent_s_totals(market, tmp_path):
    """Found in a QA pass: after a correction the agent said 'P2P sold 585 Wh' while the ledger,
    the report and the dashboard said 561 Wh: it verified the adjustment receipt and ignored it.
    Receipts may arrive twice or out of order: the totals count each adjustment once."""
    from market.settlement import apply_adjustment
    from tests.support.market_ledger import I1, SETTLED_AT, reading, reading_values

    c = market
    start_imp, start_exp, end_imp, end_exp = reading_values(0)
    c.run_block([reading(c, 0, I1, end_imp, end_exp - 500, SETTLED_AT + 60)], SETTLED_AT + 60)
    receipts = _receipts(c, c.meters[0].id)
    kinds = [r["result"]["kind"] for r in receipts]
    assert "adjustment" in kinds, kinds
    settled = {}
    for r in receipts:  # the ledger's view: each trade's settlement with its adjustments folded in
        result = r["result"]
        if result["kind"] == "settlement":
            settled[result["trade"]] = dict(result)
        elif result["kind"] == "adjustment":
            apply_adjustment(settled[result["trade"]], result)
    sold = sum(s["settled_wh"] for s in settled.values() if s["seller"] == c.meters[0].id)
    agent, sequencer, topic = _agent(c, tmp_path)
    for receipt in receipts + receipts[::-1]:  # each twice, the second time newest first
        sequencer.publish(topic, json.dumps(receipt).encode())
    assert agent.totals()["sold_wh"] == sold
    assert agent.status()["last_receipt"]["kind"] == "adjustment"
    agent.stop()
    again, _, _ = _agent(c, tmp_path)
    assert again.totals()["sold_wh"] == sold  # the same after a restart


def test_receipts_and_notices_when_the_state_file_is_full(market, tmp_path, caplog):
    """Found in a QA pass: with the agent's disk full, every receipt and notice logged a traceback
    from the bus thread, and a receipt's trade was saved only if the same trade came again."""
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    kept = _kept_seq(agent, c, 1)
    conn = agent.outbox._conn
    conn.execute("PRAGMA query_only = 1")  # the disk is full
    for receipt in _receipts(c, c.meters[0].id):
        sequencer.publish(topic, json.dumps(receipt).encode())
    for validator in c.validators:  # as many as two quorums share: the agent believes the refusal
        notice = sign_notice(
            validator.key, community=c.community, meter=c.meters[0].id, seqs=[kept], created=1_764_010_000,
            seq=1, refused="expired",
        )  # fmt: skip
        sequencer.publish(topic, notice)
    assert agent.trades and "Traceback" not in caplog.text
    assert caplog.text.count("receipts are kept in memory until the state file takes them") == 1
    assert "confirmed messages stay in the outbox until it can be written" in caplog.text
    assert agent.outbox.load_entries("trades") == {}
    conn.execute("PRAGMA query_only = 0")
    agent.poll()  # the next poll saves them
    assert agent.outbox.load_entries("trades") == agent.trades


def test_a_receipt_of_other_meters_trade_is_not_counted(market, tmp_path):
    """Found in a QA pass: a genuine receipt (sealed, on the ledger) of a trade between two other
    meters, published on this meter's receipts topic, was booked as this meter's purchase (any
    node may write to receipts topics). It raises an alarm and changes nothing."""
    c = market
    agent, sequencer, topic = _agent(c, tmp_path, index=1)
    others = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] in ("trade", "settlement")]
    assert others and all(c.meters[1].id not in (r["result"]["seller"], r["result"]["buyer"]) for r in others)
    before = agent.totals()
    for r in others:
        sequencer.publish(topic, json.dumps(r).encode())
    assert agent.totals() == before and agent.trades == {}
    assert any("not this meter's" in a for a in agent.status()["alarms"])
    assert agent.status()["last_receipt"] is None


def test_a_flood_of_bad_receipts_is_not_a_flood_of_log_lines(market, tmp_path, caplog):
    """Found in a QA pass: 4,095 forged receipts made 3,971 error lines. Every alarm is kept for
    the status; the log has one line a minute, counting the ones it left out."""
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    (receipt,) = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "trade"][:1]
    for i in range(200):
        forged = json.loads(json.dumps(receipt))
        forged["result"]["energy_wh"] += i + 1
        sequencer.publish(topic, json.dumps(forged).encode())
    assert caplog.text.count("ALARM: a receipt does not verify") == 1
    assert len(agent.status()["alarms"]) == 5 and agent.trades == {}


def test_enrolled_comes_from_receipts_of_its_orders_not_from_inclusion(market, tmp_path):
    """Found in a QA pass: a hostile proposer put a revoked meter's message in a block (the
    ledger records it as rejected) and sent its inclusion proof, which set the agent's enrolled
    back to true. Being in a block says nothing of acceptance; a verified order outcome or trade
    of this meter does."""
    c = market
    agent, sequencer, topic = _agent(c, tmp_path)
    outcomes = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "order_outcome"]
    assert outcomes
    others = [r for r in _receipts(c, c.meters[1].id) if r["result"]["kind"] == "order_outcome"]
    for r in others:  # another meter's outcome says nothing about this one
        sequencer.publish(topic, json.dumps(r).encode())
    assert agent.status()["enrolled"] == "unknown"
    sequencer.publish(topic, json.dumps(outcomes[0]).encode())
    assert agent.status()["enrolled"] is True and agent.trades == {}


def test_an_order_withdrawn_because_the_meter_was_revoked_is_not_a_sign_of_enrolment(tmp_path, caplog):
    """Found in a QA pass: after `member leave` revoked a meter, the order it had placed before
    was withdrawn at gate closure (order_outcome with `withdrawn: meter_revoked`), and the agent
    took that outcome for "the ledger took one of its orders": it logged `is enrolled ...:
    trading starts` again and went on placing orders. It is a sign of the opposite."""
    from market.app import MarketApp
    from tests.support.localnet import make_community
    from tests.support.market_ledger import I1, PARAMS, opening_orders

    c = make_community(validators=3, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    t = T0 + 10
    c.run_block(opening_orders(c, t), t)
    meter = c.meters[0].id
    v = c.validators
    body = {"action": "revoke_meter", "args": {"meter": meter}, "deadline": t + 3600}
    proposal = v[0].sign(c.community, "propose", body, created=t + 1)
    votes = [
        p.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t + 1)
        for p in v[1:]
    ]
    c.run_block([proposal, *votes], t + 1)
    closure = c.run_block([], I1 - 300)
    outcomes = [r for m, r in block_receipts(c.ledgers[0].store, closure.height) if m == meter]
    assert [r["result"].get("withdrawn") for r in outcomes] == ["meter_revoked"]
    agent, sequencer, topic = _agent(c, tmp_path)
    agent._set_enrolled(True, "an earlier order was cleared", 0)
    with caplog.at_level(logging.INFO, logger="peerwatt.agent"):
        sequencer.publish(topic, json.dumps(outcomes[0]).encode())
    assert agent.status()["enrolled"] is False
    assert "trading starts" not in caplog.text
    assert "no longer enrolled" in caplog.text and "revoked" in caplog.text
    for ledger in c.ledgers:
        ledger.close()
