"""The community's calendar: days, months and years in its time zone, as Unix-second ranges.

The ledger counts Unix seconds (UTC); people think in local days. Every range here is
half-open, [start, end), and aligned to local midnight, so a day with a daylight-saving change
has 92 or 100 quarter-hours, as it should.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
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

    Each bucket is (start, end, label) in Unix seconds and local time.
    """
    out: list[tuple[int, int, str]] = []
    if p.view == "day":
        for start in range(p.start, p.end, interval_s):
            out.append((start, start + interval_s, datetime.fromtimestamp(start, tz).strftime("%H:%M")))
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


def fmt_time(ts: int | None, tz: ZoneInfo, pattern: str = "%Y-%m-%d %H:%M") -> str:
    """A Unix time in the community's zone ('–' for None)."""
    if ts is None:
        return "\u2013"
    return datetime.fromtimestamp(ts, tz).strftime(pattern)


def fmt_interval(start: int, interval_s: int, tz: ZoneInfo) -> str:
    """``2025-06-02 14:15–14:30`` for a delivery interval."""
    begin = datetime.fromtimestamp(start, tz)
    end = datetime.fromtimestamp(start + interval_s, tz)
    return f"{begin:%Y-%m-%d %H:%M}\u2013{end:%H:%M}"


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
