"""Trade history queries: filters, sorting and keyset paging over the derived index, and the CSV
export of exactly the filtered rows (the same WHERE and ORDER BY, read by pandas in chunks).

Keyset paging: a page is the ``limit`` rows after (or before) the last row shown, found with an
index range scan on (sort key, trade id), so page 10,000 costs what page 1 costs. A household's
queries run on ``trade_sides`` (one row per trade and party, indexed by meter), where a trade
between two meters of the same account is two rows: there the key is (sort key, trade id, side),
so that each row is on exactly one page. An admin's unfiltered queries run on ``trades``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from dashboard.directory import Directory
from dashboard.params import MAX_INT, ParamError
from dashboard.text import isolate_inline
from dashboard.timeutil import local_midnight
from dashboard.units import energy
from market.spreadsheet import text_cell

SORTS = {"time": "interval", "energy": "energy_wh", "price": "price", "value": "value"}
SIDES = ("sell", "buy")
MAX_LIMIT = 500
CSV_CHUNK = 50_000

TRADE_COLUMNS = (
    "t.id, t.interval, t.trade_key, t.seller, t.buyer, t.energy_wh, t.price, t.value, t.grid_fee,"
    " t.levies, t.height, t.idx, t.status, t.settled_wh, t.s_value, t.s_grid_fee, t.s_levies, t.flag,"
    " t.flagged_meter, t.settle_height, t.adjusted, t.source"
)


MAX_CURSOR_LENGTH = 64
_PUBLIC_ID_RE = re.compile(r"([0-9]{1,16}):([0-9a-f]{24}:[0-9a-f]{24})", re.ASCII)


class FilterError(ParamError):
    """A filter value that cannot be used (shown to the user as is: a 400)."""


@dataclass(frozen=True)
class TradeFilter:
    """What the trade history shows. ``meters`` None = every meter (admin only)."""

    meters: tuple[str, ...] | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    side: str | None = None
    interval: int | None = None
    sort: str = "time"
    descending: bool = True
    limit: int = 50

    def check(self) -> TradeFilter:
        if self.sort not in SORTS:
            raise FilterError(f"sort must be one of {', '.join(SORTS)}")
        if self.side is not None and self.side not in SIDES:
            raise FilterError("side must be sell or buy")
        if self.side is not None and self.meters is None:
            raise FilterError("choose a household to filter by side (sold or bought)")
        if self.date_from and self.date_to and self.date_to < self.date_from:
            raise FilterError("the end date is before the start date")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise FilterError(f"limit must be within 1..{MAX_LIMIT}")
        if self.interval is not None and not 0 <= self.interval <= MAX_INT:
            raise FilterError(f"interval must be within 0..{MAX_INT}")
        return self


def public_id(interval: int, key: str) -> str:
    """A trade's id in URLs and CSVs: ``<interval start>:<sell order 24>:<buy order 24>``."""
    return f"{interval}:{key}"


def parse_public_id(text: str) -> tuple[int, str]:
    """(interval start, trade key) of a public trade id; FilterError for anything else."""
    match = _PUBLIC_ID_RE.fullmatch(text)
    if match is None or int(match.group(1)) > MAX_INT:
        raise FilterError("not a trade id (<interval start>:<24 hex>:<24 hex>)")
    return int(match.group(1)), match.group(2)


