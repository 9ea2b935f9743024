"""The agent's totals count every trade it ever received, not only the trades it keeps (found in a
QA pass: `Agent.totals()` summed the kept trades, and a receipt past MAX_RECEIPTS = 500 dropped the
oldest interval's, so after about a week of an active household's trades the P2P totals were no
longer what the ledger settled and even went down when a settlement dropped an older trade; Home
Assistant's P2P energy sensors are `total_increasing` and read that as a meter reset).

A trade leaves the kept ones only once settled; its figures are folded into running totals kept in
the state file, and the receipts of a folded trade (sent again, or re-indexed) count once. Receipts
come from a long run of a real market ledger (rounds 12 hours apart over 3.5 days, past the
ledger's adjustment window and the agent's day of margin after it) through the node's own receipt
builder, with MAX_RECEIPTS lowered to 2."""

from __future__ import annotations

import json

import pytest

from market.app import MarketApp
from market.params import DEFAULTS
from market.settlement import apply_adjustment
from meter_agent import agent as agent_module
from tests.meter_agent.test_agent_light_client import _other_places
from tests.meter_agent.test_agent_receipts_status import _agent, _receipts
from tests.meter_agent.test_agent_settled_totals import market  # noqa: F401 (fixture: a trade left unsettled)
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, SETTLED_AT, T0, order, reading, reading_values

ROUNDS = 8
ROUND_S = 12 * 3600  # two traded intervals an hour apart every 12 hours: 3.5 days in all


def _readings(c, interval: int, k: int, t: int) -> list:
    """Meters 0 (seller), 2 and 3 (buyers) read at the start and the end of ``interval`` (the
    k-th traded one)."""
    out = []
    for m in (0, 2, 3):
        start_imp, start_exp, end_imp, end_exp = (v + 10_000 * k for v in reading_values(m))
        out += [
            reading(c, m, interval - 900, start_imp, start_exp, t),
            reading(c, m, interval, end_imp, end_exp, t),
        ]
    return out


def _long_market(base_dir):
    """ROUNDS rounds of two intervals; in each, meter 0 sells 1000 Wh: 800 to meter 2, 200 to
    meter 3 (two trades). In round 1, after both intervals settled, meter 0 corrects its first
    interval's end reading down (a negative adjustment of both its trades), then back up (a
    positive one); those blocks also carry buy orders that do not clear, so their receipts can
    be re-sent under other indexes."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(base_dir, MarketApp)
    k = 0
    for r in range(ROUNDS):
        first = T0 + 1800 + r * ROUND_S
        intervals = (first, first + 3600)
        t = first - 3600
        ordered = ((0, "sell", 1000, 90_000), (2, "buy", 800, 200_000), (3, "buy", 600, 100_000))
        c.run_block(
            [order(c, m, side, wh, price, t, i) for i in intervals for m, side, wh, price in ordered], t
        )
        for interval in intervals:
            c.run_block([], interval - 300)  # gate closure: the trades
            c.run_block(_readings(c, interval, k, interval + 905), interval + 905)  # settled
            k += 1
        if r == 1:
            t = intervals[1] + 960
            no_match = [order(c, 1, "buy", 100 + j, 85_000, t, first + ROUND_S) for j in range(5)]
            _si, _se, end_imp, end_exp = (v + 10_000 * (k - 2) for v in reading_values(0))
            c.run_block([*no_match, reading(c, 0, first, end_imp, end_exp - 500, t)], t)
            c.run_block([reading(c, 0, first, end_imp, end_exp, t + 60)], t + 60)
    return c


@pytest.fixture(scope="module")
def long_market(tmp_path_factory):
    c = _long_market(tmp_path_factory.mktemp("ledgers"))
    yield c
    for ledger in c.ledgers:
        ledger.close()


def _ledger_totals(receipts: list[dict], meter: str) -> dict[str, int]:
    """What the ledger settled for ``meter``: each trade's settlement with its adjustments."""
    settled: dict[str, dict] = {}
    for r in receipts:
        result = r["result"]
        if result["kind"] == "settlement":
            settled[result["trade"]] = dict(result)
    for r in receipts:
        if r["result"]["kind"] == "adjustment":
            apply_adjustment(settled[r["result"]["trade"]], r["result"])
    sold = [s for s in settled.values() if s["seller"] == meter]
    bought = [s for s in settled.values() if s["buyer"] == meter]
    return {
        "sold_wh": sum(s["settled_wh"] for s in sold),
        "bought_wh": sum(s["settled_wh"] for s in bought),
        "earnings": sum(s["value"] for s in sold)
        - sum(s["value"] + s["grid_fee"] + s["levies"] for s in bought),
    }


