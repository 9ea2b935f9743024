"""The default offer strategy (pure): forecast an interval's net export, then sell or buy.

Forecast (docs/agent.md): the interval's net export (export − import, Wh) is predicted from the
most recent complete interval and the same time of day on the previous day:
``0.5 * recent + 0.5 * same_slot_yesterday`` when both are known, else whichever is known, else
no forecast (no order). The order: a configurable share of forecast surplus (reserve margin) is
offered for sale; a forecast deficit is bid for in full; both with the limit prices of the
agent's config, clamped to the community's tariff band. Small amounts are not worth an order.
An order is replaced when the forecast moves materially before gate closure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyConfig:
    """``sell_share`` of forecast surplus is offered (0..1); prices in micro-units per kWh.
    ``trade`` False: no orders at all (a household leaving lets its last trades settle while its
    agent still sends the readings: docs/quickstart.md, "Leaving")."""

    trade: bool = True
    sell_share: float = 0.8
    sell_limit_price: int = 100_000
    buy_limit_price: int = 250_000
    min_order_wh: int = 20
    replace_min_change_wh: int = 50
    replace_min_change_share: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.sell_share <= 1:
            raise ValueError("sell_share must lie within 0..1")
        if self.min_order_wh < 1 or self.replace_min_change_wh < 0:
            raise ValueError("min_order_wh must be >= 1 and replace_min_change_wh >= 0")


@dataclass(frozen=True)
class OrderPlan:
    side: str  # "sell" | "buy"
    energy_wh: int
    limit_price: int


def forecast_net_export_wh(history: dict[int, int], target: int, interval_s: int, now: int) -> int | None:
    """Forecast net export (Wh) of the interval starting at ``target`` from complete intervals.

    ``history`` maps interval start -> measured net export (Wh) of complete, fault-free intervals.
    """
    complete = [start for start in history if start + interval_s <= now]
    recent = history[max(complete)] if complete else None
    yesterday = history.get(target - 86_400)
    if recent is not None and yesterday is not None:
        return round(0.5 * recent + 0.5 * yesterday)
    if yesterday is not None:
        return yesterday
    return recent


def plan_order(
    forecast_wh: int | None,
    cfg: StrategyConfig,
    *,
    capacity_wh: int,
    feed_in_price: int,
    retail_price: int,
    grid_fee_per_kwh: int = 0,
    levies_per_kwh: int = 0,
) -> OrderPlan | None:
    """What to offer or bid for a forecast (None: nothing worth an order); prices in micro-units
    per kWh.

    A limit is clamped to [feed-in, retail]. A bid is also at most retail - grid fee - levies: the
    buyer pays those on top of the P2P price (docs/market.md), so P2P energy never costs it more
    than its supplier's; when that is below the feed-in price (below any seller's ask), there is no
    bid. Found in a QA pass of simulated studies: with a grid fee of 0.20 per kWh every buyer paid
    more than retail for its P2P energy."""
    if forecast_wh is None or not cfg.trade:
        return None
    if forecast_wh > 0:
        energy = min(int(forecast_wh * cfg.sell_share), capacity_wh)
        side, price, most = "sell", cfg.sell_limit_price, retail_price
    else:
        energy = min(-forecast_wh, capacity_wh)
        side, price = "buy", cfg.buy_limit_price
        most = min(retail_price, retail_price - grid_fee_per_kwh - levies_per_kwh)
    if energy < cfg.min_order_wh or most < feed_in_price:
        return None
    return OrderPlan(side, energy, min(max(price, feed_in_price), most))


def needs_replacement(current: OrderPlan | None, new: OrderPlan | None, cfg: StrategyConfig) -> bool:
    """True when the new plan differs materially from the order in effect."""
    if current is None or new is None:
        return current != new
    if current.side != new.side or current.limit_price != new.limit_price:
        return True
    change = abs(new.energy_wh - current.energy_wh)
    return change >= cfg.replace_min_change_wh and change >= cfg.replace_min_change_share * current.energy_wh
