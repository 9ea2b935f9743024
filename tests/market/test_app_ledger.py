"""The market as the ledger's application: orders -> gate-closure clearing -> readings -> settlement,
balances conserved, corrections as adjustments, and the whole chain re-verifies."""

from __future__ import annotations

import pytest

from chain.envelope import Rejected
from chain.verify import verify_store
from market.app import MarketApp
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, opening_orders, order, reading


@pytest.fixture
def market(tmp_path):
    c = make_community(
        validators=3,
        members=4,
        meters_per_member=1,
        app="market",
        app_params=PARAMS,
        time=T0,
        capacity_w=10_000,
    )
    c.open_ledgers(tmp_path, MarketApp)
    return c


def results_of(c, kind):
    store = c.ledgers[0].store
    return [r for h in range(1, store.height() + 1) for r in store.results(h) if r["kind"] == kind]


def trade_round(c):
    """Two sellers, two buyers for I1; cleared at gate closure."""
    t = T0 + 10
    block = c.run_block(opening_orders(c, t), t)
    assert all(r["status"] == "ok" for r in block.results if r["kind"] == "tx")
    assert c.ledgers[0].next_block_due() == I1 - 300
    c.run_block([], I1 - 300)  # gate closure
    return results_of(c, "trade")


def test_gate_closure_clears_uniform_price(market):
    c = market
    trades = trade_round(c)
    clearing = results_of(c, "clearing")[0]
    # asks 90k (1000), 120k (500); bids 200k (800), 100k (600): 1000 Wh match, marginal ask 90k / bid 100k
    assert clearing["volume_wh"] == 1000 and clearing["price"] == 95_000
    assert sum(t["energy_wh"] for t in trades) == 1000
    assert all(t["price"] == 95_000 for t in trades)
    assert {t["seller"] for t in trades} == {c.meters[0].id}
    outcomes = {o["meter"]: o for o in results_of(c, "order_outcome")}
    assert outcomes[c.meters[1].id]["filled_wh"] == 0  # ask above the clearing price
    assert not c.ledgers[0].state["app"]["book"]


def test_orders_rejected_with_reasons(market):
    c = market
    t = T0 + 10
    block = c.run_block(
        [
            order(c, 0, "sell", 100, 10_000, t),  # below feed-in
            order(c, 0, "sell", 100_000, 90_000, t),  # above capacity (2500 Wh)
            order(c, 1, "sell", 100, 90_000, t, interval=T0),  # closed (gate passed)
            order(c, 2, "buy", 100, 150_000, t, interval=T0 + 7 * 86400),  # too far ahead
            order(c, 3, "buy", 100, 150_000, t),
            order(c, 3, "sell", 100, 150_000, t),  # replaces the buy: a meter is on one side only
        ],
        t,
    )
    reasons = [r.get("reason") for r in block.results if r["kind"] == "tx"]
    assert reasons == ["price_out_of_range", "above_capacity", "interval_closed", "too_far_ahead", None, None]
    book = c.ledgers[0].state["app"]["book"][str(I1)]
    assert book[c.meters[3].id]["side"] == "sell" and book[c.meters[3].id]["energy_wh"] == 100
    c.meters[3].seq += 5
    newer = order(c, 3, "buy", 10, 150_000, t)
    c.meters[3].seq -= 3  # an older (fresh, lower seq) order arriving late must not replace a newer one
    older = order(c, 3, "buy", 20, 150_000, t)
    block = c.run_block([newer, older], t + 1)
    assert [r.get("reason") for r in block.results if r["kind"] == "tx"] == [None, "stale_order"]