@pytest.mark.parametrize("index", [0, 2])  # the seller, a buyer
def test_totals_count_every_trade_received_and_never_fall_but_by_an_adjustment(
    long_market, tmp_path, monkeypatch, index
):
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 2)
    c = long_market
    meter = c.meters[index].id
    receipts = [r for r in _receipts(c, meter) if r["result"]["kind"] in agent_module.RECEIPT_KINDS]
    adjustments = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    trades = {r["result"]["trade"] for r in receipts if r["result"]["kind"] == "settlement"}
    assert len(trades) == (4 if index == 0 else 2) * ROUNDS
    deltas = [r["result"]["delta_wh"] for r in adjustments]
    assert min(deltas) < 0 < max(deltas) and sum(deltas) == 0  # down, then up again
    expected = _ledger_totals(receipts, meter)
    agent, node, topic = _agent(c, tmp_path, index)
    before = agent.totals()
    for receipt in receipts:
        node.publish(topic, json.dumps(receipt).encode())
        now = agent.totals()
        result = receipt["result"]
        down = result["kind"] == "adjustment" and result["delta_wh"] < 0
        for field in ("sold_wh", "bought_wh"):
            assert now[field] >= before[field] or down, (field, before, now, result)
        before = now
    assert not agent.alarms
    totals = agent.totals()
    assert {k: totals[k] for k in expected} == expected
    assert totals["sold_pending_wh"] == totals["bought_pending_wh"] == 0
    assert totals["sold_unsettled_wh"] == totals["bought_unsettled_wh"] == 0
    assert len(agent.trades) == 2  # the others folded
    kept_rows = agent.outbox.load_entries("trades")
    assert len(kept_rows) < len(trades)  # the oldest folded trades left the state file too

    # the adjustments re-sent under other indexes, and every receipt sent again, newest first:
    # settlements and adjustments of trades folded long ago count once
    copies = [dict(r, index=j, tree_size=m) for r in adjustments for j, m in _other_places(r)]
    assert copies
    for receipt in copies + receipts[::-1]:
        node.publish(topic, json.dumps(receipt).encode())
    assert agent.totals() == totals and not agent.alarms

    # a restart from the state file keeps the folded totals, and what they already count
    agent.stop()
    again, node, topic = _agent(c, tmp_path, index)
    assert again.totals() == totals
    for receipt in receipts + copies:
        node.publish(topic, json.dumps(receipt).encode())
    assert again.totals() == totals


