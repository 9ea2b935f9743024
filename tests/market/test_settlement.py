"""Settlement against metered readings: shortfall sharing, each flag, money conservation over a
simulated week, and corrections as adjustment entries."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from market.clearing import Order, Trade, clear
from market.money import value_micro
from market.settlement import (
    COUNTER_BACKWARDS,
    GRID_FEES_ACCOUNT,
    IMPLAUSIBLE_JUMP,
    LEVIES_ACCOUNT,
    METER_REPLACED,
    MISSING_READING,
    SERIAL_NOT_ENROLLED,
    SETTLED,
    UNSETTLED,
    Adjustment,
    Delivery,
    Reading,
    Settlement,
    adjust,
    check_meter,
    check_reading,
    settle,
)

INTERVAL_S = 900
FEE = 30_000
LEVIES = 5_000


def trade(seller: str, buyer: str, energy_wh: int, price: int = 150_000, tag: str = "") -> Trade:
    return Trade(
        seller,
        buyer,
        f"{seller}-sell{tag}",
        f"{buyer}-buy{tag}",
        energy_wh,
        price,
        value_micro(energy_wh, price),
        value_micro(energy_wh, FEE),
        value_micro(energy_wh, LEVIES),
    )


def readings(deltas: dict[str, tuple[int, int]], serial: str = "SN") -> tuple[dict, dict]:
    """Start and end readings giving each meter (import_wh, export_wh) in the interval."""
    start = {m: Reading(10_000, 20_000, f"{serial}-{m}") for m in deltas}
    end = {m: Reading(10_000 + i, 20_000 + e, f"{serial}-{m}") for m, (i, e) in deltas.items()}
    return start, end


def run_settle(trades: list[Trade], start: dict, end: dict, capacity: int = 10_000) -> Settlement:
    meters = {t.seller for t in trades} | {t.buyer for t in trades}
    return settle(
        trades,
        start_readings=start,
        end_readings=end,
        capacity_w=dict.fromkeys(meters, capacity),
        interval_s=INTERVAL_S,
        grid_fee_per_kwh=FEE,
        levies_per_kwh=LEVIES,
    )


def assert_conserved(settlement: Settlement) -> None:
    assert sum(settlement.balance_changes.values()) == 0
    credited = defaultdict(int)
    charged = defaultdict(int)
    for t in settlement.trades:
        credited[t.seller] += t.value
        charged[t.buyer] += t.value + t.grid_fee + t.levies
    fees = sum(t.grid_fee for t in settlement.trades)
    levies = sum(t.levies for t in settlement.trades)
    assert settlement.balance_changes[GRID_FEES_ACCOUNT] == fees
    assert settlement.balance_changes[LEVIES_ACCOUNT] == levies
    for meter in set(credited) | set(charged):
        assert settlement.balance_changes[meter] == credited[meter] - charged[meter]


def test_full_delivery_settles_every_trade_as_traded() -> None:
    trades = [trade("s1", "b1", 100), trade("s1", "b2", 50), trade("s2", "b2", 70)]
    start, end = readings({"s1": (0, 150), "s2": (0, 80), "b1": (100, 0), "b2": (200, 0)})
    result = run_settle(trades, start, end)
    assert [t.settled_wh for t in result.trades] == [100, 50, 70]
    assert all(t.status == SETTLED and t.flag is None for t in result.trades)
    assert [(t.value, t.grid_fee, t.levies) for t in result.trades] == [
        (tr.value, tr.grid_fee, tr.levies) for tr in trades
    ]
    assert result.meter_flags == {}
    assert result.deliveries["s1"] == Delivery(import_wh=0, export_wh=150)
    assert result.balance_changes == {
        "b1": -(15_000 + 3_000 + 500),
        "b2": -(7_500 + 1_500 + 250) - (10_500 + 2_100 + 350),
        "s1": 15_000 + 7_500,
        "s2": 10_500,
        GRID_FEES_ACCOUNT: 3_000 + 1_500 + 2_100,
        LEVIES_ACCOUNT: 500 + 250 + 350,
    }
    assert_conserved(result)


def test_seller_shortfall_is_shared_pro_rata_with_largest_remainder() -> None:
    # s sold 100 + 50, exported 100: exact shares 66.67 / 33.33 -> 67 / 33.
    trades = [trade("s", "b1", 100), trade("s", "b2", 50)]
    start, end = readings({"s": (0, 100), "b1": (500, 0), "b2": (500, 0)})
    result = run_settle(trades, start, end)
    assert [t.settled_wh for t in result.trades] == [67, 33]
    assert [t.value for t in result.trades] == [value_micro(67, 150_000), value_micro(33, 150_000)]
    assert_conserved(result)


def test_equal_remainders_go_in_trade_order() -> None:
    trades = [trade("s", "b1", 10), trade("s", "b2", 10), trade("s", "b3", 10)]
    start, end = readings({"s": (0, 10), "b1": (50, 0), "b2": (50, 0), "b3": (50, 0)})
    assert [t.settled_wh for t in run_settle(trades, start, end).trades] == [4, 3, 3]


def test_buyer_shortfall_and_min_of_both_sides() -> None:
    # b bought 60 + 40, imported 50 -> 30 / 20; s2 exported only 10 of its 40 -> min(20, 10).
    trades = [trade("s1", "b", 60), trade("s2", "b", 40)]
    start, end = readings({"s1": (0, 60), "s2": (0, 10), "b": (50, 0)})
    result = run_settle(trades, start, end)
    assert [t.settled_wh for t in result.trades] == [30, 10]
    assert all(t.status == SETTLED for t in result.trades)
    assert_conserved(result)


def test_nothing_exported_settles_zero_without_flag() -> None:
    trades = [trade("s", "b", 100)]
    start, end = readings({"s": (300, 0), "b": (100, 0)})
    (result,) = run_settle(trades, start, end).trades
    assert (result.status, result.settled_wh, result.value, result.flag) == (SETTLED, 0, 0, None)


@pytest.mark.parametrize(
    ("start_s", "end_s", "flag"),
    [
        (None, Reading(0, 100, "A"), MISSING_READING),
        (Reading(0, 0, "A"), None, MISSING_READING),
        (Reading(0, 0, "A"), Reading(0, 100, "B"), METER_REPLACED),
        (Reading(0, 500, "A"), Reading(0, 400, "A"), COUNTER_BACKWARDS),
        (Reading(500, 0, "A"), Reading(499, 100, "A"), COUNTER_BACKWARDS),
        # 1000 W for 900 s allows 250 Wh at most.
        (Reading(0, 0, "A"), Reading(0, 251, "A"), IMPLAUSIBLE_JUMP),
        (Reading(0, 0, "A"), Reading(251, 100, "A"), IMPLAUSIBLE_JUMP),
    ],
)
def test_each_flag_leaves_the_meters_trades_unsettled(start_s, end_s, flag: str) -> None:
    trades = [trade("s", "b1", 100), trade("s2", "b1", 100), trade("s", "b2", 50)]
    start, end = readings({"s2": (0, 100), "b1": (200, 0), "b2": (50, 0)})
    start["s"], end["s"] = start_s, end_s
    if start_s is None:
        del start["s"]  # absent from the mapping counts as missing too
    meters = {"s": 1_000, "s2": 10_000, "b1": 10_000, "b2": 10_000}
    result = settle(
        trades,
        start_readings=start,
        end_readings=end,
        capacity_w=meters,
        interval_s=INTERVAL_S,
        grid_fee_per_kwh=FEE,
        levies_per_kwh=LEVIES,
    )
    assert result.meter_flags == {"s": flag}
    first, second, third = result.trades
    for unsettled in (first, third):
        assert (unsettled.status, unsettled.flag, unsettled.flagged_meter) == (UNSETTLED, flag, "s")
        assert (unsettled.settled_wh, unsettled.value, unsettled.grid_fee, unsettled.levies) == (0, 0, 0, 0)
    # b1 imported 200 for 200 bought: s2's trade is unaffected.
    assert (second.status, second.settled_wh) == (SETTLED, 100)
    assert result.balance_changes["s"] == 0
    assert result.balance_changes["b2"] == 0
    assert_conserved(result)


def test_capacity_boundary_is_plausible() -> None:
    assert check_meter(Reading(0, 0, "A"), Reading(250, 250, "A"), 1_000, 900) == Delivery(250, 250)
    assert check_meter(Reading(0, 0, "A"), Reading(0, 1, "A"), 0, 900) == IMPLAUSIBLE_JUMP


def test_flag_order_replaced_before_backwards() -> None:
    # A new meter starts from low counters: that is a replacement, not a counter going back.
    assert check_meter(Reading(9_000, 9_000, "A"), Reading(5, 5, "B"), 1_000, 900) == METER_REPLACED


def test_both_parties_flagged_reports_the_seller() -> None:
    trades = [trade("s", "b", 10)]
    start = {"s": Reading(0, 0, "A"), "b": Reading(100, 0, "B")}
    end = {"b": Reading(50, 0, "B")}
    (result,) = run_settle(trades, start, end).trades
    assert (result.flag, result.flagged_meter) == (MISSING_READING, "s")


def test_flagged_counterparty_does_not_inflate_other_trades() -> None:
    # b imported 50 for 100 bought; its share of the s2 trade stays 25 even though the s1 trade
    # cannot settle (s1's reading is missing).
    trades = [trade("s1", "b", 50), trade("s2", "b", 50)]
    start, end = readings({"s2": (0, 50), "b": (50, 0)})
    start["s1"] = Reading(0, 0, "X")
    result = run_settle(trades, start, end)
    assert [(t.status, t.settled_wh) for t in result.trades] == [(UNSETTLED, 0), (SETTLED, 25)]


def test_bad_settlement_input_is_refused() -> None:
    trades = [trade("s", "b", 10)]
    start, end = readings({"s": (0, 10), "b": (10, 0)})
    with pytest.raises(ValueError, match="no enrolled capacity for meter b"):
        settle(trades, start_readings=start, end_readings=end, capacity_w={"s": 1}, interval_s=900)
    with pytest.raises(ValueError, match="interval_s must be >= 1"):
        settle(trades, start_readings=start, end_readings=end, capacity_w={"s": 1, "b": 1}, interval_s=0)
    with pytest.raises(ValueError, match="import_wh must be >= 0"):
        Reading(-1, 0, "A")
    with pytest.raises(ValueError, match="serial"):
        Reading(0, 0, "")
    with pytest.raises(ValueError, match="community account"):
        run_settle([trade("grid_fees", "b", 10)], start, end)


def test_no_trades_settles_nothing() -> None:
    result = settle([], start_readings={}, end_readings={}, capacity_w={}, interval_s=900)
    assert result.trades == ()
    assert result.balance_changes == {GRID_FEES_ACCOUNT: 0, LEVIES_ACCOUNT: 0}


# --- corrections -----------------------------------------------------------------------------


def test_corrected_reading_gives_an_adjustment_not_an_edit() -> None:
    trades = [trade("s", "b1", 100), trade("s", "b2", 50), trade("s2", "b1", 40)]
    start, end = readings({"s2": (0, 40), "b1": (140, 0), "b2": (50, 0), "s": (0, 150)})
    missing_end = dict(end)
    del missing_end["s"]
    first = run_settle(trades, start, missing_end)
    corrected = run_settle(trades, start, end)
    adjustment = adjust(first, corrected)

    changed = {a.index: a for a in adjustment.trades}
    assert set(changed) == {0, 1}  # s2's trade did not change
    assert changed[0].settled_wh_delta == 100
    assert changed[0].value_delta == trades[0].value
    assert changed[0].grid_fee_delta == trades[0].grid_fee
    assert (changed[0].status_before, changed[0].status_after, changed[0].flag_after) == (
        UNSETTLED,
        SETTLED,
        None,
    )
    assert sum(adjustment.balance_changes.values()) == 0
    assert adjustment.balance_changes["s"] == trades[0].value + trades[1].value
    # The earlier settlement plus the adjustment is the corrected settlement.
    for account, change in corrected.balance_changes.items():
        assert first.balance_changes.get(account, 0) + adjustment.balance_changes.get(account, 0) == change
    assert adjustment.sold_wh_changes == {"s": 150}
    assert adjustment.bought_wh_changes == {"b1": 100, "b2": 50}
    assert adjust(corrected, corrected) == Adjustment(
        trades=(), sold_wh_changes={}, bought_wh_changes={}, balance_changes={}
    )
    assert adjust(corrected, corrected).is_empty


def test_downward_correction_gives_negative_deltas() -> None:
    trades = [trade("s", "b", 100)]
    start, end = readings({"s": (0, 100), "b": (100, 0)})
    lower_start, lower_end = readings({"s": (0, 60), "b": (100, 0)})
    adjustment = adjust(run_settle(trades, start, end), run_settle(trades, lower_start, lower_end))
    (change,) = adjustment.trades
    assert change.settled_wh_delta == -40
    assert (adjustment.sold_wh_changes, adjustment.bought_wh_changes) == ({"s": -40}, {"b": -40})
    assert change.value_delta == value_micro(60, 150_000) - value_micro(100, 150_000)
    assert adjustment.balance_changes["s"] == change.value_delta
    assert adjustment.balance_changes["b"] == -(
        change.value_delta + change.grid_fee_delta + change.levies_delta
    )
    assert sum(adjustment.balance_changes.values()) == 0


def test_adjusting_different_trades_is_refused() -> None:
    start, end = readings({"s": (0, 100), "b": (100, 0)})
    one = run_settle([trade("s", "b", 100)], start, end)
    other = run_settle([trade("s", "b", 90)], start, end)
    with pytest.raises(ValueError, match="not of the same trades"):
        adjust(one, other)


# --- a simulated week ------------------------------------------------------------------------


def test_money_is_conserved_over_a_simulated_week() -> None:
    rng = random.Random(20240601)
    meters = [f"{i:032x}" for i in range(12)]
    capacity = dict.fromkeys(meters, 8_000)  # 8 kW: at most 2000 Wh per quarter hour
    counters = {m: [rng.randint(0, 10**6), rng.randint(0, 10**6)] for m in meters}
    serials = {m: f"SN{m[-4:]}" for m in meters}
    totals: dict[str, int] = defaultdict(int)
    flagged = settled_short = 0
    previous_end = {m: Reading(c[0], c[1], serials[m]) for m, c in counters.items()}
    for interval in range(7 * 96):
        orders = [
            Order(
                f"{interval}-{k}",
                m,
                rng.choice(["sell", "buy"]),
                rng.randint(0, 1_500),
                rng.randint(60_000, 300_000),
                k,
            )
            for k, m in enumerate(rng.sample(meters, rng.randint(2, len(meters))))
        ]
        mechanism = ("uniform", "pay-as-bid", "community")[interval % 3]
        extra = {"community_price": 150_000} if mechanism == "community" else {}
        result = clear(orders, mechanism, grid_fee_per_kwh=FEE, levies_per_kwh=LEVIES, **extra)
        sides = {o.meter: o for o in orders}
        end: dict[str, Reading] = {}
        for m in meters:
            imported = exported = 0
            if m in sides:  # delivery close to what was ordered, sometimes short
                wanted = sides[m].energy_wh
                delivered = max(0, wanted - rng.choice([0, 0, 0, rng.randint(0, wanted)]))
                if sides[m].side == "sell":
                    exported = delivered
                else:
                    imported = delivered
            counters[m][0] += imported
            counters[m][1] += exported
            end[m] = Reading(counters[m][0], counters[m][1], serials[m])
        start = dict(previous_end)
        fault = rng.random()
        victim = rng.choice(meters)
        if fault < 0.03:
            del end[victim]
        elif fault < 0.05:
            end[victim] = Reading(0, 0, serials[victim])  # counters went backwards
        elif fault < 0.06:
            serials[victim] += "R"
            end[victim] = Reading(0, 0, serials[victim])  # meter replaced
        elif fault < 0.07:
            end[victim] = Reading(end[victim].import_wh + 99_999, end[victim].export_wh, serials[victim])
        settlement = settle(
            result.trades,
            start_readings=start,
            end_readings=end,
            capacity_w=capacity,
            interval_s=INTERVAL_S,
            grid_fee_per_kwh=FEE,
            levies_per_kwh=LEVIES,
        )
        assert_conserved(settlement)
        deliveries = settlement.deliveries
        sold: dict[str, int] = defaultdict(int)
        bought: dict[str, int] = defaultdict(int)
        for t, traded in zip(settlement.trades, result.trades, strict=True):
            assert 0 <= t.settled_wh <= traded.energy_wh
            assert t.value == value_micro(t.settled_wh, traded.price)
            flagged += t.status == UNSETTLED
            settled_short += t.status == SETTLED and t.settled_wh < traded.energy_wh
            sold[t.seller] += t.settled_wh
            bought[t.buyer] += t.settled_wh
        for m, energy in sold.items():
            assert energy == 0 or energy <= deliveries[m].export_wh
        for m, energy in bought.items():
            assert energy == 0 or energy <= deliveries[m].import_wh
        for account, change in settlement.balance_changes.items():
            totals[account] += change
        # The next interval starts from the true counters (a fault spoils one reading only).
        previous_end = {m: Reading(c[0], c[1], serials[m]) for m, c in counters.items()}
    assert sum(totals.values()) == 0
    assert totals[GRID_FEES_ACCOUNT] > 0 and totals[LEVIES_ACCOUNT] > 0
    assert flagged > 0 and settled_short > 0  # the week exercised both paths


def test_a_serial_that_is_not_the_enrolled_one_is_flagged() -> None:
    trades = [trade("s", "b", 1000)]
    start, end = readings({"s": (0, 1000), "b": (1000, 0)})
    enrolled = {"s": "SN-s", "b": "SN-b"}
    ok = settle(trades, start_readings=start, end_readings=end, capacity_w={"s": 10_000, "b": 10_000},
                interval_s=INTERVAL_S, enrolled_serials=enrolled)
    assert ok.trades[0].status == SETTLED
    flagged = settle(trades, start_readings=start, end_readings=end, capacity_w={"s": 10_000, "b": 10_000},
                     interval_s=INTERVAL_S, enrolled_serials={**enrolled, "b": "SN-other"})
    assert flagged.meter_flags == {"b": SERIAL_NOT_ENROLLED}
    assert flagged.trades[0].status == UNSETTLED and flagged.trades[0].flagged_meter == "b"
    assert not any(flagged.balance_changes.values())
    # a replaced meter (the two readings differ) is named as such, before the enrolment check
    assert check_meter(Reading(0, 0, "SN-b"), Reading(0, 0, "NEW"), 10_000, 900, "SN-b") == METER_REPLACED


def test_check_reading_bounds_energy_by_capacity_over_the_elapsed_time() -> None:
    """11 kW for 900 s is 2,750 Wh; a meter that was offline for a day may move a day's worth."""
    r = Reading(0, 5000, "SN")
    kw11 = {"enrolled_serial": "SN", "capacity_w": 11_000}
    assert check_reading(Reading(0, 7750, "SN"), earlier=(900, r), **kw11) is None
    assert check_reading(Reading(0, 7751, "SN"), earlier=(900, r), **kw11) == IMPLAUSIBLE_JUMP
    assert check_reading(Reading(0, 99_999_999, "SN"), earlier=(900, r), **kw11) == IMPLAUSIBLE_JUMP
    assert check_reading(Reading(0, 5000 + 264_000, "SN"), earlier=(86_400, r), **kw11) is None
    assert check_reading(Reading(0, 0, "SN"), later=(900, Reading(0, 2751, "SN")), **kw11) == IMPLAUSIBLE_JUMP
    assert check_reading(Reading(0, 0, "OTHER"), **kw11) == SERIAL_NOT_ENROLLED
    assert check_reading(Reading(0, 0, "SN"), earlier=(900, r), **kw11) is None  # backwards: settlement's