def encode_cursor(sort_value: int, trade_id: int, side: str | None = None) -> str:
    """The key of a page's first or last row: ``[sort value, trade id]``, with the row's side on
    a household's pages (where a trade between two of its meters is two rows)."""
    key: list[Any] = [sort_value, trade_id] if side is None else [sort_value, trade_id, side]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int, str | None]:
    """A cursor from ``encode_cursor``: its sort value and row id, both within the ledger's
    integer range, and its side (None in a cursor without one, such as those made before sides
    were in it: they page as they did); anything else, e.g. a number beyond SQLite's range, is a
    FilterError."""
    if len(text) > MAX_CURSOR_LENGTH or not text.isascii():
        raise FilterError("bad page cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value, trade_id, *rest = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise FilterError("bad page cursor") from None
    if type(value) is not int or type(trade_id) is not int:
        raise FilterError("bad page cursor")
    if not -MAX_INT <= value <= MAX_INT or not 0 <= trade_id <= MAX_INT:
        raise FilterError("bad page cursor")
    if rest and (len(rest) > 1 or rest[0] not in SIDES):
        raise FilterError("bad page cursor")
    return value, trade_id, (rest[0] if rest else None)


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None


def _where(f: TradeFilter, tz: ZoneInfo, prefix: str) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if f.meters is not None:
        clauses.append(f"s.meter IN ({','.join('?' * len(f.meters))})")
        args.extend(f.meters)
        if f.side:
            clauses.append("s.side = ?")
            args.append(f.side)
    if f.date_from:
        clauses.append(f"{prefix}.interval >= ?")
        args.append(local_midnight(f.date_from, tz))
    if f.date_to:
        clauses.append(f"{prefix}.interval < ?")
        args.append(local_midnight(f.date_to + timedelta(days=1), tz))
    if f.interval is not None:
        clauses.append(f"{prefix}.interval = ?")
        args.append(f.interval)
    return clauses, args


def _select(f: TradeFilter, tz: ZoneInfo) -> tuple[str, str, list[str], list[Any]]:
    """(FROM clause, key column prefix, WHERE clauses, args) for a filter."""
    if f.meters is not None:
        clauses, args = _where(f, tz, "s")
        return ("trade_sides s JOIN trades t ON t.id = s.trade", "s", clauses, args)
    clauses, args = _where(f, tz, "t")
    return ("trades t", "t", clauses, args)


def query_page(
    conn,
    f: TradeFilter,
    tz: ZoneInfo,
    directory: Directory,
    *,
    after: str | None = None,
    before: str | None = None,
) -> Page:
    """One page of trades, keyset-paged; ``after``/``before`` are cursors from a previous page."""
    f.check()
    source, p, clauses, args = _select(f, tz)
    key = f"{p}.{SORTS[f.sort]}"
    tid = f"{p}.trade" if p == "s" else "t.id"
    side_cols = ", s.side" if p == "s" else ", NULL"
    backwards = before is not None
    cursor = decode_cursor(before if backwards else after) if (before or after) else None
    # "forward" means the order the user asked for; a backwards page walks the other way.
    walk_desc = f.descending != backwards
    if cursor is not None:
        value, trade_id, side = cursor
        if p == "s" and side is not None:
            clauses.append(f"({key}, {tid}, s.side) {'<' if walk_desc else '>'} (?, ?, ?)")
            args.extend((value, trade_id, side))
        else:
            clauses.append(f"({key}, {tid}) {'<' if walk_desc else '>'} (?, ?)")
            args.extend((value, trade_id))
    direction = "DESC" if walk_desc else "ASC"
    sql = (
        f"SELECT {TRADE_COLUMNS}{side_cols}, {key} FROM {source}"
        f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''}"
        f" ORDER BY {_order(p, key, tid, direction)} LIMIT ?"
    )
    fetched = conn.execute(sql, (*args, f.limit + 1)).fetchall()
    more = len(fetched) > f.limit
    if backwards and not more:  # reached the start: show the first page, full
        return query_page(conn, f, tz, directory)
    fetched = fetched[: f.limit]
    if backwards:
        fetched.reverse()
    rows = [_row(r, directory) for r in fetched]
    revoked = revocations(conn, directory) if any(r["status"] == "unsettled" for r in rows) else {}
    for row in rows:
        row["delivery_note"] = delivery_note(conn, row, revoked)
    keys = [(r[-1], r[0], r[-2]) for r in fetched]  # (sort value, trade id, side or None)
    if not keys:
        return Page([], None, None)
    first, last = encode_cursor(*keys[0]), encode_cursor(*keys[-1])
    if backwards:
        return Page(rows, last, first if more else None)
    return Page(rows, last if more else None, first if cursor is not None else None)


def _order(prefix: str, key: str, tid: str, direction: str) -> str:
    """The ORDER BY of a page and of the CSV: the sort key, then the trade, then (a household's
    rows) the side: one order, the cursor's key, in which no two rows tie."""
    sides = f", s.side {direction}" if prefix == "s" else ""
    return f"{key} {direction}, {tid} {direction}{sides}"


def _party(conn, meter: str, interval: int, side: str) -> tuple[int, int | None]:
    """(energy the meter traded on ``side`` in the interval over all its trades, what its meter
    measured in that direction: export for a seller, import for a buyer; None without reading)."""
    traded = conn.execute(
        "SELECT coalesce(sum(energy_wh), 0) FROM trade_sides WHERE meter = ? AND interval = ? AND side = ?",
        (meter, interval, side),
    ).fetchone()[0]
    column = "d_export_wh" if side == "sell" else "d_import_wh"
    row = conn.execute(
        f"SELECT {column} FROM readings WHERE meter = ? AND interval = ?", (meter, interval)
    ).fetchone()
    return traded, (row[0] if row else None)


