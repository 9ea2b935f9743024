"""Formatting the ledger's integers for people: energy, prices, money and shares.

Everything on the ledger is an int (Wh, micro-units per kWh, micro-units). These functions only
format: they round once, half-even, with integer arithmetic (market.money), and never compute
money with floats.
"""

from __future__ import annotations

from market.money import div_round_half_even

MINUS = "\u2212"  # a real minus sign, not a hyphen


def fixed(value: int, scale: int, decimals: int) -> str:
    """``value / scale`` with ``decimals`` digits after the point, rounded half-even.

    ``scale`` must be a power of ten at least ``10**decimals`` (e.g. micro-units to 2 decimals:
    ``fixed(1_234_567, 1_000_000, 2) == "1.23"``).
    """
    step = scale // 10**decimals
    if step < 1 or step * 10**decimals != scale:
        raise ValueError("scale must be a power of ten of at least 10**decimals")
    rounded = div_round_half_even(abs(value), step)
    whole, frac = divmod(rounded, 10**decimals)
    text = f"{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")
    return (MINUS + text) if value < 0 and rounded else text


def energy(energy_wh: int) -> str:
    """``850 Wh``, ``12.35 kWh``, ``1,234.5 kWh``."""
    if abs(energy_wh) < 1000:
        return f"{MINUS if energy_wh < 0 else ''}{abs(energy_wh)} Wh"
    decimals = 2 if abs(energy_wh) < 100_000 else 1
    return f"{fixed(energy_wh, 1000, decimals)} kWh"


def price(price_per_kwh: int | None, subunit: str = "ct") -> str:
    """A price in micro-units per kWh as sub-units (cents) per kWh: 125000 -> ``12.5 ct/kWh``.

    One decimal when exact, else two (half-even): 123456 -> ``12.35 ct/kWh``.
    """
    if price_per_kwh is None:
        return "\u2013"
    decimals = 1 if price_per_kwh % 1000 == 0 else 2
    return f"{fixed(price_per_kwh, 10_000, decimals)} {subunit}/kWh"


def price_short(price_per_kwh: int, subunit: str = "ct") -> str:
    """``12.5 ct`` (for sentences such as 'your ask of 14.0 ct')."""
    decimals = 1 if price_per_kwh % 1000 == 0 else 2
    return f"{fixed(price_per_kwh, 10_000, decimals)} {subunit}"


def money(amount_micro: int, symbol: str = "\u20ac") -> str:
    """Micro-units as currency with two decimals: 1_234_567 -> ``€1.23``; negatives with a minus."""
    text = fixed(abs(amount_micro), 1_000_000, 2)
    sign = MINUS if amount_micro < 0 and text.strip("0.,") else ""
    return f"{sign}{symbol}{text}"


def percent(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with one decimal (``–`` when whole is 0)."""
    if whole <= 0:
        return "\u2013"
    return f"{fixed(div_round_half_even(part * 1000, whole), 10, 1)} %"


def ratio_permille(part: int, whole: int) -> int | None:
    """``part / whole`` in per mille (int, half-even), None when whole is 0 (for the JSON API)."""
    if whole <= 0:
        return None
    return div_round_half_even(part * 1000, whole)


def _duration_parts(seconds: int) -> tuple[int, str]:
    """``seconds`` as (count, unit) in the largest unit that divides it: (15, "minute")."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return seconds // size, unit
    return seconds, "second"


def duration_adjective(seconds: int) -> str:
    """A length of time before a noun: ``15-minute``, ``1-hour``, ``90-second``."""
    number, unit = _duration_parts(seconds)
    return f"{number}-{unit}"


# the community's delivery interval (interval_s) by its everyday name, where it has one
INTERVAL_NAMES = {900: "quarter-hour", 1800: "half-hour", 3600: "hour"}


def interval_name(interval_s: int) -> str:
    """One delivery interval in words: ``quarter-hour`` (900 s), ``1-minute interval`` (60 s)."""
    return INTERVAL_NAMES.get(interval_s) or f"{duration_adjective(interval_s)} interval"


def intervals_counted(interval_s: int) -> str:
    """Delivery intervals after a count: ``quarter-hour(s)`` (900 s), ``interval(s) of 1
    minute`` (60 s), ``interval(s) of 90 seconds``: never "quarter-hour" where an interval is
    not one."""
    if interval_s in INTERVAL_NAMES:
        return f"{INTERVAL_NAMES[interval_s]}(s)"
    number, unit = _duration_parts(interval_s)
    return f"interval(s) of {number} {unit}{'' if number == 1 else 's'}"


def short_id(key_id: str, length: int = 8) -> str:
    """The first characters of a key id or hash, for tables."""
    return key_id[:length]


CENT = 10_000  # micro-units per shown cent (money() shows two decimals)


def largest_remainder(parts: list[int], total: int, step: int = CENT) -> list[int]:
    """Round each of ``parts`` (signed micro-units) to a multiple of ``step`` so that they sum to
    ``total`` (a multiple of ``step`` between the sum of the parts rounded down and that sum plus
    one step per part): every part is rounded down, and the steps still missing go to the parts
    with the largest remainders (equal remainders: in order). A part that is already a multiple
    of ``step`` is never changed. Integers only; the ledger's values are not touched."""
    if total % step:
        raise ValueError("total must be a multiple of step")
    floors = [p // step for p in parts]
    missing = total // step - sum(floors)
    if not 0 <= missing <= sum(1 for p in parts if p % step):
        raise ValueError("total is not a rounding of the sum of the parts")
    order = sorted(range(len(parts)), key=lambda i: (-(parts[i] % step), i))
    bump = set(order[:missing])
    return [(f + (i in bump)) * step for i, f in enumerate(floors)]


def round_to_step(value: int, step: int = CENT) -> int:
    """``value`` rounded half-even to a multiple of ``step`` (as money() rounds it)."""
    return (
        div_round_half_even(value, step) * step if value >= 0 else -div_round_half_even(-value, step) * step
    )


def shown_statement(s: dict[str, int]) -> dict[str, int]:
    """The money lines of a household statement rounded to whole cents so that what is shown adds
    up: savings = baseline − actual cost; actual cost = P2P costs + grid fees + levies + grid supply
    − P2P earnings − feed-in; baseline = imports at retail − exports at feed-in.

    The savings are rounded half-even; baseline and actual cost are then rounded to add up to it
    by the largest-remainder method, and each one's lines to add up to it likewise."""
    savings = round_to_step(s["savings"])
    baseline, minus_actual = largest_remainder([s["baseline_cost"], -s["actual_cost"]], savings)
    cost_lines = ("p2p_cost", "grid_fees", "levies", "residual_import_cost")
    earning_lines = ("p2p_earnings", "residual_export_earnings")
    actual = largest_remainder([s[k] for k in cost_lines] + [-s[k] for k in earning_lines], -minus_actual)
    base = largest_remainder([s["baseline_import_cost"], -s["baseline_export_earnings"]], baseline)
    out = {"savings": savings, "baseline_cost": baseline, "actual_cost": -minus_actual}
    out.update(zip(cost_lines, actual[:4], strict=True))
    out.update(zip(earning_lines, (-v for v in actual[4:]), strict=True))
    out["baseline_import_cost"], out["baseline_export_earnings"] = base[0], -base[1]
    return out
