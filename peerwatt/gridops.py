"""The grid operator's validated data: reading its CSV file and turning it into `gridops`
transactions (docs/billing.md, "The grid operator's data"; docs/market.md for the transaction).

Pure functions of their inputs (text, the ledger's recorded values, a key and a time): the command
(`peerwatt gridops import`, peerwatt/commands/gridops.py) does the I/O.

The CSV layout (comma or semicolon separated, one header line, columns in any order):

    metering_point,interval_start,import_wh,export_wh,quality
    AT0030000000000000000000000012345,2026-06-01T00:00:00+02:00,312,0,measured

- ``metering_point``: the grid operator's id of the metering point (mapped to an enrolled meter
  by ``[gridops.metering_points]`` in billing.toml; a meter may have several, whose rows are
  added), or the meter's key id itself (the meter's whole value: never added to a row of one of
  its metering points);
- ``interval_start``: ISO 8601 with a UTC offset (``Z`` or ``+02:00``), at an interval boundary;
- ``import_wh``/``export_wh``: whole Wh; or ``import_kwh``/``export_kwh`` with at most three
  decimals and a decimal point (``0.312``), converted exactly;
- ``quality``: ``measured``, ``estimated`` or ``replaced``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chain.envelope import Envelope, sign_envelope
from chain.keys import PrivateKey
from chain.messages import GRIDOPS_QUALITIES, MAX_ENERGY_WH, MAX_GRIDOPS_ROWS
from market.app import estimate_ignored

ID_COLUMNS = ("metering_point", "interval_start", "quality")
WH_COLUMNS = ("import_wh", "export_wh")
KWH_COLUMNS = ("import_kwh", "export_kwh")
TTL_S = 24 * 3600  # an import is published at once; a day covers a slow node
# a row whose interval leaves the ledger's gridops window within this long is left out as too
# old: the block that takes the import comes after the import is made
GRACE_S = 3600

_WHOLE = re.compile(r"[0-9]{1,12}")
_KWH = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,3}))?")
_LABEL = re.compile(r"[\x21-\x7e]{1,64}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")


class GridopsError(ValueError):
    """A file or setting that cannot be imported; the message is one line naming the place."""


@dataclass(frozen=True)
class GridRow:
    """One row of the grid operator's data: energy of a metering point in one interval."""

    line: int
    metering_point: str
    interval: int
    import_wh: int
    export_wh: int
    quality: str
    lines: tuple[int, ...] = ()  # a row added up from several lines: all of them

    @property
    def file_lines(self) -> tuple[int, ...]:
        return self.lines or (self.line,)

    def value(self) -> list[Any]:
        """As the market state holds it: ``[import_wh, export_wh, quality]``."""
        return [self.import_wh, self.export_wh, self.quality]

    def body_row(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "quality": self.quality,
        }


def _energy(text: str, column: str, where: str) -> int:
    text = text.strip()
    if column.endswith("_wh"):
        if not _WHOLE.fullmatch(text):
            raise GridopsError(f"{where}: {column} {text!r} is not a whole number of Wh")
        value = int(text)
    else:
        match = _KWH.fullmatch(text)
        if match is None:
            raise GridopsError(
                f"{where}: {column} {text!r} is not a kWh value with at most 3 decimals (e.g. 0.312)"
            )
        value = int(match.group(1)) * 1000 + int((match.group(2) or "0").ljust(3, "0"))
    if value > MAX_ENERGY_WH:
        raise GridopsError(f"{where}: {column} {text!r} is more than {MAX_ENERGY_WH} Wh")
    return value


