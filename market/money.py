"""Exact integer money arithmetic: the one half-even rounding rule and integer apportionment.

Every amount of money in peerwatt is an ``int`` of micro-units; every price is an ``int`` of
micro-units per kWh; every energy is an ``int`` of Wh. Nothing here touches a float, so every
peer that re-executes the market from the ledger gets the same result to the last micro-unit.

- :func:`div_round_half_even` is the single rounding rule (banker's rounding of an exact
  quotient); everything else that rounds goes through it.
- :func:`value_micro` is the value of an energy at a price: ``energy_wh * price_per_kwh / 1000``.
- :func:`apportion` splits an integer total over integer weights by the largest-remainder
  method (Hamilton), remainder ties broken by position in the input.
- :func:`require_int` is the input check every quantity goes through: an ``int`` (never a
  ``bool`` or a ``float``), optionally with a lower bound.
"""

from __future__ import annotations

from collections.abc import Sequence

WH_PER_KWH = 1000


def require_int(name: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) and ``>= minimum``; else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def div_round_half_even(numerator: int, denominator: int) -> int:
    """Return ``numerator / denominator`` rounded to the nearest integer, ties to even.

    Exact for any Python ints (no float involved). ``denominator`` must be positive.
    """
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, got {denominator}")
    quotient, remainder = divmod(numerator, denominator)  # floor division: 0 <= remainder < d
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


def value_micro(energy_wh: int, price_per_kwh: int) -> int:
    """Money (micro-units) for ``energy_wh`` at ``price_per_kwh``: half-even of ``e * p / 1000``."""
    return div_round_half_even(energy_wh * price_per_kwh, WH_PER_KWH)


def midpoint_price(price_a: int, price_b: int) -> int:
    """The half-even midpoint of two prices (micro-units per kWh); lies between the two."""
    return div_round_half_even(price_a + price_b, 2)


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder).

    Each part is ``floor(total * w_i / W)`` (``W`` = sum of weights), and the units still missing
    go, one each, to the parts with the largest remainders ``total * w_i mod W``; equal
    remainders are served in input order, so callers pass weights in their tie-break order.
    The parts sum to exactly ``total`` and no part exceeds ``w_i`` when ``total <= W``.
    """
    if total < 0:
        raise ValueError(f"total to apportion must be >= 0, got {total}")
    if any(w < 0 for w in weights):
        raise ValueError("apportionment weights must be >= 0")
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total:
            raise ValueError("cannot apportion a positive total over zero weights")
        return [0] * len(weights)
    parts: list[int] = []
    remainders: list[int] = []
    for w in weights:
        part, rem = divmod(total * w, weight_sum)
        parts.append(part)
        remainders.append(rem)
    missing = total - sum(parts)
    if missing:
        # Largest remainder first; equal remainders in input order (sorted() is stable).
        by_remainder = sorted(range(len(weights)), key=lambda i: -remainders[i])
        for i in by_remainder[:missing]:
            parts[i] += 1
    return parts