# why a trade stayed unsettled (market.settlement's flags), naming whose meter
FLAG_WORDS = {
    "missing_reading": "a meter reading is missing from {whose}",
    "meter_replaced": "{whose} was replaced (its readings carry another serial)",
    "serial_not_enrolled": "{whose} sent readings with a serial that is not the enrolled one",
    "counter_backwards": "a counter of {whose} went backwards",
    "implausible_jump": "{whose} reported more energy than its enrolled capacity allows",
    "missing_gridops": "the grid operator's data for {whose} never arrived",
}


def revocations(conn, directory: Directory) -> dict[str, int | None]:
    """``{meter: height}`` of every meter the ledger revoked (the governance state's meters that
    are no longer active, ``directory.meters``), with the height of the block whose
    ``revoke_meter`` vote passed (from the index's governance results; None where the index no
    longer shows it, a proposal whose payload was erased)."""
    revoked: dict[str, int | None] = {
        meter: None for meter, entry in directory.meters.items() if entry.get("active") is False
    }
    if revoked:
        for meter, height in conn.execute(
            "SELECT json_extract(p.args, '$.meter'), max(g.height) FROM gov g"
            " JOIN gov_txs p ON p.tx = g.proposal AND p.type = 'propose'"
            " WHERE g.action = 'revoke_meter' AND g.outcome = 'passed' GROUP BY 1"
        ):
            if meter in revoked:
                revoked[meter] = height
    return revoked


def unsettled_note(row: dict[str, Any], revoked: dict[str, int | None] | None = None) -> str:
    """Why a trade stayed unsettled and whose meter was flagged, from the viewer's side, and what
    can still settle it: a late or corrected reading, unless the flagged meter was revoked
    (``revoked``, as ``revocations`` gives it): the ledger refuses a revoked meter's readings, so
    then only the grid operator's data can, where the community settles on it (the trade's
    ``source``), and otherwise nothing (docs/market.md). Found in a QA pass: the trades of a
    household that left promised a late reading that could never be booked."""
    flagged, side = row.get("flagged_meter"), row.get("side")
    if flagged is None:
        whose = "a meter of this trade"
    elif (side == "sell" and flagged == row["seller"]) or (side == "buy" and flagged == row["buyer"]):
        whose = "your meter"
    elif flagged == row["seller"]:  # (a name that could reorder the sentence is isolated in it)
        whose = f"the seller's meter ({isolate_inline(row['seller_name'])})"
    else:
        whose = f"the buyer's meter ({isolate_inline(row['buyer_name'])})"
    flag = row.get("flag") or "missing_reading"
    reason = FLAG_WORDS.get(flag, f"{flag} on {{whose}}").format(whose=whose)
    if flag == "missing_gridops":  # flagged when gridops_window_s passed; older data is refused
        return (
            f"unsettled: {reason} within the community's gridops_window_s: no money moved; its data is "
            "no longer accepted, so the trade stays unsettled and the energy counts as normal grid "
            "supply or feed-in."
        )
    if flagged is None or flagged not in (revoked or {}):
        return (
            f"unsettled: {reason}: no money moved; the energy counts as normal grid supply or feed-in "
            "until a late or corrected reading settles it."
        )
    height = (revoked or {})[flagged]
    at = "" if height is None else f" at block {height}"
    if row.get("source") is None:  # the community settles on its meters' readings alone
        rest = (
            "no reading of it can settle this trade any more: it stays unsettled, and the energy counts "
            "as normal grid supply or feed-in."
        )
    else:
        rest = (
            "only the grid operator's data for that meter and interval can still settle it, if it "
            "arrives within the community's gridops_window_s of the interval's end; until then the "
            "energy counts as normal grid supply or feed-in."
        )
    return (
        f"unsettled: {reason}: no money moved; {whose} was revoked{at} and the ledger refuses its "
        f"readings, so {rest}"
    )


