"""Property tests of the clearing: every engine equals the plain reference, and the market's
invariants hold for any book (limits respected, no over-fill, balance, permutation-invariant)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from market.clearing import ClearingResult, Order, clear
from tests.market.reference import reference_clear

# Few distinct prices, positions and meters, so that ties are common.
PRICES = st.one_of(
    st.integers(0, 4).map(lambda k: 100_000 + 997 * k),
    st.integers(0, 12).map(lambda k: 100_000 + 997 * k),
    st.integers(0, 400_000),
)
MECHANISMS = st.sampled_from(["uniform", "pay-as-bid", "community"])


@st.composite
def books(draw: st.DrawFn, max_orders: int = 25) -> list[Order]:
    count = draw(st.integers(0, max_orders))
    ids = draw(st.permutations(range(count)))
    return [
        Order(
            order_id=f"o{ids[i]:04d}",
            meter=draw(st.sampled_from(["m0", "m1", "m2", "m3"])),
            side=draw(st.sampled_from(["sell", "buy"])),
            energy_wh=draw(st.integers(0, 300)),
            limit_price=draw(PRICES),
            position=draw(st.integers(0, 3)),
        )
        for i in range(count)
    ]


@st.composite
def params(draw: st.DrawFn) -> tuple[str, dict[str, int]]:
    mechanism = draw(MECHANISMS)
    kwargs = {
        "grid_fee_per_kwh": draw(st.integers(0, 50_000)),
        "levies_per_kwh": draw(st.integers(0, 9_999)),
    }
    if mechanism == "community":
        kwargs["community_price"] = draw(PRICES)
    return mechanism, kwargs


@settings(max_examples=150, deadline=None)
@given(books(), params())
def test_engines_equal_reference(book: list[Order], mechanism_params: tuple[str, dict]) -> None:
    mechanism, kwargs = mechanism_params
    expected = reference_clear(book, mechanism, **kwargs)
    assert clear(book, mechanism, engine="python", **kwargs) == expected
    assert clear(book, mechanism, engine="numpy", **kwargs) == expected
    assert clear(book, mechanism, **kwargs) == expected


@settings(max_examples=15, deadline=None)
@given(books(max_orders=400), params())
def test_engines_equal_reference_on_bigger_books(
    book: list[Order], mechanism_params: tuple[str, dict]
) -> None:
    mechanism, kwargs = mechanism_params
    expected = reference_clear(book, mechanism, **kwargs)
    assert clear(book, mechanism, engine="numpy", **kwargs) == expected
    assert clear(book, mechanism, engine="python", **kwargs) == expected


def check_invariants(
    book: list[Order], result: ClearingResult, community_price: int | None, fee: int, levies: int
) -> None:
    by_id = {o.order_id: o for o in book}
    sold: dict[str, int] = defaultdict(int)
    bought: dict[str, int] = defaultdict(int)
    for t in result.trades:
        ask, bid = by_id[t.sell_order], by_id[t.buy_order]
        assert ask.side == "sell" and bid.side == "buy"
        assert (t.seller, t.buyer) == (ask.meter, bid.meter)
        assert t.energy_wh > 0
        # No trade outside either party's limit.
        assert ask.limit_price <= t.price <= bid.limit_price
        # Money of each trade follows the half-even rule exactly.
        assert abs(t.value * 1000 - t.energy_wh * t.price) <= 500
        assert abs(t.grid_fee * 1000 - t.energy_wh * fee) <= 500
        assert abs(t.levies * 1000 - t.energy_wh * levies) <= 500
        sold[t.sell_order] += t.energy_wh
        bought[t.buy_order] += t.energy_wh
    # No order gets more than it asked for.
    for order_id, energy in {**sold, **bought}.items():
        assert energy <= by_id[order_id].energy_wh
    # Total bought == total sold == the reported volume.
    assert sum(sold.values()) == sum(bought.values()) == result.volume_wh
    # Money conserved: what buyers pay in value is what sellers receive.
    paid: dict[str, int] = defaultdict(int)
    received: dict[str, int] = defaultdict(int)
    for t in result.trades:
        paid[t.buyer] += t.value
        received[t.seller] += t.value
    assert sum(paid.values()) == sum(received.values())

    if result.mechanism == "uniform":
        assert len({t.price for t in result.trades}) <= 1
        if result.trades:
            assert result.price == result.trades[0].price
        else:
            assert result.price is None
        # No unmatched bid above the price while an unmatched ask lies below it (with no
        # trade, no unmatched bid may reach an unmatched ask at all).
        open_bids = [o for o in book if o.side == "buy" and bought[o.order_id] < o.energy_wh]
        open_asks = [o for o in book if o.side == "sell" and sold[o.order_id] < o.energy_wh]
        if open_bids and open_asks:
            best_bid = max(o.limit_price for o in open_bids)
            best_ask = min(o.limit_price for o in open_asks)
            if result.price is None:
                assert best_bid < best_ask
            else:
                assert not (best_bid > result.price and best_ask < result.price)
                assert best_bid < best_ask
    if result.mechanism == "community":
        assert community_price is not None
        assert result.price == community_price
        assert all(t.price == community_price for t in result.trades)
        asks = [o for o in book if o.side == "sell" and o.energy_wh and o.limit_price <= community_price]
        bids = [o for o in book if o.side == "buy" and o.energy_wh and o.limit_price >= community_price]
        supply = sum(o.energy_wh for o in asks)
        demand = sum(o.energy_wh for o in bids)
        assert result.volume_wh == min(supply, demand)
        if asks and bids:
            short, shares = (bids, bought) if supply >= demand else (asks, sold)
            assert all(shares[o.order_id] == o.energy_wh for o in short)  # served in full
            long_side, long_total = (asks, demand) if supply >= demand else (bids, supply)
            long_shares = sold if supply >= demand else bought
            offered = sum(o.energy_wh for o in long_side)
            for o in long_side:  # pro rata, within one Wh of the exact share
                assert abs(long_shares[o.order_id] * offered - o.energy_wh * long_total) < offered
    if result.mechanism == "pay-as-bid":
        assert result.price is None


@settings(max_examples=150, deadline=None)
@given(books(), params(), st.randoms(use_true_random=False))
def test_invariants_and_permutation_invariance(
    book: list[Order], mechanism_params: tuple[str, dict], rng
) -> None:
    mechanism, kwargs = mechanism_params
    result = clear(book, mechanism, **kwargs)
    check_invariants(
        book, result, kwargs.get("community_price"), kwargs["grid_fee_per_kwh"], kwargs["levies_per_kwh"]
    )
    shuffled = list(book)
    rng.shuffle(shuffled)
    for engine in ("python", "numpy"):
        assert clear(shuffled, mechanism, engine=engine, **kwargs) == result


@settings(max_examples=100, deadline=None)
@given(books(), st.integers(0, 400_000))
def test_pay_as_bid_pairs_equal_uniform_pairs(book: list[Order], price: int) -> None:
    uniform = clear(book, "uniform")
    pay_as_bid = clear(book, "pay-as-bid")
    assert [(t.sell_order, t.buy_order, t.energy_wh) for t in uniform.trades] == [
        (t.sell_order, t.buy_order, t.energy_wh) for t in pay_as_bid.trades
    ]
    assert uniform.volume_wh == pay_as_bid.volume_wh
