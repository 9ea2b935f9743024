"""Request parameters, parsed within explicit bounds.

Every query, form and path value a view uses goes through here, so a hostile value (a number
beyond SQLite's range, a Unicode digit, a date at the end of the calendar, CR/LF, a megabyte of
text) is a 400 with a one-line reason (``ParamError``, turned into the HTML error page or the
API's ``{"error": ...}`` by the app), never a 500.

- Integers: ASCII digits only (``int()`` also takes ``'١٢'``, ``' 7'`` and ``'1_0'``; we do
  not), an optional ``-`` where negatives are allowed, within bounds the caller names. No bound
  may exceed the ledger's integer range ±(2**53 − 1) (DESIGN: integers stay within I-JSON's
  range), which is well inside SQLite's int64.
- Dates: ``YYYY-MM-DD`` (ASCII) between 2000-01-01 and 2100-12-31, so a day, month or year
  around it, and the day after it, always exist.
- Local date-times: ``YYYY-MM-DDTHH:MM`` (an HTML ``datetime-local`` value; also with a space
  and with ``:SS``) in the community's zone, within the same dates; a time the zone skips (the
  spring change) is a 400, a repeated one (the autumn change) is its first occurrence.
- Choices: one of a fixed set. Text: at most a given length, no control characters.
- Login redirects (``safe_next``): a path on this site, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import request

MAX_INT = 2**53 - 1  # the ledger's integers (I-JSON); heights, intervals, money all fit
SQLITE_MAX = 2**63 - 1
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2100, 12, 31)
MAX_NEXT_LENGTH = 2048

_INT_RE = re.compile(r"(-?)([0-9]+)", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_DATETIME_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_KEY_ID_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
_GOV_CURSOR_RE = re.compile(r"(open|closed)-([0-9]{1,16})-([0-9]{1,16})", re.ASCII)


class ParamError(ValueError):
    """A request value that cannot be used; the message (one line) says which and why."""


def parse_int(name: str, text: str, *, lo: int, hi: int) -> int:
    """``text`` as an integer within ``lo..hi`` (ASCII digits, optional '-')."""
    if not -SQLITE_MAX - 1 <= lo <= hi <= SQLITE_MAX:
        raise ValueError(f"bounds {lo}..{hi} of {name} are beyond SQLite's integer range")
    match = _INT_RE.fullmatch(text)
    if match is None or (match.group(1) and lo >= 0):
        raise ParamError(f"{name} must be a whole number within {lo}..{hi}")
    digits = match.group(2).lstrip("0") or "0"
    # longer than any int64: out of bounds without converting a huge text
    if len(digits) > 19 or not lo <= int(match.group(0)) <= hi:
        raise ParamError(f"{name} must be within {lo}..{hi}")
    return int(match.group(0))


def parse_date(name: str, text: str) -> date:
    """A ``YYYY-MM-DD`` date between MIN_DATE and MAX_DATE."""
    if _DATE_RE.fullmatch(text) is None:
        raise ParamError(f"{name} must be a date like YYYY-MM-DD (e.g. 2025-06-02)")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ParamError(f"{name} must be a date like YYYY-MM-DD (e.g. 2025-06-02)") from None
    if not MIN_DATE <= day <= MAX_DATE:
        raise ParamError(f"{name} must be a date between {MIN_DATE} and {MAX_DATE}")
    return day


def parse_local_datetime(name: str, text: str, tz: ZoneInfo) -> int:
    """A local date and time ``YYYY-MM-DDTHH:MM[:SS]`` in the community's zone ``tz``, as Unix
    seconds. A time that does not exist there (skipped by a daylight-saving change) is an error;
    a time that occurs twice is its first occurrence."""
    example = f"{name} must be a local date and time like 2025-06-02T14:15"
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise ParamError(example)
    day = parse_date(name, match.group(1))
    hour, minute, second = int(match.group(2)), int(match.group(3)), int(match.group(4) or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ParamError(example)
    local = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz, fold=0)
    ts = int(local.timestamp())
    # round trip: a skipped local time comes back as another wall-clock time
    back = datetime.fromtimestamp(ts, tz)
    if back.replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ParamError(
            f"{name}: {text} does not exist in the community's time zone ({tz.key}): the clocks skip it"
        )
    return ts


def parse_choice(name: str, text: str, choices: Collection[str]) -> str:
    if text not in choices:
        raise ParamError(f"{name} must be one of {', '.join(choices)}")
    return text


def parse_text(name: str, text: str, *, max_len: int) -> str:
    """Text of at most ``max_len`` characters without control characters."""
    if len(text) > max_len:
        raise ParamError(f"{name} is too long (at most {max_len} characters)")
    if _CONTROL_RE.search(text):
        raise ParamError(f"{name} must not contain control characters")
    return text


def parse_key_id(name: str, text: str) -> str:
    """A meter's (or member's) key id: 32 lowercase hex digits."""
    if _KEY_ID_RE.fullmatch(text) is None:
        raise ParamError(f"{name} must be a key id (32 hex digits)")
    return text


def parse_gov_cursor(name: str, text: str) -> tuple[bool, int, int]:
    """A governance page's cursor, ``open-<height>-<index>`` or ``closed-<height>-<index>`` (the
    last proposal of the page before, ``next_before``): (open?, height, index), each number
    within 0..2**53 − 1."""
    match = _GOV_CURSOR_RE.fullmatch(text) if len(text) <= 40 else None
    if match is None or int(match.group(2)) > MAX_INT or int(match.group(3)) > MAX_INT:
        raise ParamError(f"{name} must be a cursor from a previous page (like open-351-12 or closed-351-12)")
    return match.group(1) == "open", int(match.group(2)), int(match.group(3))


# -- the current request's query string (absent and empty mean "not given") ---------------------


def _arg(name: str) -> str | None:
    text = request.args.get(name)
    return text if text else None


def arg_int(name: str, *, lo: int, hi: int, default: int | None = None) -> int | None:
    text = _arg(name)
    return default if text is None else parse_int(name, text, lo=lo, hi=hi)


def arg_date(name: str) -> date | None:
    text = _arg(name)
    return None if text is None else parse_date(name, text)


def arg_local_datetime(name: str, tz: ZoneInfo) -> int | None:
    text = _arg(name)
    return None if text is None else parse_local_datetime(name, text, tz)


def arg_choice(name: str, choices: Collection[str], default: str | None) -> str | None:
    text = _arg(name)
    return default if text is None else parse_choice(name, text, choices)


def arg_key_id(name: str) -> str | None:
    text = _arg(name)
    return None if text is None else parse_key_id(name, text)


def arg_gov_cursor(name: str) -> tuple[bool, int, int] | None:
    text = _arg(name)
    return None if text is None else parse_gov_cursor(name, text)


def arg_text(name: str, *, max_len: int) -> str | None:
    text = _arg(name)
    return None if text is None else parse_text(name, text, max_len=max_len)


def safe_next(target: str | None, default: str) -> str:
    """Where to go after logging in: ``target`` if it is a path on this site (starts with one
    '/', no scheme or host, no backslash, no control characters, not too long), else
    ``default``."""
    if (
        not target
        or len(target) > MAX_NEXT_LENGTH
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or _CONTROL_RE.search(target)
        or not target.isascii()
    ):
        return default
    return target