def delivery_note(conn, row: dict[str, Any], revoked: dict[str, int | None] | None = None) -> str | None:
    """For a settled trade that delivered less than it cleared, in plain words and from the
    viewer's side: "sold 34 Wh, delivered 20 Wh, paid for 20 Wh: your meter exported only ...";
    for an unsettled one, why and whose meter was flagged, and what can still settle it
    (``unsettled_note``; ``revoked``: the revoked meters, ``revocations``).

    Settlement (docs/market.md, Shortfalls): a seller's settled total is min(sold, exported), a
    buyer's min(bought, imported), each shared pro rata over the party's trades of the interval;
    the trade settles the smaller of its two shares. None for other trades."""
    if row["status"] == "unsettled":
        return unsettled_note(row, revoked)
    if row["status"] != "settled" or row["settled_wh"] is None or row["settled_wh"] >= row["energy_wh"]:
        return None
    side = row.get("side")
    sold, exported = _party(conn, row["seller"], row["interval"], "sell")
    bought, imported = _party(conn, row["buyer"], row["interval"], "buy")
    seller_short = exported is not None and exported < sold
    buyer_short = imported is not None and imported < bought
    reasons = []
    if seller_short:
        if side == "sell":
            reasons.append(
                f"your meter exported {energy(exported)} in this interval, less than the {energy(sold)} "
                "you sold in it (shared pro rata over your trades of the interval)"
            )
        elif side == "buy":
            reasons.append("the seller's meter exported less than it sold in this interval")
        else:
            reasons.append(f"the seller's meter exported {energy(exported)} of the {energy(sold)} it sold")
    if buyer_short:
        if side == "buy":
            reasons.append(
                f"your meter imported {energy(imported)} in this interval, less than the {energy(bought)} "
                "you bought in it (shared pro rata over your trades of the interval)"
            )
        elif side == "sell":
            reasons.append("the buyer's meter imported less than it bought in this interval")
        else:
            reasons.append(f"the buyer's meter imported {energy(imported)} of the {energy(bought)} it bought")
    if not reasons:
        reasons.append("the other trades of the interval took the delivered energy first (pro rata)")
    verb = {"sell": "sold", "buy": "bought"}.get(side, "traded")
    rest = ""
    if side == "sell" and buyer_short and not seller_short:
        rest = "; the rest of your export went to the grid at the feed-in tariff"
    elif side == "buy" and seller_short and not buyer_short:
        rest = "; the rest of your import came from the grid at the retail price"
    settled = energy(row["settled_wh"])
    return (
        f"{verb} {energy(row['energy_wh'])}, delivered {settled}, paid for {settled}: "
        + " and ".join(reasons)
        + rest
        + "."
    )


def _row(r: tuple, directory: Directory) -> dict[str, Any]:
    (
        trade_id,
        interval,
        key,
        seller,
        buyer,
        energy_wh,
        price,
        value,
        grid_fee,
        levies,
        height,
        idx,
        status,
        settled_wh,
        s_value,
        s_grid_fee,
        s_levies,
        flag,
        flagged_meter,
        settle_height,
        adjusted,
        source,
        side,
        _,
    ) = r
    row = {
        "id": public_id(interval, key),
        "interval": interval,
        "seller": seller,
        "seller_name": directory.label(seller),
        "buyer": buyer,
        "buyer_name": directory.label(buyer),
        "energy_wh": energy_wh,
        "price_per_kwh": price,
        "value": value,
        "grid_fee": grid_fee,
        "levies": levies,
        "status": status,
        "settled_wh": settled_wh,
        "settled_value": s_value,
        "settled_grid_fee": s_grid_fee,
        "settled_levies": s_levies,
        "flag": flag,
        "flagged_meter": flagged_meter,
        "height": height,
        "result_index": idx,
        "settle_height": settle_height,
        "adjustments": adjusted,
    }
    if source is not None:  # where the community settles on the grid operator's data too
        row["source"] = source
    if side is not None:
        row["side"] = side
        counterparty = buyer if side == "sell" else seller
        row["counterparty"] = counterparty
        row["counterparty_name"] = directory.label(counterparty)
    return row


CSV_COLUMNS = [
    "trade_id",
    "interval_start",
    "interval_end",
    "side",
    "seller_meter",
    "seller",
    "buyer_meter",
    "buyer",
    "energy_wh",
    "price_per_kwh_micro",
    "value_micro",
    "grid_fee_micro",
    "levies_micro",
    "status",
    "settled_wh",
    "settled_value_micro",
    "settled_grid_fee_micro",
    "settled_levies_micro",
    "flag",
    "flagged_meter",
    "block_height",
    "settlement_height",
    "delivery_note",
]
_CSV_SQL_COLUMNS = (
    "t.interval, t.trade_key, t.seller AS seller_meter, t.buyer AS buyer_meter, t.energy_wh,"
    " t.price AS price_per_kwh_micro, t.value AS value_micro, t.grid_fee AS grid_fee_micro,"
    " t.levies AS levies_micro, t.status, t.settled_wh, t.s_value AS settled_value_micro,"
    " t.s_grid_fee AS settled_grid_fee_micro, t.s_levies AS settled_levies_micro, t.flag, t.flagged_meter,"
    " t.height AS block_height, t.settle_height AS settlement_height, t.source"
)