def _interval(text: str, interval_s: int, where: str) -> int:
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GridopsError(
            f"{where}: interval_start {text!r} is not an ISO 8601 time (2026-06-01T00:00:00+02:00)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise GridopsError(f"{where}: interval_start {text!r} has no UTC offset (add Z or +02:00)")
    seconds = int(moment.timestamp())
    if moment.microsecond or seconds % interval_s:
        raise GridopsError(f"{where}: interval_start {text!r} is not at a {interval_s} s interval boundary")
    return seconds


def parse_csv(text: str, name: str, interval_s: int) -> list[GridRow]:
    """The rows of a grid operator's CSV file (layout in the module docstring); GridopsError with
    ``NAME line N: ...`` for the first line that cannot be read."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise GridopsError(f"{name} line 1: expected the header line ({','.join(ID_COLUMNS + WH_COLUMNS)})")
    header_line = lines[0].lstrip("\ufeff")
    delimiter = ";" if ";" in header_line and "," not in header_line else ","
    reader = csv.reader(io.StringIO("\n".join([header_line, *lines[1:]])), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    energy = WH_COLUMNS if "import_wh" in header or "export_wh" in header else KWH_COLUMNS
    expected = (*ID_COLUMNS[:2], *energy, ID_COLUMNS[2])
    unknown = [h for h in header if h not in expected]
    missing = [h for h in expected if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise GridopsError(
            f"{name} line 1: the header must name the columns {','.join(expected)} "
            f"(unknown: {', '.join(unknown) or '-'}; missing: {', '.join(missing) or '-'})"
        )
    col = {h: i for i, h in enumerate(header)}
    rows: list[GridRow] = []
    first_line: dict[tuple[str, int], int] = {}
    for fields in reader:
        where = f"{name} line {reader.line_num}"
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise GridopsError(f"{where}: {len(fields)} fields, the header has {len(header)}")
        point = fields[col["metering_point"]].strip()
        if not _LABEL.fullmatch(point):
            raise GridopsError(f"{where}: metering_point {point!r} must be 1-64 printable ASCII characters")
        quality = fields[col["quality"]].strip().lower()
        if quality not in GRIDOPS_QUALITIES:
            raise GridopsError(f"{where}: quality {quality!r} is not one of {', '.join(GRIDOPS_QUALITIES)}")
        interval = _interval(fields[col["interval_start"]], interval_s, where)
        import_wh = _energy(fields[col[energy[0]]], energy[0], where)
        export_wh = _energy(fields[col[energy[1]]], energy[1], where)
        earlier = first_line.setdefault((point, interval), reader.line_num)
        if earlier != reader.line_num:
            shown = fields[col["interval_start"]].strip()
            raise GridopsError(f"{where}: {point} at {shown} is also on line {earlier}")
        rows.append(GridRow(reader.line_num, point, interval, import_wh, export_wh, quality))
    if not rows:
        raise GridopsError(f"{name}: no data rows after the header")
    return rows


def metering_points(billing: dict[str, Any], where: str) -> dict[str, str]:
    """``[gridops.metering_points]`` of billing.toml: metering point id -> meter key id."""
    table = billing.get("gridops", {})
    if not isinstance(table, dict) or not isinstance(table.get("metering_points", {}), dict):
        raise GridopsError(f'{where}: [gridops.metering_points] must be a table of "point" = "meter key id"')
    points = table.get("metering_points", {})
    for point, meter in points.items():
        if not isinstance(meter, str) or not _KEY_ID.fullmatch(meter):
            raise GridopsError(
                f"{where}: [gridops.metering_points] {point!r} must name a meter key id (32 hex)"
            )
    return dict(points)


# a meter's row from several metering points has the quality of its least certain part
QUALITY_RANK = {"measured": 0, "replaced": 1, "estimated": 2}


def iso_utc(t: int) -> str:
    """An interval start as the file may write it, in UTC: ``2026-06-05T00:00:00Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _key_id_and_point(name: str, meter: str, own: GridRow, point: GridRow) -> GridopsError:
    """A meter listed for one interval by its key id and by a metering point: one line naming both."""
    later, earlier = (own, point) if own.line > point.line else (point, own)
    what = (
        f"meter {meter} at {iso_utc(own.interval)} is also on line {earlier.line} by its metering point "
        f"{point.metering_point}"
        if later is own
        else f"{point.metering_point} at {iso_utc(own.interval)} is meter {meter}, which is also on line "
        f"{earlier.line} by its key id"
    )
    return GridopsError(
        f"{name} line {later.line}: {what}; a row by a meter's key id is the meter's whole value, "
        "never added to its metering points' rows: list the meter by one or the other"
    )


def assign_meters(
    rows: list[GridRow], points: dict[str, str], meters: set[str], name: str
) -> dict[str, list[GridRow]]:
    """The rows by enrolled meter key id, in interval order; GridopsError naming the first row
    whose metering point is neither mapped nor an enrolled meter's key id.

    A meter with several metering points (consumption and generation, as in Austria) gets one row
    per interval: their import and export added, the least certain quality (estimated, then
    replaced, then measured), ``metering_point`` the first point and how many more (``AT...+1``).
    Every one of its points mapped in ``points`` must have a row for each interval in the file;
    a missing one is an error (a sum without it would be wrong, not partial).

    A row whose metering point is the meter's key id is the meter itself, its whole value for the
    interval: it is never added to anything, and a row of one of its metering points for the same
    interval is an error naming both lines (the same point twice is refused by ``parse_csv``)."""
    per_meter: dict[str, dict[str, dict[int, GridRow]]] = {}
    for row in rows:
        meter = points.get(row.metering_point, row.metering_point)
        if meter not in meters:
            raise GridopsError(
                f"{name} line {row.line}: metering point {row.metering_point} is not mapped to an enrolled "
                "meter (add it to [gridops.metering_points] in billing.toml)"
            )
        per_meter.setdefault(meter, {}).setdefault(row.metering_point, {})[row.interval] = row
    by_meter: dict[str, list[GridRow]] = {}
    for meter, per_point in per_meter.items():
        own = per_point.pop(meter, {})  # by the meter's key id
        names = sorted({p for p, m in points.items() if m == meter and p != meter} | set(per_point))
        label = f"{names[0]}+{len(names) - 1}" if len(names) > 1 else ""
        merged = []
        for interval in sorted(set(own) | {i for rows_of in per_point.values() for i in rows_of}):
            parts = [per_point.get(p, {}).get(interval) for p in names]
            present = [part for part in parts if part is not None]
            if interval in own:
                if present:
                    raise _key_id_and_point(name, meter, own[interval], min(present, key=lambda r: r.line))
                merged.append(own[interval])
                continue
            if len(present) == 1 == len(parts):
                merged.append(present[0])
                continue
            if len(present) != len(parts):
                missing = names[parts.index(None)]
                raise GridopsError(
                    f"{name} line {present[0].line}: meter {meter} has the metering points "
                    f"{', '.join(names)}; {missing} has no row for this interval"
                )
            merged.append(
                GridRow(
                    line=min(part.line for part in present),
                    metering_point=label if len(label) <= 64 else names[0],
                    interval=interval,
                    import_wh=sum(part.import_wh for part in present),
                    export_wh=sum(part.export_wh for part in present),
                    quality=max((part.quality for part in present), key=QUALITY_RANK.__getitem__),
                    lines=tuple(sorted(part.line for part in present)),
                )
            )
        by_meter[meter] = merged
    return by_meter


# why a row the ledger does not hold is not sent (``select``), in the order the ledger checks
NOT_ENDED, TOO_OLD, ESTIMATE = "not_ended", "too_old", "estimate"


def select(
    by_meter: dict[str, list[GridRow]],
    recorded: dict[str, dict[str, list[Any]]],
    interval_s: int,
    window_s: int,
    *,
    now: int,
    ledger_time: int,
) -> tuple[dict[str, list[GridRow]], dict[str, list[GridRow]]]:
    """(the rows to send, by meter; the rows left out, by reason). Of the rows that differ from
    what the ledger records (``recorded``: the market state's ``gridops``), those it would refuse,
    and so refuse the whole transaction of their meter with, or take without recording are left out:

    - ``NOT_ENDED``: the interval has not ended at ``now`` (the wall clock: no block is ahead of
      the nodes' clocks) nor at ``ledger_time``;
    - ``TOO_OLD``: it ended more than ``window_s`` before ``ledger_time`` (the time of the node's
      last block: no later block is earlier), or will within ``GRACE_S`` of it (the block that
      takes the import comes later);
    - ``ESTIMATE``: an estimate for an interval whose held value is measured or replaced.

    Rows equal to what the ledger holds are neither sent nor left out: nothing is to be done."""
    send: dict[str, list[GridRow]] = {}
    left_out: dict[str, list[GridRow]] = {}
    for meter in sorted(by_meter):
        held = recorded.get(meter, {})
        for row in by_meter[meter]:
            before = held.get(str(row.interval))
            end = row.interval + interval_s
            if before == row.value():
                continue
            if end > max(now, ledger_time):
                reason = NOT_ENDED
            elif end + window_s < ledger_time + GRACE_S:
                reason = TOO_OLD
            elif estimate_ignored(before, row.quality):
                reason = ESTIMATE
            else:
                send.setdefault(meter, []).append(row)
                continue
            left_out.setdefault(reason, []).append(row)
    return send, left_out


def _line_ranges(lines: list[int], most: int = 12) -> str:
    """``2-5, 9, 12-13`` (at most ``most`` ranges, then how many lines more)."""
    ranges: list[list[int]] = []
    for n in sorted(set(lines)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:most])
    rest = sum(b - a + 1 for a, b in ranges[most:])
    return shown + (f" and {rest} line(s) more" if rest else "")