def test_settlement_against_readings_conserves_money_and_verifies(market):
    c = market
    trades = trade_round(c)
    # readings carry counters at the END of their interval: I1 - 900's bounds I1's start
    start, end = I1 - 900, I1
    t = I1 + 900 + 5
    # seller 0 exported only 600 Wh of the 1000 it sold; the buyers imported plenty
    txs = [
        reading(c, 0, start, 5000, 10_000, t),
        reading(c, 0, end, 5000, 10_600, t),
        reading(c, 2, start, 1000, 0, t),
        reading(c, 2, end, 2000, 0, t),
        reading(c, 3, start, 1000, 0, t),
        reading(c, 3, end, 2000, 0, t),
    ]
    c.run_block(txs, t)
    settlements = results_of(c, "settlement")
    assert len(settlements) == len(trades)
    assert sum(s["settled_wh"] for s in settlements) == 600  # the seller's shortfall is shared pro rata
    assert all(s["status"] == "settled" for s in settlements)
    balances = c.ledgers[0].state["app"]["balances"]
    assert sum(balances.values()) == 0
    owner0 = c.genesis.doc["meters"][c.meters[0].id]["owner"]
    assert balances[owner0] == sum(s["value"] for s in settlements)
    for ledger in c.ledgers:
        assert verify_store(ledger.store, MarketApp()).blocks == ledger.height


def test_missing_reading_flags_then_late_reading_settles_by_adjustment(market):
    c = market
    trade_round(c)
    end = I1
    t = I1 + 900 + 5
    txs = [
        reading(c, 0, I1 - 900, 0, 0, t),
        reading(c, 0, end, 0, 2000, t),
        reading(c, 2, I1 - 900, 0, 0, t),
        reading(c, 2, end, 900, 0, t),
    ]  # buyer 3 sends nothing
    c.run_block(txs, t)
    deadline = I1 + 3 * 900
    assert c.ledgers[0].next_block_due() == deadline
    c.run_block([], deadline)
    settlements = results_of(c, "settlement")
    flagged = [s for s in settlements if s["buyer"] == c.meters[3].id]
    assert flagged and all(s["status"] == "unsettled" and s["flag"] == "missing_reading" for s in flagged)
    late = [reading(c, 3, I1 - 900, 0, 0, deadline + 10), reading(c, 3, end, 700, 0, deadline + 10)]
    c.run_block(late, deadline + 10)
    adjustments = results_of(c, "adjustment")
    assert adjustments and all(
        a["reason"] == "late_reading" and a["status"] == "settled" for a in adjustments
    )
    assert sum(c.ledgers[0].state["app"]["balances"].values()) == 0
    # a corrected reading for a settled interval: adjustment, never an edit
    fix = reading(c, 0, end, 0, 500, deadline + 20)
    before = len(adjustments)
    c.run_block([fix], deadline + 20)
    assert len(results_of(c, "adjustment")) > before
    assert results_of(c, "adjustment")[-1]["reason"] == "corrected_reading"
    assert sum(c.ledgers[0].state["app"]["balances"].values()) == 0
    for ledger in c.ledgers:
        verify_store(ledger.store, MarketApp())


def _buyers_read(c, t):
    return [x for m in (2, 3) for x in (reading(c, m, I1 - 900, 0, 0, t), reading(c, m, I1, 900, 0, t))]


@pytest.fixture
def market_11kw(tmp_path):
    c = make_community(
        validators=3,
        members=4,
        meters_per_member=1,
        app="market",
        app_params=PARAMS,
        time=T0,
        capacity_w=11_000,
    )
    c.open_ledgers(tmp_path, MarketApp)
    return c


def test_reading_with_a_serial_that_is_not_the_enrolled_one_is_flagged_not_paid(market_11kw):
    """Both readings of the seller carry another serial (consistently, so not 'meter_replaced'):
    the trades stay unsettled with the reason, no money moves, and the readings are flagged."""
    c = market_11kw
    trade_round(c)
    t = I1 + 905
    seller = c.meters[0].id
    txs = [
        reading(c, 0, I1 - 900, 0, 5000, t, serial="EVIL-1"),
        reading(c, 0, I1, 0, 6000, t, serial="EVIL-1"),
    ]
    block = c.run_block(txs + _buyers_read(c, t), t)
    flags = [r for r in block.results if r["kind"] == "reading_flag"]
    assert [(r["meter"], r["flag"]) for r in flags] == [(seller, "serial_not_enrolled")] * 2
    settlements = results_of(c, "settlement")
    assert settlements and all(
        s["status"] == "unsettled" and s["flag"] == "serial_not_enrolled" and s["flagged_meter"] == seller
        for s in settlements
    )
    assert not results_of(c, "balance") and not any(c.ledgers[0].state["app"]["balances"].values())
    for ledger in c.ledgers:
        verify_store(ledger.store, MarketApp())


