"""Hand-worked clearing examples with known answers, for every engine, and input checks."""

from __future__ import annotations

import pytest

from market.clearing import ClearingResult, Order, Trade, clear
from tests.market.reference import reference_clear

ENGINES = ("python", "numpy")


def order(
    order_id: str, side: str, energy_wh: int, price: int, position: int, meter: str | None = None
) -> Order:
    return Order(order_id, meter or order_id, side, energy_wh, price, position)


def trade(seller: str, buyer: str, energy_wh: int, price: int, fee: int = 0, levies: int = 0) -> Trade:
    """A trade between orders whose meter equals their id; money per the half-even rule."""
    from market.money import value_micro

    return Trade(
        seller,
        buyer,
        seller,
        buyer,
        energy_wh,
        price,
        value_micro(energy_wh, price),
        value_micro(energy_wh, fee),
        value_micro(energy_wh, levies),
    )


def run(orders: list[Order], mechanism: str = "uniform", **kwargs: int) -> ClearingResult:
    """Clear with every engine and the reference; all must agree."""
    results = [clear(orders, mechanism, engine=e, **kwargs) for e in ENGINES]
    results.append(reference_clear(orders, mechanism, **kwargs))
    assert all(r == results[0] for r in results), results
    return results[0]


BOOK = [
    order("a1", "sell", 100, 100_000, 0),
    order("a2", "sell", 200, 120_000, 1),
    order("a3", "sell", 100, 200_000, 2),
    order("b1", "buy", 150, 180_000, 3),
    order("b2", "buy", 100, 150_000, 4),
    order("b3", "buy", 100, 110_000, 5),
]


def test_uniform_partial_fills_price_at_marginal_midpoint() -> None:
    # Walk: a1->b1 100, a2->b1 50, a2->b2 100; next pair a2 (120000) vs b3 (110000) stops.
    # Marginal pair a2/b2: (120000 + 150000) / 2 = 135000.
    result = run(BOOK, grid_fee_per_kwh=30_000, levies_per_kwh=5_000)
    assert result == ClearingResult(
        "uniform",
        135_000,
        250,
        (
            Trade("a1", "b1", "a1", "b1", 100, 135_000, 13_500, 3_000, 500),
            Trade("a2", "b1", "a2", "b1", 50, 135_000, 6_750, 1_500, 250),
            Trade("a2", "b2", "a2", "b2", 100, 135_000, 13_500, 3_000, 500),
        ),
    )


def test_pay_as_bid_prices_each_pair_at_its_own_midpoint() -> None:
    result = run(BOOK, "pay-as-bid")
    assert result.price is None
    assert result.volume_wh == 250
    assert result.trades == (
        trade("a1", "b1", 100, 140_000),  # (100000 + 180000) / 2
        trade("a2", "b1", 50, 150_000),  # (120000 + 180000) / 2
        trade("a2", "b2", 100, 135_000),  # (120000 + 150000) / 2
    )


def test_uniform_price_rounds_half_even() -> None:
    # Marginal 100001 / 100002: 100001.5 -> 100002; value 3 Wh * 100002 / 1000 = 300.006 -> 300.
    result = run([order("s", "sell", 3, 100_001, 0), order("b", "buy", 3, 100_002, 1)])
    assert result.price == 100_002
    assert result.trades == (Trade("s", "b", "s", "b", 3, 100_002, 300, 0, 0),)
    result = run([order("s", "sell", 5, 100_002, 0), order("b", "buy", 5, 100_003, 1)])
    assert result.price == 100_002  # 100002.5 -> even
    assert result.trades[0].value == 500  # 500.01 -> 500


def test_money_rounds_half_even_per_trade() -> None:
    # 1 Wh at 1500 micro/kWh = 1.5 -> 2; fee 2500/kWh = 2.5 -> 2; levies 500/kWh = 0.5 -> 0.
    result = run(
        [order("s", "sell", 1, 1_500, 0), order("b", "buy", 1, 1_500, 1)],
        grid_fee_per_kwh=2_500,
        levies_per_kwh=500,
    )
    assert result.trades == (Trade("s", "b", "s", "b", 1, 1_500, 2, 2, 0),)


def test_ties_by_position_then_meter_then_order_id() -> None:
    orders = [
        order("x", "sell", 100, 100_000, 5, meter="bb"),
        order("y", "sell", 100, 100_000, 5, meter="aa"),
        order("z", "sell", 100, 100_000, 3, meter="cc"),
        order("w2", "sell", 100, 100_000, 5, meter="aa"),  # same meter as y: order id breaks it
        order("b", "buy", 250, 200_000, 9),
    ]
    result = run(orders)
    # z is earliest; then position 5: meter "aa" (order ids w2 < y), then "bb".
    assert [(t.sell_order, t.energy_wh) for t in result.trades] == [("z", 100), ("w2", 100), ("y", 50)]
    assert result.price == 150_000