def _duration(seconds: int) -> str:
    """``40 days``, ``1 hour``, ``90 minutes``, ``100 s``."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60), ("s", 1)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" + ("s" if n != 1 and unit != "s" else "")
    raise AssertionError("unreachable")


def left_out_lines(left_out: dict[str, list[GridRow]], name: str, window_s: int) -> list[str]:
    """One line per reason ``select`` left rows out for, naming their lines of the file ``name``."""
    why = {
        NOT_ENDED: "their intervals have not ended yet",
        TOO_OLD: (
            f"their intervals leave the ledger's gridops_window_s ({_duration(window_s)}) before its "
            f"last block or within {_duration(GRACE_S)} after it: the ledger no longer takes them"
        ),
        ESTIMATE: (
            "they are estimates for intervals whose value on the ledger is measured or replaced, "
            "which an estimate never replaces"
        ),
    }
    out = []
    for reason in (NOT_ENDED, TOO_OLD, ESTIMATE):
        rows = left_out.get(reason, [])
        if not rows:
            continue
        first = min(r.interval for r in rows)
        last = max(r.interval for r in rows)
        span = iso_utc(first) if first == last else f"{iso_utc(first)} to {iso_utc(last)}"
        lines = [n for r in rows for n in r.file_lines]
        out.append(
            f"{name}: {len(rows)} row(s) left out, {why[reason]}: line(s) {_line_ranges(lines)} ({span})"
        )
    return out


def bodies(
    by_meter: dict[str, list[GridRow]], recorded: dict[str, dict[str, list[Any]]]
) -> list[dict[str, Any]]:
    """The `gridops` bodies that bring the ledger to the file's values: per meter, the rows that
    differ from what it records (``recorded``: the market state's ``gridops``) and that it would
    record (not an estimate over a measured or replaced value), in interval order, at most
    MAX_GRIDOPS_ROWS each. Nothing differs: no bodies (an import is idempotent). The rows the ledger
    would refuse for their time are left out by ``select`` first."""
    out: list[dict[str, Any]] = []
    for meter in sorted(by_meter):
        held = recorded.get(meter, {})
        rows = sorted(by_meter[meter], key=lambda r: r.interval)
        new = [
            r
            for r in rows
            if (before := held.get(str(r.interval))) != r.value() and not estimate_ignored(before, r.quality)
        ]
        for start in range(0, len(new), MAX_GRIDOPS_ROWS):
            chunk = new[start : start + MAX_GRIDOPS_ROWS]
            out.append(
                {
                    "meter": meter,
                    "metering_point": chunk[0].metering_point,
                    "rows": [r.body_row() for r in chunk],
                }
            )
    return out


def sign_bodies(
    key: PrivateKey, community: str, bodies_: list[dict[str, Any]], first_seq: int, now: int
) -> list[Envelope]:
    """One signed `gridops` envelope per body, with consecutive seqs from ``first_seq``."""
    return [
        sign_envelope(
            key, type="gridops", community=community, seq=first_seq + i, body=body, created=now, ttl_s=TTL_S
        )
        for i, body in enumerate(bodies_)
    ]