def csv_chunks(conn, f: TradeFilter, tz: ZoneInfo, directory: Directory, interval_s: int) -> Iterator[str]:
    """The CSV of exactly the filtered rows, in their order, in chunks (header first). Money and
    prices are the ledger's integers (micro-units, micro-units per kWh); times are in the
    community's zone. One SQL query with the page's WHERE and ORDER BY, read by pandas."""
    f.check()
    source, p, clauses, args = _select(f, tz)
    key = f"{p}.{SORTS[f.sort]}"
    tid = f"{p}.trade" if p == "s" else "t.id"
    direction = "DESC" if f.descending else "ASC"
    side = "s.side" if p == "s" else "''"
    sql = (
        f"SELECT {_CSV_SQL_COLUMNS}, {side} AS side FROM {source}"
        f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''}"
        f" ORDER BY {_order(p, key, tid, direction)}"
    )
    header = True
    revoked = revocations(conn, directory)
    for frame in pd.read_sql_query(
        sql, conn, params=args, chunksize=CSV_CHUNK, dtype_backend="numpy_nullable"
    ):
        yield _csv(conn, frame, tz, interval_s, directory, header, revoked)
        header = False
    if header:
        yield ",".join(CSV_COLUMNS) + "\n"


def _csv(
    conn,
    frame: pd.DataFrame,
    tz: ZoneInfo,
    interval_s: int,
    directory: Directory,
    header: bool,
    revoked: dict[str, int | None],
) -> str:
    # Many trades share an interval: format each distinct interval once.
    codes, intervals = pd.factorize(frame["interval"].astype("int64"))
    starts = [datetime.fromtimestamp(int(i), tz) for i in intervals]
    begin = np.array([d.isoformat() for d in starts], dtype=object)
    end = np.array(
        [datetime.fromtimestamp(int(i) + interval_s, tz).isoformat() for i in intervals], dtype=object
    )
    frame["trade_id"] = frame["interval"].astype("string") + ":" + frame["trade_key"]
    frame["interval_start"] = begin[codes]
    frame["interval_end"] = end[codes]
    labels = {m: directory.label(m) for m in set(frame["seller_meter"]) | set(frame["buyer_meter"])}
    frame["seller"] = frame["seller_meter"].map(labels)
    frame["buyer"] = frame["buyer_meter"].map(labels)
    frame["flag"] = frame["flag"].fillna("")
    # the trade rows' delivery note, for the rows that have one (under-delivered or unsettled)
    notes = [""] * len(frame)
    noted = (frame["status"] == "unsettled") | (
        (frame["status"] == "settled") & (frame["settled_wh"].fillna(0) < frame["energy_wh"])
    )
    for pos in np.flatnonzero(noted.fillna(False).to_numpy(dtype=bool)):
        r = frame.iloc[pos]
        row = {
            "status": r["status"],
            "side": r["side"] or None,
            "seller": r["seller_meter"],
            "buyer": r["buyer_meter"],
            "seller_name": r["seller"],
            "buyer_name": r["buyer"],
            "interval": int(r["interval"]),
            "energy_wh": int(r["energy_wh"]),
            "settled_wh": None if pd.isna(r["settled_wh"]) else int(r["settled_wh"]),
            "flag": r["flag"] or None,
            "flagged_meter": None if pd.isna(r["flagged_meter"]) else r["flagged_meter"],
            "source": None if pd.isna(r["source"]) else r["source"],
        }
        notes[pos] = delivery_note(conn, row, revoked) or ""
    frame["delivery_note"] = notes
    frame["flagged_meter"] = frame["flagged_meter"].fillna("")
    for column in ("seller", "buyer", "delivery_note"):  # names are the members' own choice
        frame[column] = frame[column].map(text_cell)
    out = io.StringIO()
    frame[CSV_COLUMNS].to_csv(out, index=False, header=header, lineterminator="\n")
    return out.getvalue()
