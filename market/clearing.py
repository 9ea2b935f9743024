"""Clearing one delivery interval's order book: a pure, deterministic, integer-only function.

Every peer re-executes :func:`clear` from the ledger and must get the same trades and money to
the last micro-unit, so there is no float, clock, randomness or I/O here. Units: energy in Wh,
prices in micro-units per kWh, money in micro-units (all ``int``); see docs/market.md.

Mechanisms (``mechanism=``):

- ``uniform`` (pay-as-clear): asks ascending, bids descending by limit; walk both while the bid
  limit is >= the ask limit, with partial fills; every trade at the half-even midpoint of the
  last matched (marginal) ask and bid limits.
- ``pay-as-bid``: the same pairs, each at the half-even midpoint of its own bid and ask limits.
- ``community``: a fixed community price; the short side gets everything it asked for and the
  long side is rationed pro rata (largest remainder), then sellers and buyers are paired.

Ties everywhere: better price first, then earlier ``position``, then meter key id, then order id.

Two engines give identical results: a plain sort-and-walk in Python (small books, and any book
whose numbers do not fit the fast path's exact int64 bounds) and a numpy engine that sorts the
integer keys in bulk and computes the walk's pairs with cumulative sums (large books). Neither
uses floats.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, make_dataclass
from itertools import repeat
from operator import attrgetter, eq

import numpy as np

from market.money import WH_PER_KWH, apportion, midpoint_price, require_int, value_micro

SELL = "sell"
BUY = "buy"
SIDES = (SELL, BUY)

UNIFORM = "uniform"
PAY_AS_BID = "pay-as-bid"
COMMUNITY = "community"
MECHANISMS = (UNIFORM, PAY_AS_BID, COMMUNITY)

ENGINES = ("auto", "python", "numpy")
# Below this many orders the numpy engine's fixed costs (~0.15 ms) outweigh its gains.
NUMPY_MIN_ORDERS = 200
# The numpy engine works in int64; it is used only when every intermediate product and sum
# provably stays below this bound, otherwise the exact Python engine runs.
_INT64_SAFE = 2**62


@dataclass(frozen=True, slots=True)
class Order:
    """One live order of an interval's book, as the clearing sees it.

    ``meter`` is the party's key id; ``position`` its arrival position in the ledger (smaller =
    earlier). ``energy_wh`` 0 means cancelled: such an order takes no part in the clearing.
    """

    order_id: str
    meter: str
    side: str
    energy_wh: int
    limit_price: int
    position: int

    def __post_init__(self) -> None:
        if not isinstance(self.order_id, str) or not self.order_id:
            raise ValueError(f"order_id must be a non-empty string, got {self.order_id!r}")
        if not isinstance(self.meter, str) or not self.meter:
            raise ValueError(f"order {self.order_id}: meter must be a non-empty string")
        if self.side not in SIDES:
            raise ValueError(
                f"order {self.order_id}: side must be 'sell' or 'buy', got {self.side!r}"
            )
        require_int(f"order {self.order_id}: energy_wh", self.energy_wh, 0)
        require_int(f"order {self.order_id}: limit_price", self.limit_price, 0)
        require_int(f"order {self.order_id}: position", self.position, 0)


@dataclass(frozen=True, slots=True)
class Trade:
    """A matched seller–buyer pair. ``value`` goes from buyer to seller; the buyer also pays
    ``grid_fee`` and ``levies`` (money, micro-units), shown separately, never inside ``price``."""

    seller: str
    buyer: str
    sell_order: str
    buy_order: str
    energy_wh: int
    price: int
    value: int
    grid_fee: int
    levies: int


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """The outcome of one interval: ``price`` is the uniform clearing price or the community
    price (``None`` for pay-as-bid, and for uniform when nothing matched)."""

    mechanism: str
    price: int | None
    volume_wh: int
    trades: tuple[Trade, ...]


def ask_key(order: Order) -> tuple[int, int, str, str]:
    """Tie-break sort key of a sell order: cheapest first, then earliest, key id, order id."""
    return (order.limit_price, order.position, order.meter, order.order_id)


def bid_key(order: Order) -> tuple[int, int, str, str]:
    """Tie-break sort key of a buy order: highest limit first, then earliest, key id, order id."""
    return (-order.limit_price, order.position, order.meter, order.order_id)


def clear(
    orders: Iterable[Order],
    mechanism: str = UNIFORM,
    *,
    community_price: int | None = None,
    grid_fee_per_kwh: int = 0,
    levies_per_kwh: int = 0,
    engine: str = "auto",
) -> ClearingResult:
    """Clear one interval's orders with ``mechanism``; see the module docstring for the rules.

    ``community_price`` (micro-units per kWh) is required by, and only allowed with, the
    ``community`` mechanism. ``grid_fee_per_kwh`` and ``levies_per_kwh`` set each trade's
    ``grid_fee`` and ``levies``. ``engine`` picks the implementation ("auto" chooses by book
    size); every engine returns the identical result. Invalid input raises ``ValueError``.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; use one of {', '.join(MECHANISMS)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if mechanism == COMMUNITY:
        if community_price is None:
            raise ValueError("the community mechanism needs a community_price")
        require_int("community_price", community_price, 0)
    elif community_price is not None:
        raise ValueError(f"community_price applies only to the community mechanism, not {mechanism}")
    require_int("grid_fee_per_kwh", grid_fee_per_kwh, 0)
    require_int("levies_per_kwh", levies_per_kwh, 0)

    book = orders if isinstance(orders, list | tuple) else list(orders)
    for order_type in set(map(type, book)):
        if not issubclass(order_type, Order):
            raise ValueError(f"orders must be Order instances, got {order_type.__name__}")
    order_ids = list(map(_get_order_id, book))
    _check_unique_ids(order_ids)

    if engine == "numpy" or (engine == "auto" and len(book) >= NUMPY_MIN_ORDERS):
        result = _clear_numpy(
            book, order_ids, mechanism, community_price, grid_fee_per_kwh, levies_per_kwh
        )
        if result is not None:
            return result
    return _clear_python(book, mechanism, community_price, grid_fee_per_kwh, levies_per_kwh)


_get_order_id = attrgetter("order_id")


def _check_unique_ids(order_ids: list[str]) -> None:
    if len(set(order_ids)) == len(order_ids):
        return
    seen: set[str] = set()
    for order_id in order_ids:
        if order_id in seen:
            raise ValueError(f"duplicate order id {order_id!r}")
        seen.add(order_id)


def _make_trade(sell: Order, buy: Order, energy_wh: int, price: int, fee: int, levies: int) -> Trade:
    return Trade(
        seller=sell.meter,
        buyer=buy.meter,
        sell_order=sell.order_id,
        buy_order=buy.order_id,
        energy_wh=energy_wh,
        price=price,
        value=value_micro(energy_wh, price),
        grid_fee=value_micro(energy_wh, fee),
        levies=value_micro(energy_wh, levies),
    )


# ---------------------------------------------------------------------------------------------
# Python engine: sort with the full tie-break key, then walk.


def _walk_merit_order(asks: Sequence[Order], bids: Sequence[Order]) -> list[tuple[int, int, int]]:
    """Pairs ``(ask index, bid index, energy_wh)`` of the merit-order walk, in walk order."""
    pairs: list[tuple[int, int, int]] = []
    i = j = 0
    if not asks or not bids:
        return pairs
    ask_left, bid_left = asks[0].energy_wh, bids[0].energy_wh
    while bids[j].limit_price >= asks[i].limit_price:
        quantity = min(ask_left, bid_left)
        pairs.append((i, j, quantity))
        ask_left -= quantity
        bid_left -= quantity
        if ask_left == 0:
            i += 1
            if i == len(asks):
                break
            ask_left = asks[i].energy_wh
        if bid_left == 0:
            j += 1
            if j == len(bids):
                break
            bid_left = bids[j].energy_wh
    return pairs


def _walk_allocations(sell_wh: Sequence[int], buy_wh: Sequence[int]) -> list[tuple[int, int, int]]:
    """Pairs ``(seller index, buyer index, energy_wh)`` pairing two allocation lists in order."""
    pairs: list[tuple[int, int, int]] = []
    i = j = 0
    sell_left = buy_left = 0
    while True:
        while sell_left == 0 and i < len(sell_wh):
            sell_left = sell_wh[i]
            i += 1
        while buy_left == 0 and j < len(buy_wh):
            buy_left = buy_wh[j]
            j += 1
        if sell_left == 0 or buy_left == 0:
            return pairs
        quantity = min(sell_left, buy_left)
        pairs.append((i - 1, j - 1, quantity))
        sell_left -= quantity
        buy_left -= quantity


def community_allocations(
    asks: Sequence[Order], bids: Sequence[Order]
) -> tuple[list[int], list[int]]:
    """Per-order quantities (Wh) of the community mechanism, for participating orders given in
    tie-break order: the short side gets all it asked, the long side shares pro rata."""
    offers = [o.energy_wh for o in asks]
    demands = [o.energy_wh for o in bids]
    supply_wh, demand_wh = sum(offers), sum(demands)
    if supply_wh >= demand_wh:
        return apportion(demand_wh, offers), demands
    return offers, apportion(supply_wh, demands)


def _clear_python(
    book: Sequence[Order], mechanism: str, community_price: int | None, fee: int, levies: int
) -> ClearingResult:
    asks = [o for o in book if o.side == SELL and o.energy_wh]
    bids = [o for o in book if o.side == BUY and o.energy_wh]
    if mechanism == COMMUNITY:
        assert community_price is not None
        asks = sorted((o for o in asks if o.limit_price <= community_price), key=ask_key)
        bids = sorted((o for o in bids if o.limit_price >= community_price), key=bid_key)
        sell_wh, buy_wh = community_allocations(asks, bids)
        pairs = _walk_allocations(sell_wh, buy_wh)
        trades = tuple(
            _make_trade(asks[i], bids[j], q, community_price, fee, levies) for i, j, q in pairs
        )
        return ClearingResult(mechanism, community_price, sum(q for _, _, q in pairs), trades)

    asks = sorted(asks, key=ask_key)
    bids = sorted(bids, key=bid_key)
    pairs = _walk_merit_order(asks, bids)
    volume_wh = sum(q for _, _, q in pairs)
    if mechanism == UNIFORM:
        price = None
        if pairs:
            last_ask, last_bid, _ = pairs[-1]
            price = midpoint_price(asks[last_ask].limit_price, bids[last_bid].limit_price)
        trades = tuple(_make_trade(asks[i], bids[j], q, price, fee, levies) for i, j, q in pairs)
        return ClearingResult(mechanism, price, volume_wh, trades)
    trades = tuple(
        _make_trade(
            asks[i], bids[j], q, midpoint_price(asks[i].limit_price, bids[j].limit_price),
            fee, levies,
        )
        for i, j, q in pairs
    )
    return ClearingResult(mechanism, None, volume_wh, trades)


# ---------------------------------------------------------------------------------------------
# numpy engine: the same rules on int64 columns (exact: used only while every number < 2**62).
#
# For big books the cost is in touching Python objects, so the engine reads each attribute of
# the book once, in input order (memory order), does all ordering and arithmetic on arrays,
# and builds the trades in bulk.

_get_meter = attrgetter("meter")
_get_side = attrgetter("side")
_get_energy = attrgetter("energy_wh")
_get_price = attrgetter("limit_price")
_get_position = attrgetter("position")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big book is cleared.

    Building hundreds of thousands of trades would otherwise trigger repeated full collections
    that walk every live object (the whole book included) without finding a cycle: the
    clearing creates none. Results do not depend on it; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Columns:
    """The book as arrays, one row per order in input order."""

    __slots__ = ("orders", "order_ids", "energy", "price", "position", "is_sell")

    def __init__(self, orders: Sequence[Order], order_ids: list[str]) -> None:
        count = len(orders)
        self.orders = orders
        self.order_ids = order_ids
        # fromiter raises OverflowError for a number outside int64; the caller falls back.
        self.energy = np.fromiter(map(_get_energy, orders), np.int64, count)
        self.price = np.fromiter(map(_get_price, orders), np.int64, count)
        self.position = np.fromiter(map(_get_position, orders), np.int64, count)
        self.is_sell = np.fromiter(map(eq, repeat(SELL), map(_get_side, orders)), np.bool_, count)

    def merit_order(self, rows: np.ndarray, descending: bool) -> np.ndarray:
        """``rows`` sorted by price (ascending, or descending for bids), then position.

        Rows equal in both come out in an unspecified order: :meth:`break_ties` fixes it.
        """
        price = -self.price[rows] if descending else self.price[rows]
        position = self.position[rows]
        price_low, position_low = int(price.min()), int(position.min())
        position_span = int(position.max()) - position_low + 1
        if (int(price.max()) - price_low + 1) * position_span < _INT64_SAFE:
            # One combined integer key sorts faster than two keys.
            key = (price - price_low) * position_span + (position - position_low)
            return rows[np.argsort(key)]
        return rows[np.lexsort((position, price))]

    def break_ties(self, rows: np.ndarray, needed: int) -> np.ndarray:
        """Order each run of rows equal in (price, position) by (meter, order id), for the runs
        that start within the first ``needed`` rows (the others cannot change the result)."""
        price, position = self.price[rows], self.position[rows]
        same = (price[1:] == price[:-1]) & (position[1:] == position[:-1])
        if not same[:needed].any():
            return rows
        rows = rows.copy()
        links = np.flatnonzero(same)
        breaks = np.flatnonzero(np.diff(links) != 1)
        firsts = np.concatenate((links[:1], links[breaks + 1])).tolist()
        lasts = np.concatenate((links[breaks], links[-1:])).tolist()
        orders = self.orders
        for first, last in zip(firsts, lasts, strict=True):
            if first >= needed:
                break
            run = rows[first : last + 2].tolist()
            run.sort(key=lambda row: (orders[row].meter, orders[row].order_id))
            rows[first : last + 2] = run
        return rows


def _round_half_even_div(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """Vectorised :func:`market.money.div_round_half_even` for non-negative int64 numerators."""
    quotient, remainder = np.divmod(numerator, denominator)
    twice = 2 * remainder
    up = (twice > denominator) | ((twice == denominator) & (quotient % 2 == 1))
    return quotient + up


def _apportion_array(total: int, weights: np.ndarray) -> np.ndarray:
    """Vectorised :func:`market.money.apportion` (largest remainder, ties in array order)."""
    parts, remainders = np.divmod(weights * total, int(weights.sum()))
    missing = total - int(parts.sum())
    if missing:
        parts[np.argsort(-remainders, kind="stable")[:missing]] += 1
    return parts


def _segments(
    sell_cum: np.ndarray, buy_cum: np.ndarray, volume_wh: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The walk's pairs from the cumulative quantities of both sides (both reach ``volume_wh``).

    Every boundary where a seller or a buyer is used up starts a new pair; between two
    boundaries one seller sells to one buyer. Returns (seller index, buyer index, energy_wh).
    """
    starts = np.concatenate(([0], sell_cum[sell_cum < volume_wh], buy_cum[buy_cum < volume_wh]))
    starts.sort(kind="stable")  # three sorted runs: a merge
    starts = starts[np.concatenate(([True], starts[1:] != starts[:-1]))]
    ends = np.append(starts[1:], volume_wh)
    sellers = np.searchsorted(sell_cum, starts, side="right")
    buyers = np.searchsorted(buy_cum, starts, side="right")
    return sellers, buyers, ends - starts


def _matched_volume(
    ask_price: np.ndarray, ask_cum: np.ndarray, bid_price: np.ndarray, bid_cum: np.ndarray
) -> int:
    """Volume of the merit-order walk: the first Wh at which the bid covering it is below the
    ask covering it (the condition is monotone: asks rise, bids fall), or the shorter side."""
    end = min(int(ask_cum[-1]), int(bid_cum[-1]))

    def crosses(wh: int) -> bool:
        i = int(np.searchsorted(ask_cum, wh, side="right"))
        j = int(np.searchsorted(bid_cum, wh, side="right"))
        return bool(bid_price[j] >= ask_price[i])

    if not crosses(0):
        return 0
    good, bad = 0, end  # crosses(good) holds; no Wh at or past `bad` matches
    while bad - good > 1:
        middle = (good + bad) // 2
        if crosses(middle):
            good = middle
        else:
            bad = middle
    return bad


def _clear_numpy(
    book: Sequence[Order],
    order_ids: list[str],
    mechanism: str,
    community_price: int | None,
    fee: int,
    levies: int,
) -> ClearingResult | None:
    """The numpy engine; ``None`` if a number does not fit its exact int64 bounds."""
    with _gc_paused():
        try:
            columns = _Columns(book, order_ids)
        except OverflowError:
            return None
        return _clear_columns(columns, mechanism, community_price, fee, levies)


def _clear_columns(
    book: _Columns, mechanism: str, community_price: int | None, fee: int, levies: int
) -> ClearingResult | None:
    empty = ClearingResult(mechanism, community_price, 0, ())
    live = book.energy > 0
    ask_mask, bid_mask = live & book.is_sell, live & ~book.is_sell
    if community_price is not None:
        ask_mask &= book.price <= community_price
        bid_mask &= book.price >= community_price
    ask_rows, bid_rows = np.flatnonzero(ask_mask), np.flatnonzero(bid_mask)
    if len(ask_rows) == 0 or len(bid_rows) == 0:
        return empty

    max_energy = int(book.energy.max())
    max_price = max(int(book.price.max()), fee, levies, community_price or 0)
    total_bound = len(book.energy) * max_energy  # bounds every cumulative sum
    if (
        total_bound >= _INT64_SAFE
        or max_energy * max_price >= _INT64_SAFE  # value, fee and levies of a trade
        or 2 * max_price >= _INT64_SAFE  # the sum of two limits (midpoint)
        or (community_price is not None and max_energy * total_bound >= _INT64_SAFE)
    ):
        return None

    ask_rows = book.merit_order(ask_rows, descending=False)
    bid_rows = book.merit_order(bid_rows, descending=True)
    if community_price is not None:
        return _community_columns(book, ask_rows, bid_rows, community_price, fee, levies)

    # The price met at each Wh does not depend on the order among equal keys, so the matched
    # volume, and with it which rows can take part, is known before ties are broken.
    ask_cum, bid_cum = np.cumsum(book.energy[ask_rows]), np.cumsum(book.energy[bid_rows])
    volume_wh = _matched_volume(book.price[ask_rows], ask_cum, book.price[bid_rows], bid_cum)
    if volume_wh == 0:
        return empty
    # Rows that start before volume_wh take part, and a tie run must be ordered when its first
    # row does; _segments then cuts the walk at volume_wh in the final order.
    ask_rows = book.break_ties(ask_rows, int(np.searchsorted(ask_cum, volume_wh)) + 1)
    bid_rows = book.break_ties(bid_rows, int(np.searchsorted(bid_cum, volume_wh)) + 1)
    sellers, buyers, energy_wh = _segments(
        np.cumsum(book.energy[ask_rows]), np.cumsum(book.energy[bid_rows]), volume_wh
    )
    sell_rows, buy_rows = ask_rows[sellers], bid_rows[buyers]
    if mechanism == UNIFORM:
        price = midpoint_price(int(book.price[sell_rows[-1]]), int(book.price[buy_rows[-1]]))
        trades = _build_trades(book, sell_rows, buy_rows, energy_wh, price, fee, levies)
        return ClearingResult(mechanism, price, volume_wh, trades)
    prices = _round_half_even_div(book.price[sell_rows] + book.price[buy_rows], 2)
    trades = _build_trades(book, sell_rows, buy_rows, energy_wh, prices, fee, levies)
    return ClearingResult(mechanism, None, volume_wh, trades)


def _community_columns(
    book: _Columns,
    ask_rows: np.ndarray,
    bid_rows: np.ndarray,
    community_price: int,
    fee: int,
    levies: int,
) -> ClearingResult:
    ask_rows = book.break_ties(ask_rows, len(ask_rows))
    bid_rows = book.break_ties(bid_rows, len(bid_rows))
    offers, demands = book.energy[ask_rows], book.energy[bid_rows]
    supply_wh, demand_wh = int(offers.sum()), int(demands.sum())
    if supply_wh >= demand_wh:
        offers = _apportion_array(demand_wh, offers)
    else:
        demands = _apportion_array(supply_wh, demands)
    volume_wh = min(supply_wh, demand_wh)
    # Rows allocated nothing take no part in the pairing walk.
    sell_keep, buy_keep = np.flatnonzero(offers), np.flatnonzero(demands)
    sellers, buyers, energy_wh = _segments(
        np.cumsum(offers[sell_keep]), np.cumsum(demands[buy_keep]), volume_wh
    )
    sell_rows, buy_rows = ask_rows[sell_keep[sellers]], bid_rows[buy_keep[buyers]]
    trades = _build_trades(book, sell_rows, buy_rows, energy_wh, community_price, fee, levies)
    return ClearingResult(COMMUNITY, community_price, volume_wh, trades)


# A mutable twin of Trade with the same fields and memory layout: see _build_trades.
_TradeDraft = make_dataclass(
    "_TradeDraft", [(f.name, f.type) for f in fields(Trade)], slots=True, eq=False
)


def _build_trades(
    book: _Columns,
    sell_rows: np.ndarray,
    buy_rows: np.ndarray,
    energy_wh: np.ndarray,
    prices: np.ndarray | int,
    fee: int,
    levies: int,
) -> tuple[Trade, ...]:
    """Construct the trades in bulk; each equals ``Trade(*row)``. ``prices`` is one price for
    all trades or one per trade.

    A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__``, which
    for a big book costs more than the whole clearing. The trades are built as
    ``_TradeDraft`` (same slots, plain attribute stores) and then given the class ``Trade``
    (allowed because the layouts are identical), which makes them ordinary frozen ``Trade``
    objects; the tests compare them with the Python engine's ``Trade(...)`` calls.
    """
    # The meters in one pass over the book in memory order (cheaper than visiting each trade's
    # orders at random); the string columns are then gathered by numpy.
    meters = np.fromiter(map(_get_meter, book.orders), object, len(book.orders))
    order_ids = np.array(book.order_ids, dtype=object)
    columns = (
        meters[sell_rows].tolist(),
        meters[buy_rows].tolist(),
        order_ids[sell_rows].tolist(),
        order_ids[buy_rows].tolist(),
        energy_wh.tolist(),
        # One shared int when every trade has the same price.
        [prices] * len(energy_wh) if isinstance(prices, int) else prices.tolist(),
        _round_half_even_div(energy_wh * prices, WH_PER_KWH).tolist(),
        _round_half_even_div(energy_wh * fee, WH_PER_KWH).tolist(),
        _round_half_even_div(energy_wh * levies, WH_PER_KWH).tolist(),
    )
    trades = list(map(_TradeDraft, *columns))
    deque(map(setattr, trades, repeat("__class__"), repeat(Trade)), maxlen=0)
    return tuple(trades)
