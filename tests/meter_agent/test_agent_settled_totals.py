"""The agent's totals count money only where the ledger settled it (found in a QA pass that
followed the docs: a household that left showed `P2P sold 0 Wh, bought 104 Wh, earnings -0.03`
in `peerwatt agent status`, counting its trades "as traded" since its agent, stopped and revoked,
never got their settlements; the ledger said 32 Wh settled and a 72 Wh trade unsettled
(missing_reading, no money moved), and the seller's agent said 32 Wh: the two sides disagreed).

Now `sold_wh`, `bought_wh` and `earnings` are what the ledger settled (with its adjustments);
trades without a settlement yet are counted apart as traded, not settled yet
(`sold_pending_wh`, `bought_pending_wh`), and trades the ledger left unsettled as such
(`sold_unsettled_wh`, `bought_unsettled_wh`, with their flags), neither as money. The text of
`peerwatt agent status` and Home Assistant's sensors say the same."""

from __future__ import annotations

import json
import time

import pytest

from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterError, MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from peerwatt.node.ledger_api import block_receipts
from tests.meter_agent.test_agent_status_text import agent_with_status, status_text
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, SETTLED_AT, T0, opening_orders, reading, reading_values


class NoMeter:
    def read(self) -> MeterSample:
        raise MeterError("no meter in this test")


@pytest.fixture
def market(tmp_path):
    """build_market's round, but meter 3 (a buyer of 200 Wh from meter 0) sends no reading of
    I1: its trade settles `unsettled`, `missing_reading`; meter 0 sells 800 Wh to meter 2,
    settled, and 200 Wh to meter 3, unsettled."""
    c = make_community(validators=3, members=4, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    t = T0 + 10
    c.run_block(opening_orders(c, t), t)
    c.run_block([], I1 - 300)
    t = I1 + 900 + 5
    readings = []
    for m in range(3):
        start_imp, start_exp, end_imp, end_exp = reading_values(m)
        readings += [reading(c, m, I1 - 900, start_imp, start_exp, t), reading(c, m, I1, end_imp, end_exp, t)]
    c.run_block(readings, t)
    c.run_block([], SETTLED_AT)
    yield c
    for ledger in c.ledgers:
        ledger.close()


def _receipts(c, index: int, kinds: tuple[str, ...]) -> list[dict]:
    store, meter = c.ledgers[0].store, c.meters[index].id
    return [
        r
        for h in range(1, store.height() + 1)
        for m, r in block_receipts(store, h)
        if m == meter and r["result"]["kind"] in kinds
    ]


def _agent(c, tmp_path, index: int, **options) -> tuple[Agent, MemoryBus, str]:
    broker = MemoryBroker()
    agent = Agent(
        key=c.meters[index].key, genesis=c.genesis, bus=MemoryBus(broker, c.meters[index].id),
        reader=NoMeter(), outbox=Outbox(tmp_path / f"agent-{index}.sqlite"), strategy=StrategyConfig(),
        clock=lambda: SETTLED_AT + 60, heartbeat_s=0, **options,
    )  # fmt: skip
    agent.start()
    node = MemoryBus(broker, "node")
    node.start()
    return agent, node, Topics.receipts(c.community, c.meters[index].id)


def test_a_trade_without_its_settlement_is_no_money(market, tmp_path):
    """The household that left: its agent got the receipt of its trade, never its settlement."""
    c = market
    agent, node, topic = _agent(c, tmp_path, 3)
    (trade,) = _receipts(c, 3, ("trade",))
    node.publish(topic, json.dumps(trade).encode())
    totals = agent.totals()
    assert (totals["bought_wh"], totals["sold_wh"], totals["earnings"]) == (0, 0, 0), totals
    assert totals["bought_pending_wh"] == 200 and totals["sold_pending_wh"] == 0
    assert totals["bought_unsettled_wh"] == totals["sold_unsettled_wh"] == 0


def test_a_trade_the_ledger_left_unsettled_is_no_money_and_named(market, tmp_path):
    c = market
    buyer, node, topic = _agent(c, tmp_path, 3)
    for receipt in _receipts(c, 3, ("trade", "settlement")):
        node.publish(topic, json.dumps(receipt).encode())
    totals = buyer.totals()
    assert (totals["bought_wh"], totals["earnings"], totals["bought_pending_wh"]) == (0, 0, 0), totals
    assert totals["bought_unsettled_wh"] == 200 and totals["unsettled_flags"] == ["missing_reading"]
    # the seller: 800 Wh settled (and paid), 200 Wh unsettled; the same as the ledger
    seller, node, topic = _agent(c, tmp_path, 0)
    receipts = _receipts(c, 0, ("trade", "settlement"))
    for receipt in receipts:
        node.publish(topic, json.dumps(receipt).encode())
    settled = [r["result"] for r in receipts if r["result"]["kind"] == "settlement"]
    totals = seller.totals()
    assert totals["sold_wh"] == 800 == sum(s["settled_wh"] for s in settled)
    assert totals["earnings"] == sum(s["value"] for s in settled) == 76_000
    assert totals["sold_unsettled_wh"] == 200 and totals["sold_pending_wh"] == 0


def test_the_status_text_says_what_is_settled_and_what_is_not(tmp_path):
    totals = {
        "sold_wh": 0, "bought_wh": 32, "earnings": -9_000, "sold_pending_wh": 0, "bought_pending_wh": 72,
        "sold_unsettled_wh": 0, "bought_unsettled_wh": 0, "unsettled_flags": [],
    }  # fmt: skip
    out = status_text(agent_with_status(tmp_path, time=int(time.time()), totals=totals))
    assert "P2P settled: sold 0 Wh, bought 32 Wh, earnings -0.01" in out, out
    assert "traded, not settled yet: bought 72 Wh (no money moves until the ledger settles it)" in out, out
    assert "bought 104" not in out
    unsettled = dict(totals, bought_pending_wh=0, bought_unsettled_wh=72, unsettled_flags=["missing_reading"])
    (tmp_path / "state" / "agent.sqlite").unlink()
    (tmp_path / "state").rmdir()
    out = status_text(agent_with_status(tmp_path, time=int(time.time()), totals=unsettled))
    assert "left unsettled by the ledger (missing_reading): bought 72 Wh, no money moved" in out, out
    assert "not settled yet" not in out


def test_home_assistant_shows_settled_energy_and_money(market, tmp_path):
    c = market
    agent, node, topic = _agent(c, tmp_path, 3, homeassistant_prefix="homeassistant")
    seen: list[bytes] = []
    node.subscribe(f"peerwatt/{c.community}/ha/{c.meters[3].id}", lambda _t, p: seen.append(p))
    (trade,) = _receipts(c, 3, ("trade",))
    node.publish(topic, json.dumps(trade).encode())
    agent.last_sample = MeterSample(
        time=SETTLED_AT, power_w=100, import_wh=5000, export_wh=0, voltage_v=(230.0,), current_a=(),
        phase_power_w=(), frequency_hz=50.0, serial="x", profile="sdm630", unit_id=1,
    )  # fmt: skip
    agent._heartbeat(SETTLED_AT + 60)
    state = json.loads(seen[-1])
    assert state["p2p_bought_kwh"] == 0 and state["p2p_earnings"] == 0, state
