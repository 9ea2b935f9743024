"""The one rounding rule, values and largest-remainder apportionment, checked exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.money import apportion, div_round_half_even, midpoint_price, require_int, value_micro


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 2),  # 2.5 -> 2 (even)
        (7, 2, 4),  # 3.5 -> 4 (even)
        (3, 2, 2),  # 1.5 -> 2
        (1, 2, 0),  # 0.5 -> 0
        (-5, 2, -2),  # -2.5 -> -2
        (-7, 2, -4),  # -3.5 -> -4
        (1499, 1000, 1),
        (1501, 1000, 2),
        (2500, 1000, 2),
        (3500, 1000, 4),
        (0, 7, 0),
    ],
)
def test_div_round_half_even_examples(numerator: int, denominator: int, expected: int) -> None:
    assert div_round_half_even(numerator, denominator) == expected


def test_div_round_half_even_rejects_non_positive_denominator() -> None:
    with pytest.raises(ValueError, match="positive"):
        div_round_half_even(1, 0)


@given(st.integers(-(10**30), 10**30), st.integers(1, 10**12))
def test_div_round_half_even_matches_exact_fraction(numerator: int, denominator: int) -> None:
    exact = Fraction(numerator, denominator)
    result = div_round_half_even(numerator, denominator)
    distance = abs(exact - result)
    assert distance <= Fraction(1, 2)
    if distance == Fraction(1, 2):
        assert result % 2 == 0


def test_value_micro_examples() -> None:
    assert value_micro(1000, 120_000) == 120_000  # 1 kWh at 0.12 EUR/kWh = 0.12 EUR
    assert value_micro(1, 1_500) == 2  # 1.5 micro-units -> 2
    assert value_micro(1, 2_500) == 2  # 2.5 -> 2
    assert value_micro(3, 500) == 2  # 1.5 -> 2
    assert value_micro(1, 500) == 0  # 0.5 -> 0
    assert value_micro(0, 300_000) == 0


def test_midpoint_price_is_half_even_and_between() -> None:
    assert midpoint_price(120_000, 150_000) == 135_000
    assert midpoint_price(100_001, 100_002) == 100_002  # 100001.5 -> even
    assert midpoint_price(100_002, 100_003) == 100_002  # 100002.5 -> even
    assert midpoint_price(7, 7) == 7


def test_apportion_largest_remainder_examples() -> None:
    assert apportion(10, [7, 5]) == [6, 4]  # 5.83 / 4.17: the larger remainder gets the unit
    assert apportion(10, [5, 7]) == [4, 6]
    assert apportion(100, [100, 100, 100]) == [34, 33, 33]  # equal remainders: input order
    assert apportion(2, [1, 1, 1]) == [1, 1, 0]
    assert apportion(0, [3, 4]) == [0, 0]
    assert apportion(5, [0, 5]) == [0, 5]
    assert apportion(0, []) == []


def test_apportion_rejects_impossible_input() -> None:
    with pytest.raises(ValueError):
        apportion(1, [0, 0])
    with pytest.raises(ValueError):
        apportion(-1, [1])
    with pytest.raises(ValueError):
        apportion(1, [-1, 2])


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30), st.data())
def test_apportion_sums_and_caps(weights: list[int], data: st.DataObject) -> None:
    if sum(weights) == 0:
        return
    total = data.draw(st.integers(0, sum(weights)))
    parts = apportion(total, weights)
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert part in (exact.numerator // exact.denominator, -(-exact.numerator // exact.denominator))
        assert 0 <= part <= weight


def test_require_int_rejects_bool_float_and_small() -> None:
    assert require_int("x", 5, 0) == 5
    for bad in (True, 1.0, "1", None):
        with pytest.raises(ValueError, match="must be an integer"):
            require_int("x", bad)
    with pytest.raises(ValueError, match=">= 0"):
        require_int("x", -1, 0)