def test_a_folded_trade_s_adjustment_counts_once_and_survives_a_restart(long_market, tmp_path, monkeypatch):
    """Receipts of round 1 only: its first interval's trades are folded (the second's kept) when
    the corrections adjust them; each adjustment, sent again or re-indexed, counts once, also
    after a restart."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 2)
    c = long_market
    meter = c.meters[0].id
    first = T0 + 1800 + ROUND_S
    kinds, intervals = agent_module.RECEIPT_KINDS, (first, first + 3600)
    receipts = [
        r
        for r in _receipts(c, meter)
        if r["result"]["kind"] in kinds and r["result"]["interval"] in intervals
    ]
    adjustments = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    assert len(adjustments) == 4 and {r["result"]["interval"] for r in adjustments} == {first}
    agent, node, topic = _agent(c, tmp_path, 0)
    down = adjustments[:2]  # the correction down, before the one back up
    for receipt in [r for r in receipts if r not in adjustments] + down:
        node.publish(topic, json.dumps(receipt).encode())
    assert all(t["interval"] == first + 3600 for t in agent.trades.values())  # the first's folded
    lowered = agent.totals()
    assert lowered == {
        **lowered,
        **_ledger_totals([r for r in receipts if r not in adjustments] + down, meter),
    }
    copies = [dict(r, index=j, tree_size=m) for r in down for j, m in _other_places(r)]
    assert copies
    for receipt in down + copies:
        node.publish(topic, json.dumps(receipt).encode())
    assert agent.totals() == lowered
    agent.stop()
    again, node, topic = _agent(c, tmp_path, 0)
    assert again.totals() == lowered
    for receipt in down + adjustments + copies:
        node.publish(topic, json.dumps(receipt).encode())
    totals = again.totals()
    assert totals == {**totals, **_ledger_totals(receipts, meter)}
    assert totals["sold_wh"] > lowered["sold_wh"]


def test_the_agent_s_market_defaults_are_the_market_s():
    """meter_agent may not import market: the parameters it reads to know how long the ledger
    may adjust a trade default as the market's do."""
    params = agent_module.market_params({})
    for name in (
        "interval_s",
        "gate_s",
        "correction_window_intervals",
        "gridops_window_s",
        "settlement_source",
    ):
        assert params[name] == DEFAULTS[name], name


def test_a_folded_trade_s_status_follows_its_adjustments(market, tmp_path, monkeypatch):  # noqa: F811
    """A folded trade the ledger left unsettled (its buyer, meter 3, sent no reading) is settled by
    its late reading's adjustment, then left unsettled again by the seller's correction (a counter
    gone backwards): the unsettled figures and flags follow it as they follow a trade kept whole,
    also after a restart and with every receipt sent again."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 0)  # every settled trade is folded at once
    c = market
    t = SETTLED_AT + 60
    start_imp, start_exp, end_imp, end_exp = reading_values(3)
    c.run_block([reading(c, 3, I1 - 900, start_imp, start_exp, t), reading(c, 3, I1, end_imp, end_exp, t)], t)
    start_imp, start_exp, end_imp, end_exp = reading_values(0)
    c.run_block([reading(c, 0, I1, end_imp, start_exp - 1, t + 60)], t + 60)  # export went backwards
    receipts = [r for r in _receipts(c, c.meters[3].id) if r["result"]["kind"] in agent_module.RECEIPT_KINDS]
    steps = [(r["result"]["kind"], r["result"]["status"]) for r in receipts if r["result"]["kind"] != "trade"]
    assert steps == [("settlement", "unsettled"), ("adjustment", "settled"), ("adjustment", "unsettled")]
    agent, node, topic = _agent(c, tmp_path, 3)
    seen = []
    for receipt in receipts:
        node.publish(topic, json.dumps(receipt).encode())
        totals = agent.totals()
        seen.append(
            (
                totals["bought_pending_wh"],
                totals["bought_wh"],
                totals["bought_unsettled_wh"],
                totals["unsettled_flags"],
            )
        )
    assert agent.trades == {}  # folded once settled
    assert seen == [
        (200, 0, 0, []),  # traded, pending: kept whole, whatever MAX_RECEIPTS says
        (0, 0, 200, ["missing_reading"]),  # left unsettled (folded)
        (0, 200, 0, []),  # settled by the late reading
        (0, 0, 200, ["counter_backwards"]),  # unsettled again
    ]
    totals = agent.totals()
    assert totals["earnings"] == 0 and totals["bought_pending_wh"] == 0
    for receipt in receipts[::-1]:
        node.publish(topic, json.dumps(receipt).encode())
    assert agent.totals() == totals
    agent.stop()
    again, node, topic = _agent(c, tmp_path, 3)
    assert again.totals() == totals
    for receipt in receipts:
        node.publish(topic, json.dumps(receipt).encode())
    assert again.totals() == totals