def test_buy_ties_prefer_earlier_position() -> None:
    orders = [
        order("b-late", "buy", 100, 150_000, 7),
        order("b-early", "buy", 100, 150_000, 2),
        order("s", "sell", 60, 100_000, 1),
    ]
    result = run(orders)
    assert [(t.buy_order, t.energy_wh) for t in result.trades] == [("b-early", 60)]


def test_better_price_beats_earlier_position() -> None:
    orders = [
        order("s-early", "sell", 100, 110_000, 0),
        order("s-cheap", "sell", 100, 100_000, 9),
        order("b", "buy", 100, 120_000, 5),
    ]
    assert run(orders).trades == (trade("s-cheap", "b", 100, 110_000),)


def test_no_crossing_gives_no_trades() -> None:
    orders = [order("s", "sell", 100, 150_000, 0), order("b", "buy", 100, 149_999, 1)]
    assert run(orders) == ClearingResult("uniform", None, 0, ())
    assert run(orders, "pay-as-bid") == ClearingResult("pay-as-bid", None, 0, ())


def test_equal_limits_cross() -> None:
    orders = [order("s", "sell", 100, 150_000, 0), order("b", "buy", 40, 150_000, 1)]
    assert run(orders) == ClearingResult("uniform", 150_000, 40, (trade("s", "b", 40, 150_000),))


@pytest.mark.parametrize("side", ["sell", "buy"])
def test_one_side_empty(side: str) -> None:
    orders = [order("o1", side, 100, 100_000, 0), order("o2", side, 50, 200_000, 1)]
    for mechanism, kwargs in (
        ("uniform", {}),
        ("pay-as-bid", {}),
        ("community", {"community_price": 150_000}),
    ):
        result = run(orders, mechanism, **kwargs)
        assert result.trades == ()
        assert result.volume_wh == 0


def test_empty_book() -> None:
    assert run([]) == ClearingResult("uniform", None, 0, ())
    assert run([], "community", community_price=5) == ClearingResult("community", 5, 0, ())


def test_zero_energy_orders_are_ignored() -> None:
    orders = [
        order("cancelled", "sell", 0, 1, 0),
        order("s", "sell", 100, 120_000, 1),
        order("b", "buy", 100, 130_000, 2),
        order("b0", "buy", 0, 999_999, 3),
    ]
    assert run(orders).trades == (trade("s", "b", 100, 125_000),)


def test_marginal_tie_run_straddling_the_cut() -> None:
    # Three asks tie in price and position. In input order the big one comes first, but by
    # (meter, id) the two small ones do, so the cut at 25 Wh takes both small ones and 5 Wh of
    # the big one (an engine cutting before breaking ties would keep only one order).
    orders = [
        order("c", "sell", 100, 100_000, 1, meter="m3"),
        order("a", "sell", 10, 100_000, 1, meter="m1"),
        order("b", "sell", 10, 100_000, 1, meter="m2"),
        order("d", "buy", 25, 100_000, 0),
    ]
    assert run(orders).trades == (
        Trade("m1", "d", "a", "d", 10, 100_000, 1_000, 0, 0),
        Trade("m2", "d", "b", "d", 10, 100_000, 1_000, 0, 0),
        Trade("m3", "d", "c", "d", 5, 100_000, 500, 0, 0),
    )


def test_community_oversupply_sellers_share_pro_rata_with_largest_remainder() -> None:
    # Supply 300 (three offers of 100, all <= P), demand 100: each seller 33.33 Wh; equal
    # remainders, so the unit goes to the first in tie-break order (s2: cheapest, earliest).
    orders = [
        order("s1", "sell", 100, 130_000, 0),
        order("s2", "sell", 100, 120_000, 1),
        order("s3", "sell", 100, 120_000, 2),
        order("s-dear", "sell", 100, 150_001, 3),  # above P: takes no part
        order("d1", "buy", 60, 200_000, 4),
        order("d2", "buy", 40, 160_000, 5),
        order("d-low", "buy", 500, 149_999, 6),  # below P: takes no part
    ]
    result = run(orders, "community", community_price=150_000, grid_fee_per_kwh=10_000)
    assert result.price == 150_000
    assert result.volume_wh == 100
    # Allocations s2 34, s3 33, s1 33 paired in order with d1 60, d2 40.
    assert result.trades == (
        trade("s2", "d1", 34, 150_000, fee=10_000),
        trade("s3", "d1", 26, 150_000, fee=10_000),
        trade("s3", "d2", 7, 150_000, fee=10_000),
        trade("s1", "d2", 33, 150_000, fee=10_000),
    )