def test_export_beyond_the_enrolled_capacity_is_flagged_not_paid(market_11kw):
    """An 11 kW meter's export counter from 5,000 to 99,999,999 Wh in one interval (issue 13): the
    trades are unsettled 'implausible_jump', the reading itself is flagged when it arrives, and
    so is a jump in an interval the meter did not trade in."""
    c = market_11kw
    trade_round(c)
    t = I1 + 905
    seller = c.meters[0].id
    txs = [reading(c, 0, I1 - 900, 0, 5000, t), reading(c, 0, I1, 0, 99_999_999, t)]
    block = c.run_block(txs + _buyers_read(c, t), t)
    assert [(r["meter"], r["interval"], r["flag"]) for r in block.results if r["kind"] == "reading_flag"] == [
        (seller, I1, "implausible_jump")
    ]
    settlements = results_of(c, "settlement")
    assert settlements and all(
        s["status"] == "unsettled" and s["flag"] == "implausible_jump" and s["flagged_meter"] == seller
        for s in settlements
    )
    assert not results_of(c, "balance")
    # 2,750 Wh is what 11 kW can export in 900 s: exactly that is plausible, one Wh more is not
    t2 = I1 + 2 * 900 + 5
    block = c.run_block(
        [
            reading(c, 0, I1 + 900, 0, 99_999_999 + 2750, t2),
            reading(c, 1, I1 - 900, 0, 0, t2),
            reading(c, 1, I1, 0, 2751, t2),
        ],
        t2,
    )
    assert [(r["meter"], r["flag"]) for r in block.results if r["kind"] == "reading_flag"] == [
        (c.meters[1].id, "implausible_jump")
    ]
    for ledger in c.ledgers:
        verify_store(ledger.store, MarketApp())


def test_an_order_of_a_meter_revoked_before_gate_closure_is_not_cleared(market):
    """A revoked meter's readings are refused, so a trade it cleared could never settle and would
    leave its counterparty with an unsettled trade: its orders leave the book at gate closure."""
    c = market
    t = T0 + 10
    c.run_block(opening_orders(c, t), t)
    revoked = c.meters[0].id  # the cheapest seller
    prop = c.validators[0].sign(
        c.community,
        "propose",
        {"action": "revoke_meter", "args": {"meter": revoked}, "deadline": t + 3600},
        created=t + 1,
    )
    pid = prop.tx_hash.hex()
    votes = [
        v.sign(c.community, "vote", {"proposal": pid, "vote": "yes"}, created=t + 1) for v in c.validators[1:]
    ]
    c.run_block([prop, *votes], t + 1)
    assert not c.ledgers[0].chain_state["meters"][revoked]["active"]
    c.run_block([], I1 - 300)  # gate closure
    trades = results_of(c, "trade")
    assert trades and all(revoked not in (tr["seller"], tr["buyer"]) for tr in trades)
    outcome = next(o for o in results_of(c, "order_outcome") if o["meter"] == revoked)
    assert outcome["filled_wh"] == 0 and outcome["withdrawn"] == "meter_revoked"
    clearing = results_of(c, "clearing")[0]
    assert clearing["asks"] == 1  # the revoked seller's ask is not counted
    for ledger in c.ledgers:
        verify_store(ledger.store, MarketApp())


