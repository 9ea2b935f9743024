"""Household statements: a hand-worked period, gross parts, and refusal of inconsistent input."""

from __future__ import annotations

import pytest

from market.settlement import SETTLED, UNSETTLED, TradeSettlement
from market.statement import household_statement

RETAIL = 300_000  # 0.30 per kWh
FEED_IN = 80_000  # 0.08 per kWh


def settled(
    seller: str,
    buyer: str,
    energy_wh: int,
    price: int,
    value: int,
    fee: int = 0,
    levies: int = 0,
    status: str = SETTLED,
    index: int = 0,
) -> TradeSettlement:
    return TradeSettlement(
        index,
        f"{seller}-s{index}",
        f"{buyer}-b{index}",
        seller,
        buyer,
        price,
        energy_wh,
        energy_wh if status == SETTLED else 0,
        value if status == SETTLED else 0,
        fee,
        levies,
        status,
        None if status == SETTLED else "missing_reading",
        None if status == SETTLED else seller,
    )


def test_hand_worked_period() -> None:
    trades = [
        settled("x", "h", 3_000, 150_000, 450_000, fee=90_000, levies=15_000, index=0),
        settled("h", "y", 2_000, 160_000, 320_000, index=1),
        settled("z", "h", 500, 150_000, 75_000, status=UNSETTLED, index=2),  # moves no money
        settled("x", "y", 1_000, 150_000, 150_000, index=3),  # not h's
    ]
    s = household_statement(
        "h",
        import_wh=10_000,
        export_wh=6_000,
        trades=trades,
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert (s.p2p_bought_wh, s.p2p_sold_wh) == (3_000, 2_000)
    assert (s.residual_import_wh, s.residual_export_wh) == (7_000, 4_000)
    assert s.baseline_import_cost == 3_000_000
    assert s.baseline_export_earnings == 480_000
    assert s.baseline_cost == 2_520_000
    assert (s.p2p_cost, s.grid_fees, s.levies) == (450_000, 90_000, 15_000)
    assert s.residual_import_cost == 2_100_000
    assert s.p2p_earnings == 320_000
    assert s.residual_export_earnings == 320_000
    assert s.actual_cost == 450_000 + 90_000 + 15_000 + 2_100_000 - 320_000 - 320_000
    # Buying 3 kWh for 0.555 instead of 0.90 saves 0.345; selling 2 kWh for 0.32 instead of
    # 0.16 feed-in earns 0.16 more: 0.505 in all.
    assert s.savings == 505_000


def test_no_trades_means_no_savings() -> None:
    s = household_statement(
        "h",
        import_wh=1_234,
        export_wh=567,
        trades=[],
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert s.actual_cost == s.baseline_cost == 370_200 - 45_360
    assert s.savings == 0


def test_savings_can_be_negative_when_fees_exceed_the_discount() -> None:
    trades = [settled("x", "h", 1_000, 290_000, 290_000, fee=30_000)]
    s = household_statement(
        "h",
        import_wh=1_000,
        export_wh=0,
        trades=trades,
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert s.savings == 300_000 - 320_000


def test_rounding_is_half_even_on_period_totals() -> None:
    # 5 Wh at 300000/kWh = 1500 exactly; 1 Wh at 1500/kWh = 1.5 -> 2; at 2500 = 2.5 -> 2.
    s = household_statement(
        "h", import_wh=1, export_wh=1, trades=[], retail_price_per_kwh=1_500, feed_in_price_per_kwh=2_500
    )
    assert (s.baseline_import_cost, s.baseline_export_earnings) == (2, 2)


def test_trading_with_itself_counts_both_roles() -> None:
    trades = [settled("h", "h", 100, 100_000, 10_000)]
    s = household_statement(
        "h",
        import_wh=100,
        export_wh=100,
        trades=trades,
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert (s.p2p_cost, s.p2p_earnings, s.p2p_bought_wh, s.p2p_sold_wh) == (10_000, 10_000, 100, 100)


def test_inconsistent_input_is_refused() -> None:
    trades = [settled("x", "h", 3_000, 150_000, 450_000)]
    with pytest.raises(ValueError, match="settled 3000 Wh bought but imported only 100 Wh"):
        household_statement(
            "h",
            import_wh=100,
            export_wh=0,
            trades=trades,
            retail_price_per_kwh=RETAIL,
            feed_in_price_per_kwh=FEED_IN,
        )
    with pytest.raises(ValueError, match="sold but exported only"):
        household_statement(
            "x",
            import_wh=0,
            export_wh=10,
            trades=trades,
            retail_price_per_kwh=RETAIL,
            feed_in_price_per_kwh=FEED_IN,
        )
    with pytest.raises(ValueError, match="import_wh must be >= 0"):
        household_statement(
            "h",
            import_wh=-1,
            export_wh=0,
            trades=[],
            retail_price_per_kwh=RETAIL,
            feed_in_price_per_kwh=FEED_IN,
        )
    with pytest.raises(ValueError, match="retail_price_per_kwh must be an integer"):
        household_statement(
            "h", import_wh=1, export_wh=0, trades=[], retail_price_per_kwh=0.3, feed_in_price_per_kwh=FEED_IN
        )


def test_from_clearing_through_settlement_to_statement() -> None:
    from market.clearing import Order, clear
    from market.settlement import Reading, settle

    orders = [Order("o1", "s", "sell", 1_000, 100_000, 0), Order("o2", "b", "buy", 1_000, 200_000, 1)]
    result = clear(orders, grid_fee_per_kwh=30_000)
    assert result.price == 150_000
    settlement = settle(
        result.trades,
        start_readings={"s": Reading(0, 0, "S"), "b": Reading(0, 0, "B")},
        end_readings={"s": Reading(200, 1_000, "S"), "b": Reading(1_500, 0, "B")},
        capacity_w={"s": 10_000, "b": 10_000},
        interval_s=900,
        grid_fee_per_kwh=30_000,
    )
    b = household_statement(
        "b",
        import_wh=1_500,
        export_wh=0,
        trades=settlement.trades,
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert (b.p2p_cost, b.grid_fees, b.residual_import_cost) == (150_000, 30_000, 150_000)
    assert b.savings == 450_000 - 330_000
    s = household_statement(
        "s",
        import_wh=200,
        export_wh=1_000,
        trades=settlement.trades,
        retail_price_per_kwh=RETAIL,
        feed_in_price_per_kwh=FEED_IN,
    )
    assert s.savings == 150_000 - 80_000  # sold at 0.15 instead of the 0.08 feed-in
