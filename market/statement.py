"""A household's statement over a period: what it paid and earned, and its savings against
the grid-only baseline. Pure integer arithmetic; every part is shown gross, never netted.

For a meter over a period, with its metered ``import_wh``/``export_wh`` and its settled trades
(money in micro-units, prices in micro-units per kWh, each value rounded half-even once):

    baseline  = value(import_wh, retail) - value(export_wh, feed_in)
    actual    = p2p_cost + grid_fees + levies + value(import_wh - p2p_bought_wh, retail)
                - p2p_earnings - value(export_wh - p2p_sold_wh, feed_in)
    savings   = baseline - actual

``p2p_cost``, ``grid_fees`` and ``levies`` are the sums over the trades the meter settled as a
buyer, ``p2p_earnings`` over those it settled as a seller (each trade's amounts as settled).
Unsettled trades move no money and count as normal grid supply or feed-in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from market.money import require_int, value_micro
from market.settlement import SETTLED, TradeSettlement


@dataclass(frozen=True, slots=True)
class HouseholdStatement:
    """Energy (Wh), prices (micro-units/kWh) and money (micro-units) of one household."""

    meter: str
    import_wh: int
    export_wh: int
    p2p_bought_wh: int
    p2p_sold_wh: int
    residual_import_wh: int
    residual_export_wh: int
    retail_price_per_kwh: int
    feed_in_price_per_kwh: int
    # grid-only baseline
    baseline_import_cost: int
    baseline_export_earnings: int
    baseline_cost: int
    # with the community market
    p2p_cost: int
    grid_fees: int
    levies: int
    residual_import_cost: int
    p2p_earnings: int
    residual_export_earnings: int
    actual_cost: int
    savings: int


def household_statement(
    meter: str,
    *,
    import_wh: int,
    export_wh: int,
    trades: Iterable[TradeSettlement],
    retail_price_per_kwh: int,
    feed_in_price_per_kwh: int,
) -> HouseholdStatement:
    """The statement of ``meter`` over a period from its metered energy and the settlements of
    the period's trades (others' trades in ``trades`` are ignored)."""
    require_int("import_wh", import_wh, 0)
    require_int("export_wh", export_wh, 0)
    require_int("retail_price_per_kwh", retail_price_per_kwh, 0)
    require_int("feed_in_price_per_kwh", feed_in_price_per_kwh, 0)
    bought_wh = sold_wh = p2p_cost = grid_fees = levies = p2p_earnings = 0
    for trade in trades:
        if trade.status != SETTLED:
            continue
        if trade.buyer == meter:
            bought_wh += trade.settled_wh
            p2p_cost += trade.value
            grid_fees += trade.grid_fee
            levies += trade.levies
        if trade.seller == meter:
            sold_wh += trade.settled_wh
            p2p_earnings += trade.value
    if bought_wh > import_wh:
        raise ValueError(
            f"meter {meter} settled {bought_wh} Wh bought but imported only {import_wh} Wh: "
            "the metered energy and the settlements are not of the same period"
        )
    if sold_wh > export_wh:
        raise ValueError(
            f"meter {meter} settled {sold_wh} Wh sold but exported only {export_wh} Wh: "
            "the metered energy and the settlements are not of the same period"
        )
    residual_import_wh = import_wh - bought_wh
    residual_export_wh = export_wh - sold_wh
    baseline_import_cost = value_micro(import_wh, retail_price_per_kwh)
    baseline_export_earnings = value_micro(export_wh, feed_in_price_per_kwh)
    baseline_cost = baseline_import_cost - baseline_export_earnings
    residual_import_cost = value_micro(residual_import_wh, retail_price_per_kwh)
    residual_export_earnings = value_micro(residual_export_wh, feed_in_price_per_kwh)
    actual_cost = (
        p2p_cost
        + grid_fees
        + levies
        + residual_import_cost
        - p2p_earnings
        - residual_export_earnings
    )
    return HouseholdStatement(
        meter=meter,
        import_wh=import_wh,
        export_wh=export_wh,
        p2p_bought_wh=bought_wh,
        p2p_sold_wh=sold_wh,
        residual_import_wh=residual_import_wh,
        residual_export_wh=residual_export_wh,
        retail_price_per_kwh=retail_price_per_kwh,
        feed_in_price_per_kwh=feed_in_price_per_kwh,
        baseline_import_cost=baseline_import_cost,
        baseline_export_earnings=baseline_export_earnings,
        baseline_cost=baseline_cost,
        p2p_cost=p2p_cost,
        grid_fees=grid_fees,
        levies=levies,
        residual_import_cost=residual_import_cost,
        p2p_earnings=p2p_earnings,
        residual_export_earnings=residual_export_earnings,
        actual_cost=actual_cost,
        savings=baseline_cost - actual_cost,
    )
