"""The community's calendar: days, months and years in its time zone, as Unix-second ranges.

The ledger counts Unix seconds (UTC); people think in local days. Every range here is
half-open, [start, end), and aligned to local midnight, so a day with a daylight-saving change
has 92 or 100 quarter-hours (of 15-minute intervals), as it should.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chain.store import StoreError

VIEWS = ("day", "month", "year")


class UnknownTimezone(StoreError):
    """The genesis names a time zone this machine does not know."""


def zone(name: str) -> ZoneInfo:
    """The community's zone; UnknownTimezone (one line: the zone and the fix) when this machine
    does not know it. Never a silent fall-back to UTC: every day, month and chart would be
    shifted without anyone noticing."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise UnknownTimezone(
            f"the community's time zone {shown!r} (genesis community.timezone) is not in this machine's "
            "time zone database: install the tzdata package (pip install tzdata) or fix the genesis"
        ) from None


def local_midnight(day: date, tz: ZoneInfo) -> int:
    """Unix seconds of local midnight at the start of ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def local_date(ts: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def day_range(day: date, tz: ZoneInfo) -> tuple[int, int]:
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


@dataclass(frozen=True)
class Period:
    """A calendar period of the community: ``view`` (day/month/year) containing ``anchor``."""

    view: str
    anchor: date
    start: int
    end: int
    label: str
    prev_anchor: date
    next_anchor: date


def period(view: str, anchor: date, tz: ZoneInfo) -> Period:
    """The day, month or year that contains ``anchor``, in the community's zone."""
    if view == "day":
        start, end = day_range(anchor, tz)
        return Period(
            view,
            anchor,
            start,
            end,
            anchor.isoformat(),
            anchor - timedelta(days=1),
            anchor + timedelta(days=1),
        )
    if view == "month":
        first = month_start(anchor)
        following = next_month(first)
        previous = month_start(first - timedelta(days=1))
        return Period(
            view,
            first,
            local_midnight(first, tz),
            local_midnight(following, tz),
            first.strftime("%B %Y"),
            previous,
            following,
        )
    if view == "year":
        first = date(anchor.year, 1, 1)
        following = date(anchor.year + 1, 1, 1)
        return Period(
            view,
            first,
            local_midnight(first, tz),
            local_midnight(following, tz),
            str(anchor.year),
            date(anchor.year - 1, 1, 1),
            following,
        )
    raise ValueError(f"view must be one of {', '.join(VIEWS)}")


def buckets(p: Period, interval_s: int, tz: ZoneInfo) -> list[tuple[int, int, str]]:
    """The rows of a period's history: intervals of a day, days of a month, months of a year.

    Each bucket is (start, end, label) in Unix seconds and local time. On the day the clocks go
    back, a local time that comes twice carries its UTC offset, "02:00 (+02:00)" then "02:00
    (+01:00)" (found in a QA pass: the chart and its table named 02:00 ... 02:45 twice); every
    other label is the time alone.
    """
    out: list[tuple[int, int, str]] = []
    if p.view == "day":
        moments = [datetime.fromtimestamp(start, tz) for start in range(p.start, p.end, interval_s)]
        times = [moment.strftime("%H:%M") for moment in moments]
        seen = Counter(times)
        for moment, time in zip(moments, times, strict=True):
            start = int(moment.timestamp())
            label = time if seen[time] == 1 else f"{time} ({utc_offset(moment)})"
            out.append((start, start + interval_s, label))
    elif p.view == "month":
        day = p.anchor
        while day < next_month(p.anchor):
            start, end = day_range(day, tz)
            out.append((start, end, day.strftime("%d")))
            day += timedelta(days=1)
    else:
        month = p.anchor
        for _ in range(12):
            following = next_month(month)
            out.append((local_midnight(month, tz), local_midnight(following, tz), month.strftime("%b")))
            month = following
    return out


def utc_offset(moment: datetime) -> str:
    """``+02:00``: the UTC offset of an aware local time, in hours and minutes."""
    offset = moment.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


# The proleptic Gregorian calendar repeats every 400 years (146,097 days), weekdays and all, and
# a zone's rule for the years after its last listed change is the same every year: a time beyond
# what datetime holds (the years 1..9999, in local time) is shown as the time a whole number of
# such eras earlier or later, with the year put back. So every integer the ledger may hold
# (0..2**53 - 1, up to the year 285,428,751) is shown, in any zone, and nothing raises.
_ERA_S = 146_097 * 86_400
_SAFE_LO = int(datetime(10, 1, 1, tzinfo=UTC).timestamp())
_SAFE_HI = int(datetime(9990, 1, 1, tzinfo=UTC).timestamp())
_DIRECTIVE_RE = re.compile(r"%(.)", re.DOTALL)


def _local(ts: int | float, tz: ZoneInfo) -> tuple[datetime, int]:
    """(the local time of ``ts``, or of a time whole 400-year eras from it; the years to add)."""
    eras = 0
    if ts > _SAFE_HI:
        eras = -int(-(ts - _SAFE_HI) // _ERA_S)
    elif ts < _SAFE_LO:
        eras = int(-(_SAFE_LO - ts) // _ERA_S)
    return datetime.fromtimestamp(ts - eras * _ERA_S, tz), 400 * eras


def _strftime(moment: datetime, years: int, pattern: str) -> str:
    """``moment.strftime(pattern)`` with ``years`` added to every year it shows (%Y, %F, %G, %C;
    %y is the same 400 years on)."""
    if years:
        year, iso_year = moment.year + years, moment.isocalendar().year + years
        by_directive = {"Y": str(year), "F": f"{year}-%m-%d", "G": str(iso_year), "C": str(year // 100)}
        pattern = _DIRECTIVE_RE.sub(lambda m: by_directive.get(m.group(1), m.group(0)), pattern)
    return moment.strftime(pattern)


def fmt_time(ts: int | float | None, tz: ZoneInfo, pattern: str = "%Y-%m-%d %H:%M") -> str:
    """A Unix time in the community's zone ('–' for None); any integer, also after the year 9999
    local time (``10000-01-01 00:59``)."""
    if ts is None or (isinstance(ts, float) and not math.isfinite(ts)):
        return "\u2013"
    if isinstance(ts, float) and abs(ts) > 2**53:
        ts = int(ts)  # exact: no rounding of a float this large by the era arithmetic
    moment, years = _local(ts, tz)
    return _strftime(moment, years, pattern)


def fmt_interval(start: int, interval_s: int, tz: ZoneInfo) -> str:
    """``2025-06-02 14:15–14:30`` for a delivery interval."""
    return f"{fmt_time(start, tz, '%Y-%m-%d %H:%M')}\u2013{fmt_time(start + interval_s, tz, '%H:%M')}"


def fmt_age(seconds: int) -> str:
    """``42 s``, ``5 min``, ``3 h 10 min``, ``2 d`` for a block's age."""
    seconds = max(0, seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d"