def _fee_raised_between_clearing_and_settlement(tmp_path, **params):
    """One traded interval whose grid fee is raised by vote after its gate closed and before it
    settles; the settlement results."""
    from tests.support.market_ledger import reading_values

    c = make_community(
        validators=1, members=4, meters_per_member=1, app="market", app_params={**PARAMS, **params}, time=T0
    )
    c.open_ledgers(tmp_path, MarketApp)
    c.run_block(opening_orders(c, T0 + 10), T0 + 10)
    c.run_block([], I1 - 300)  # gate closure: cleared at the genesis's rate
    t = I1 - 200
    body = {
        "action": "set_param",
        "args": {"name": "grid_fee_per_kwh", "value": 30_000},
        "deadline": t + 3600,
    }
    proposal = c.members[0].sign(c.community, "propose", body, created=t)
    votes = [
        m.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for m in c.members[1:3]
    ]
    c.run_block([proposal, *votes], t)
    assert c.ledgers[0].state["chain"]["params"]["grid_fee_per_kwh"] == 30_000
    t = I1 + 905
    readings = []
    for m in range(4):
        start_imp, start_exp, end_imp, end_exp = reading_values(m)
        readings += [reading(c, m, I1 - 900, start_imp, start_exp, t), reading(c, m, I1, end_imp, end_exp, t)]
    c.run_block(readings, t)
    c.run_block([], I1 + 3 * 900)
    trades, settlements = results_of(c, "trade"), results_of(c, "settlement")
    assert trades and len(settlements) == len(trades)
    for ledger in c.ledgers:
        assert verify_store(ledger.store, MarketApp()).blocks == ledger.height
    return trades, settlements


def test_fees_are_charged_at_the_rates_in_force_when_the_trade_cleared(tmp_path):
    """Found in a QA pass: a grid fee raised by vote between an interval's clearing and its
    settlement was charged on that interval's trades (cleared at 20,000, settled at 30,000 µ/kWh),
    against docs/billing.md. With fee_rates_at = "clearing" (what new communities get) each
    interval keeps the rates of its gate closure."""
    trades, settlements = _fee_raised_between_clearing_and_settlement(tmp_path, fee_rates_at="clearing")
    for trade, settled in zip(trades, settlements, strict=True):
        assert settled["settled_wh"] == trade["energy_wh"]
        assert (
            settled["grid_fee"]
            == trade["grid_fee"]
            == trade["energy_wh"] * PARAMS["grid_fee_per_kwh"] // 1000
        )


def test_ledgers_from_before_the_switch_still_settle_as_they_did(tmp_path):
    """Without fee_rates_at (every ledger written before it), settlement keeps charging the rates in
    force when it runs, so those ledgers re-execute to the same results and state roots."""
    trades, settlements = _fee_raised_between_clearing_and_settlement(tmp_path)
    for trade, settled in zip(trades, settlements, strict=True):
        assert settled["grid_fee"] == trade["energy_wh"] * 30_000 // 1000 != trade["grid_fee"]


def _alternating_corrections(tmp_path, n: int, **params):
    """A settled interval whose seller then sends ``n`` corrections of its end reading, back and
    forth between what it exported and less; the community and the results of the correction
    blocks (one each)."""
    c = make_community(
        validators=1, members=4, meters_per_member=1, app="market", app_params={**PARAMS, **params}, time=T0
    )
    c.open_ledgers(tmp_path, MarketApp)
    trade_round(c)
    t = I1 + 905
    c.run_block(
        [
            reading(c, 0, I1 - 900, 0, 0, t),
            reading(c, 0, I1, 0, 2000, t),
            *_buyers_read(c, t),
        ],
        t,
    )
    assert all(s["status"] == "settled" for s in results_of(c, "settlement"))
    blocks = []
    for k in range(n):
        t += 60
        export_wh = [500, 2000, 700, 2000, 500, 2000][k]
        blocks.append(c.run_block([reading(c, 0, I1, 0, export_wh, t)], t).results)
    assert sum(c.ledgers[0].state["app"]["balances"].values()) == 0
    for ledger in c.ledgers:
        assert verify_store(ledger.store, MarketApp()).blocks == ledger.height
    return c, blocks