def test_community_undersupply_buyers_share_pro_rata() -> None:
    # Supply 10, demand 5 + 7: exact shares 4.17 / 5.83 -> floors 4 / 5, the unit goes to the
    # larger remainder (d2), not to the first buyer.
    orders = [
        order("s", "sell", 10, 90_000, 0),
        order("d1", "buy", 5, 200_000, 1),
        order("d2", "buy", 7, 150_000, 2),
    ]
    result = run(orders, "community", community_price=150_000)
    assert result.trades == (trade("s", "d1", 4, 150_000), trade("s", "d2", 6, 150_000))


def test_community_undersupply_equal_remainders_follow_tie_break() -> None:
    orders = [
        order("s", "sell", 100, 100_000, 0),
        order("d3", "buy", 100, 150_000, 1),
        order("d2", "buy", 100, 200_000, 3),
        order("d1", "buy", 100, 200_000, 2),
    ]
    result = run(orders, "community", community_price=150_000)
    # Tie-break order: d1 (200000, pos 2), d2 (200000, pos 3), d3 (150000): d1 gets the unit.
    assert [(t.buy_order, t.energy_wh) for t in result.trades] == [("d1", 34), ("d2", 33), ("d3", 33)]


def test_community_balanced_everyone_full() -> None:
    orders = [order("s", "sell", 50, 1, 0), order("d", "buy", 50, 10, 1)]
    assert run(orders, "community", community_price=5).trades == (trade("s", "d", 50, 5),)


def test_big_numbers_fall_back_to_exact_python_engine() -> None:
    big = 2**53 - 1
    orders = [
        order("s", "sell", big, big, 0),
        order("b", "buy", big, big, 1),
        order("s2", "sell", 1, 1, 2**70),  # position beyond int64
    ]
    result = run(orders, grid_fee_per_kwh=big)
    # s2 (limit 1) sells first, then s; the marginal pair is s/b, both at `big`.
    assert result == ClearingResult(
        "uniform", big, big, (trade("s2", "b", 1, big, fee=big), trade("s", "b", big - 1, big, fee=big))
    )
    assert result.trades[1].value == 81_129_638_414_606_654_674_191_240_921  # exact, no float


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energy_wh": -1}, "energy_wh must be >= 0"),
        ({"energy_wh": 1.5}, "energy_wh must be an integer"),
        ({"energy_wh": True}, "energy_wh must be an integer"),
        ({"limit_price": -5}, "limit_price must be >= 0"),
        ({"limit_price": 0.12}, "limit_price must be an integer"),
        ({"side": "hold"}, "side must be 'sell' or 'buy'"),
        ({"order_id": ""}, "order_id must be a non-empty string"),
        ({"meter": None}, "meter must be a non-empty string"),
        ({"position": "1"}, "position must be an integer"),
        ({"position": -5}, "position must be >= 0"),  # (docs/market.md; taken before: a QA pass)
    ],
)
def test_invalid_orders_are_refused(kwargs: dict[str, object], message: str) -> None:
    fields = {
        "order_id": "o",
        "meter": "m",
        "side": "sell",
        "energy_wh": 1,
        "limit_price": 1,
        "position": 0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        Order(**fields)  # type: ignore[arg-type]


def test_duplicate_order_ids_are_refused() -> None:
    orders = [order("same", "sell", 1, 1, 0), order("same", "buy", 1, 1, 1, meter="other")]
    for engine in ENGINES:
        with pytest.raises(ValueError, match="duplicate order id 'same'"):
            clear(orders, engine=engine)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("community",), {}, "needs a community_price"),
        (("uniform",), {"community_price": 5}, "only to the community mechanism"),
        (("auction",), {}, "unknown mechanism"),
        (("uniform",), {"grid_fee_per_kwh": -1}, "grid_fee_per_kwh must be >= 0"),
        (("uniform",), {"levies_per_kwh": 0.5}, "levies_per_kwh must be an integer"),
        (("community",), {"community_price": 1.0}, "community_price must be an integer"),
        (("uniform",), {"engine": "gpu"}, "unknown engine"),
    ],
)
def test_invalid_parameters_are_refused(args: tuple[str], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clear(BOOK, *args, **kwargs)  # type: ignore[arg-type]


def test_non_orders_are_refused() -> None:
    with pytest.raises(ValueError, match="must be Order instances, got dict"):
        clear([{"order_id": "x"}])  # type: ignore[list-item]


def test_accepts_any_iterable() -> None:
    assert clear(iter(BOOK)) == clear(BOOK)
