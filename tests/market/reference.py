"""Plain reference implementations of the clearing rules, written for obviousness, not speed.

The production engines in market/clearing.py must return exactly what these return; the
hypothesis tests and benchmarks/bench_clearing.py compare them. Deliberately independent of
market.clearing's helpers: only the data classes and the rounding rule are shared.
"""

from __future__ import annotations

from market.clearing import ClearingResult, Order, Trade


def _round_half_even(numerator: int, denominator: int) -> int:
    # Independent spelling of the rule: compare twice the remainder against the denominator.
    q, r = divmod(numerator, denominator)
    if 2 * r > denominator:
        return q + 1
    if 2 * r < denominator:
        return q
    return q if q % 2 == 0 else q + 1


def _trade(sell: Order, buy: Order, energy: int, price: int, fee: int, levies: int) -> Trade:
    return Trade(
        seller=sell.meter,
        buyer=buy.meter,
        sell_order=sell.order_id,
        buy_order=buy.order_id,
        energy_wh=energy,
        price=price,
        value=_round_half_even(energy * price, 1000),
        grid_fee=_round_half_even(energy * fee, 1000),
        levies=_round_half_even(energy * levies, 1000),
    )


def _sorted_sides(orders: list[Order]) -> tuple[list[Order], list[Order]]:
    asks = [o for o in orders if o.side == "sell" and o.energy_wh > 0]
    bids = [o for o in orders if o.side == "buy" and o.energy_wh > 0]
    asks.sort(key=lambda o: (o.limit_price, o.position, o.meter, o.order_id))
    bids.sort(key=lambda o: (-o.limit_price, o.position, o.meter, o.order_id))
    return asks, bids


def reference_clear(
    orders: list[Order],
    mechanism: str = "uniform",
    *,
    community_price: int | None = None,
    grid_fee_per_kwh: int = 0,
    levies_per_kwh: int = 0,
) -> ClearingResult:
    """Sort-and-walk clearing of ``orders``: the oracle for market.clearing.clear."""
    asks, bids = _sorted_sides(list(orders))
    if mechanism == "community":
        assert community_price is not None
        return _reference_community(asks, bids, community_price, grid_fee_per_kwh, levies_per_kwh)
    pairs: list[tuple[Order, Order, int]] = []
    ask_left = [o.energy_wh for o in asks]
    bid_left = [o.energy_wh for o in bids]
    i = j = 0
    while i < len(asks) and j < len(bids) and bids[j].limit_price >= asks[i].limit_price:
        q = min(ask_left[i], bid_left[j])
        pairs.append((asks[i], bids[j], q))
        ask_left[i] -= q
        bid_left[j] -= q
        if ask_left[i] == 0:
            i += 1
        if bid_left[j] == 0:
            j += 1
    volume = sum(q for _, _, q in pairs)
    if mechanism == "uniform":
        if not pairs:
            return ClearingResult("uniform", None, 0, ())
        last_ask, last_bid, _ = pairs[-1]
        price = _round_half_even(last_ask.limit_price + last_bid.limit_price, 2)
        trades = [_trade(a, b, q, price, grid_fee_per_kwh, levies_per_kwh) for a, b, q in pairs]
        return ClearingResult("uniform", price, volume, tuple(trades))
    trades = [
        _trade(a, b, q, _round_half_even(a.limit_price + b.limit_price, 2), grid_fee_per_kwh, levies_per_kwh)
        for a, b, q in pairs
    ]
    return ClearingResult("pay-as-bid", None, volume, tuple(trades))


def _largest_remainder(total: int, weights: list[int]) -> list[int]:
    weight_sum = sum(weights)
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w - f * weight_sum for w, f in zip(weights, floors, strict=True)]
    missing = total - sum(floors)
    # Largest remainder first, ties by list order.
    ranked = sorted(range(len(weights)), key=lambda k: (-remainders[k], k))
    for k in ranked[:missing]:
        floors[k] += 1
    return floors


def _reference_community(
    asks: list[Order], bids: list[Order], price: int, fee: int, levies: int
) -> ClearingResult:
    asks = [o for o in asks if o.limit_price <= price]
    bids = [o for o in bids if o.limit_price >= price]
    supply = sum(o.energy_wh for o in asks)
    demand = sum(o.energy_wh for o in bids)
    if not asks or not bids:
        return ClearingResult("community", price, 0, ())
    if supply >= demand:
        sell_q = _largest_remainder(demand, [o.energy_wh for o in asks])
        buy_q = [o.energy_wh for o in bids]
    else:
        sell_q = [o.energy_wh for o in asks]
        buy_q = _largest_remainder(supply, [o.energy_wh for o in bids])
    sellers = [(o, q) for o, q in zip(asks, sell_q, strict=True) if q > 0]
    buyers = [(o, q) for o, q in zip(bids, buy_q, strict=True) if q > 0]
    trades: list[Trade] = []
    i = j = 0
    sell_left = [q for _, q in sellers]
    buy_left = [q for _, q in buyers]
    while i < len(sellers) and j < len(buyers):
        q = min(sell_left[i], buy_left[j])
        trades.append(_trade(sellers[i][0], buyers[j][0], q, price, fee, levies))
        sell_left[i] -= q
        buy_left[j] -= q
        if sell_left[i] == 0:
            i += 1
        if buy_left[j] == 0:
            j += 1
    return ClearingResult("community", price, min(supply, demand), tuple(trades))