def test_a_reading_is_corrected_at_most_max_reading_corrections_times(tmp_path):
    """Found in a QA pass: a trading partner forced 20 adjustments of a settled trade (and of its
    counterparty's receipts and balance) with 20 corrections alternating between two values. With
    max_reading_corrections (new genesis files say 3) the fourth correction is refused."""
    c, blocks = _alternating_corrections(tmp_path, 6, max_reading_corrections=3)
    txs = [[r for r in results if r["kind"] == "tx"][0] for results in blocks]
    assert [r["status"] for r in txs] == ["ok", "ok", "ok", "rejected", "rejected", "rejected"]
    assert {r.get("reason") for r in txs[3:]} == {"too_many_corrections"}
    adjusted = [any(r["kind"] == "adjustment" for r in results) for results in blocks]
    assert adjusted == [True, True, True, False, False, False]
    assert c.ledgers[0].state["app"]["corrections"] == {c.meters[0].id: {str(I1): 3}}
    later = I1 + (32 + 3) * 900  # the default correction_window_intervals
    c.run_block([], later)  # the count is forgotten with the readings, after the window
    assert c.ledgers[0].state["app"]["corrections"] == {}


def test_without_the_parameter_corrections_stay_unlimited(tmp_path):
    """Ledgers written before max_reading_corrections re-execute as they did: every correction is
    taken (and the state keeps no count)."""
    c, blocks = _alternating_corrections(tmp_path, 5)
    assert all(any(r["kind"] == "adjustment" for r in results) for results in blocks)
    assert "corrections" not in c.ledgers[0].state["app"]


def _order_churn(tmp_path, n: int, **params):
    """Meter 0 places ``n`` orders for I1 (replacements, one of them a cancellation), one block
    each; the community and the status of each."""
    c = make_community(
        validators=1, members=4, meters_per_member=1, app="market", app_params={**PARAMS, **params}, time=T0
    )
    c.open_ledgers(tmp_path, MarketApp)
    statuses = []
    for k in range(n):
        t = T0 + 10 + k
        energy_wh = 0 if k == 2 else 500 + k
        block = c.run_block([order(c, 0, "sell", energy_wh, 90_000, t)], t)
        statuses.append(next(r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"))
    return c, statuses


def test_a_meter_places_at_most_max_orders_per_interval_orders_for_one_interval(tmp_path):
    """Found in a QA pass: one meter replaced one order 6,000 times (each with a higher seq), all
    booked, growing every node's store by ~0.56 MB per 2,000 while the book held one order. With
    max_orders_per_interval (new genesis files say 12) one more order for that interval is
    refused, a cancellation counts as one, and the count leaves the state at gate closure."""
    c, statuses = _order_churn(tmp_path, 5, max_orders_per_interval=4)
    assert statuses == ["ok", "ok", "ok", "ok", "too_many_orders"]
    meter = c.meters[0].id
    assert c.ledgers[0].state["app"]["orders_placed"] == {str(I1): {meter: 4}}
    assert c.ledgers[0].state["app"]["book"][str(I1)][meter]["energy_wh"] == 503  # the 4th
    with pytest.raises(Rejected) as refused:  # refused at intake: it never reaches a block
        c.ledgers[0].intake(order(c, 0, "sell", 700, 90_000, T0 + 20).to_bytes(), T0 + 20)
    assert refused.value.reason == "too_many_orders"
    # another interval, and another meter, have their own count
    t = T0 + 30
    block = c.run_block(
        [order(c, 0, "sell", 100, 90_000, t, interval=I1 + 900), order(c, 1, "buy", 100, 200_000, t)], t
    )
    assert [r["status"] for r in block.results if r["kind"] == "tx"] == ["ok", "ok"]
    c.run_block([], I1 - 300)  # gate closure of I1: its count is forgotten, I1 + 900's kept
    assert c.ledgers[0].state["app"]["orders_placed"] == {str(I1 + 900): {meter: 1}}
    c.run_block([], I1 + 600)
    assert c.ledgers[0].state["app"]["orders_placed"] == {}
    assert verify_store(c.ledgers[0].store, MarketApp()).blocks == c.ledgers[0].height


def test_without_the_parameter_orders_stay_unlimited(tmp_path):
    """Ledgers written before max_orders_per_interval re-execute as they did: every replacement
    is taken (and the state keeps no count)."""
    c, statuses = _order_churn(tmp_path, 14)
    assert statuses == ["ok"] * 14
    assert "orders_placed" not in c.ledgers[0].state["app"]
