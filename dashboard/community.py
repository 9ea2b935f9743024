"""The community's aggregates for the overview: today's totals, prices and volumes over time,
the live order book (aggregated per interval: no household's order is shown), chain status.

"Today" is the community-local day of the last final block: the ledger's clock, which is the
wall clock on a live node and the simulated clock in the accelerated demo.

- P2P share: energy traded between neighbours / energy the households imported (metered).
- Self-sufficiency: 1 − Σ_t max(0, I_t − E_t) / Σ_t I_t over the day's intervals t, with I_t and
  E_t the community's total metered import and export: the share of household imports that the
  community's own exports balanced in the same interval (so did not have to come from
  outside the neighbourhood).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from dashboard.ledger import LedgerReader
from dashboard.timeutil import day_range, local_date
from dashboard.units import ratio_permille
from market.clearing import Order, clear

MAX_PRICE_DAYS = 92
# A side of an interval's book is shown (count, volume, best limit) only when at least this many
# households besides the viewer's own are on it: with fewer, the "sum" less the viewer's own
# orders is one or two households' forecast and price. A household is a member: one member's
# meters (each orders on its own) count once. A visitor (not logged in) may be any household,
# one of the side's too: it is shown a side of at least MIN_BOOK_HOUSEHOLDS + 1 households
# (``min_households``; found in a QA pass: one of 3 sellers logged out and subtracted its own
# offer from the visitors' sum).
MIN_BOOK_HOUSEHOLDS = 3
SIDE_WORDS = {"ask": "offers", "bid": "bids"}


def min_households(logged_in: bool) -> int:
    """How many households besides the viewer's own a side must have to be shown to it:
    MIN_BOOK_HOUSEHOLDS to a logged-in household (its own are known to it and not counted), one
    more to a visitor, who may be one of them."""
    return MIN_BOOK_HOUSEHOLDS if logged_in else MIN_BOOK_HOUSEHOLDS + 1


def side_note(prefix: str, besides_own: bool, logged_in: bool = True, households: int = 0) -> str:
    """Why a side is withheld: ``fewer than 3 offers`` (``... besides yours`` for a viewer with an
    order on that side); to a visitor, a side of exactly MIN_BOOK_HOUSEHOLDS ``households``
    reads ``only 3 offers: each could subtract its own from their sum``."""
    words = SIDE_WORDS[prefix]
    if not logged_in and households >= MIN_BOOK_HOUSEHOLDS:
        return f"only {households} {words}: each could subtract its own from their sum"
    note = f"fewer than {MIN_BOOK_HOUSEHOLDS} {words}"
    return note + " besides yours" if besides_own else note


def owners(enrolled: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{meter: its household}: the member owning it (the ledger's meters), else the meter itself."""
    return {m: e.get("owner") or m for m, e in enrolled.items()}


def households(meters: Iterable[str], owner_of: Mapping[str, str]) -> set[str]:
    """The households behind ``meters`` (``owners``): one member's meters count once."""
    return {owner_of.get(m, m) for m in meters}


def seen_clearing(
    result: dict[str, Any],
    own: dict[str, int],
    full: bool,
    others: Mapping[str, int],
    *,
    logged_in: bool,
) -> dict[str, Any]:
    """A clearing result (or a row of the index's clearings) as a viewer may read it, by the
    overview book's rules: a side of fewer than ``min_households(logged_in)`` households besides
    the viewer's own (``others``, per side "ask"/"bid": ``book_households``; ``own``: its meters'
    orders per side, for the note) shows no energy (``ask_wh``/``bid_wh`` None, with a note), and
    then no traded volume either: the short side is what matched, so the volume would give its
    sum away, and the volume less a viewer's own fill is what the others on its side got (a
    volume of 0, nothing matched, is no sum: no trades and no price say it anyway). The price
    (every trade's price of the interval) and the counts stay. ``full`` (admins) sees it whole."""
    if full:
        return result
    out = dict(result)
    notes = []
    for prefix in ("ask", "bid"):
        count = out.get(f"{prefix}s")
        mine = own.get(prefix, 0)
        besides = others.get(prefix, 0)
        if type(count) is not int or besides < min_households(logged_in):
            note = side_note(prefix, mine > 0, logged_in, besides)
            out[f"{prefix}_wh"], out[f"{prefix}_wh_note"] = None, note
            notes.append(note)
    if notes and out.get("volume_wh"):  # 0 (nothing matched) is public: no trades, no price
        out["volume_wh"], out["volume_wh_note"] = None, f"withheld: {notes[0]}"
    return out


def own_orders(conn, own_meters: frozenset[str], start: int, end: int) -> dict[int, dict[str, int]]:
    """{interval: {"ask": n, "bid": n}}: the viewer's meters' cleared orders per interval and side
    in [start, end), from the index's order outcomes (an order withdrawn with its revoked meter
    counts too: then one side shows less, never more)."""
    if not own_meters:
        return {}
    marks = ",".join("?" * len(own_meters))
    out: dict[int, dict[str, int]] = {}
    for interval, side, n in conn.execute(
        f"SELECT interval, side, count(*) FROM outcomes WHERE meter IN ({marks})"
        " AND interval >= ? AND interval < ? GROUP BY interval, side",
        (*sorted(own_meters), start, end),
    ):
        out.setdefault(interval, {})["ask" if side == "sell" else "bid"] = n
    return out


def book_households(
    conn, owner_of: Mapping[str, str], own_meters: frozenset[str], start: int, end: int
) -> dict[int, dict[str, int]]:
    """{interval: {"ask": n, "bid": n}}: per cleared interval of [start, end) and side, how many
    households (``owners``) had an order on it besides the viewer's own (the households of
    ``own_meters``), from the index's order outcomes. An order withdrawn with its revoked meter
    is an outcome that the clearing did not count; each such order is taken off the count, as if
    it were another household's: a side then shows less, never more."""
    rows = conn.execute(
        "WITH o(meter, owner) AS (SELECT key, value FROM json_each(?)),"
        " x AS (SELECT x.interval, x.side, coalesce(o.owner, x.meter) AS h FROM outcomes x"
        " LEFT JOIN o ON o.meter = x.meter WHERE x.interval >= ? AND x.interval < ?)"
        " SELECT x.interval, x.side, count(*),"
        " count(DISTINCT CASE WHEN x.h NOT IN (SELECT value FROM json_each(?)) THEN x.h END),"
        " c.asks, c.bids FROM x JOIN clearings c ON c.interval = x.interval GROUP BY x.interval, x.side",
        (json.dumps(dict(owner_of)), start, end, json.dumps(sorted(households(own_meters, owner_of)))),
    ).fetchall()
    out: dict[int, dict[str, int]] = {}
    for interval, side, orders, others, asks, bids in rows:
        counted = asks if side == "sell" else bids
        withdrawn = max(0, orders - counted)
        out.setdefault(interval, {})["ask" if side == "sell" else "bid"] = max(0, others - withdrawn)
    return out


def _side(
    prefix: str,
    orders: list[dict],
    best,
    shown: bool,
    besides_own: bool = False,
    logged_in: bool = True,
    households: int = 0,
) -> dict[str, Any]:
    if not shown:
        return {
            f"{prefix}s": None,
            f"{prefix}_wh": None,
            f"best_{prefix}_per_kwh": None,
            f"{prefix}s_shown": False,
            f"{prefix}s_note": side_note(prefix, besides_own, logged_in, households),
        }
    return {
        f"{prefix}s": len(orders),
        f"{prefix}_wh": sum(o["energy_wh"] for o in orders),
        f"best_{prefix}_per_kwh": best((o["limit_price"] for o in orders), default=None),
        f"{prefix}s_shown": True,
        f"{prefix}s_note": None,
    }


def today_totals(conn, start: int, end: int, seen: Mapping[int, int | None] | None = None) -> dict[str, Any]:
    """The day's totals. ``seen`` (``seen_volumes``: {interval: its volume as the viewer may see
    it, None if withheld}; None: every interval, for admins): the traded energy, trades, value and
    settled energy count only the intervals whose volume the viewer may see, and
    ``withheld_intervals`` says how many are left out; the P2P share is that of the imports of the
    intervals counted. Each of these figures is an interval's volume or follows from it (value =
    volume × the public price), and the tiles refresh as intervals clear: with one interval
    cleared, or between two refreshes, the day's figure was one interval's volume (found in a QA
    pass with the visitors' threshold)."""
    per_interval: dict[int, list[int]] = {
        interval: [volume, trades, 0, 0]
        for interval, volume, trades in conn.execute(
            "SELECT interval, volume_wh, trades FROM clearings WHERE interval >= ? AND interval < ?",
            (start, end),
        )
    }
    for interval, value, settled in conn.execute(
        "SELECT interval, coalesce(sum(value), 0),"
        " coalesce(sum(CASE WHEN status = 'settled' THEN settled_wh END), 0)"
        " FROM trades WHERE interval >= ? AND interval < ? GROUP BY interval",
        (start, end),
    ):
        per_interval.setdefault(interval, [0, 0, 0, 0])[2:] = [value, settled]
    counted = [
        figures
        for interval, figures in per_interval.items()
        if seen is None or seen.get(interval) is not None
    ]
    traded = (sum(f[0] for f in counted), sum(f[1] for f in counted), len(per_interval))
    value, settled_wh = sum(f[2] for f in counted), sum(f[3] for f in counted)
    withheld = {i for i in per_interval if seen is not None and seen.get(i) is None}
    import_wh = export_wh = outside_wh = counted_import_wh = 0
    for interval, total_import, total_export in conn.execute(
        "SELECT interval, sum(d_import_wh), sum(d_export_wh) FROM readings"
        " WHERE interval >= ? AND interval < ? AND d_import_wh IS NOT NULL GROUP BY interval",
        (start, end),
    ):
        import_wh += total_import
        export_wh += total_export
        outside_wh += max(0, total_import - total_export)
        if interval not in withheld:  # the P2P share: of the intervals whose trades are counted
            counted_import_wh += total_import
    active = conn.execute(
        "SELECT count(*) FROM (SELECT meter FROM readings WHERE interval >= ? AND interval < ?"
        " UNION SELECT meter FROM outcomes WHERE interval >= ? AND interval < ?)",
        (start, end, start, end),
    ).fetchone()[0]
    return {
        "traded_wh": traded[0],
        "trades": traded[1],
        "cleared_intervals": traded[2],
        "withheld_intervals": len(withheld),
        "traded_value": value,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "settled_wh": settled_wh,
        "p2p_share_permille": ratio_permille(settled_wh, counted_import_wh),
        "self_sufficiency_permille": ratio_permille(import_wh - outside_wh, import_wh),
        "active_households": active,
    }


def seen_volumes(
    conn,
    start: int,
    end: int,
    owner_of: Mapping[str, str],
    own_meters: frozenset[str] = frozenset(),
    *,
    full: bool = False,
    logged_in: bool = False,
) -> dict[int, int | None]:
    """{interval: its cleared volume as the viewer may see it} of the clearings in [start, end):
    None where a side had fewer than ``min_households(logged_in)`` households besides the
    viewer's own (seen_clearing, households by ``owners``), unless ``full``."""
    rows = conn.execute(
        "SELECT interval, volume_wh, asks, bids FROM clearings WHERE interval >= ? AND interval < ?",
        (start, end),
    ).fetchall()
    own = {} if full else own_orders(conn, own_meters, start, end)
    others = {} if full else book_households(conn, owner_of, own_meters, start, end)
    return {
        interval: seen_clearing(
            {"volume_wh": volume, "asks": asks, "bids": bids},
            own.get(interval, {}),
            full,
            others.get(interval, {}),
            logged_in=logged_in,
        )["volume_wh"]
        for interval, volume, asks, bids in rows
    }


def price_series(
    conn,
    start: int,
    end: int,
    owner_of: Mapping[str, str],
    own_meters: frozenset[str] = frozenset(),
    *,
    full: bool = False,
    logged_in: bool = False,
) -> dict[str, list]:
    """Clearing price (micro-units/kWh, None where nothing cleared) and volume per interval; the
    volume None where it is withheld from the viewer (``seen_volumes``)."""
    rows = conn.execute(
        "SELECT interval, price FROM clearings WHERE interval >= ? AND interval < ? ORDER BY interval",
        (start, end),
    ).fetchall()
    volumes = seen_volumes(conn, start, end, owner_of, own_meters, full=full, logged_in=logged_in)
    return {
        "intervals": [r[0] for r in rows],
        "price_per_kwh": [r[1] for r in rows],
        "volume_wh": [volumes[r[0]] for r in rows],
    }


def live_book(
    ledger: LedgerReader,
    own_meters: frozenset[str] = frozenset(),
    *,
    full: bool = False,
    logged_in: bool = False,
) -> list[dict[str, Any]]:
    """The open intervals of the order book, aggregated; with an indicative clearing price (the
    clearing the ledger would run if the gate closed now) and the viewer's own orders in full.

    A side with fewer than ``min_households(logged_in)`` households besides the viewer's own
    (members: one member's meters count once; a visitor, ``logged_in`` False, needs one more, as
    it may be one of them) shows neither count, volume nor best limit (``asks_note``: "fewer
    than 3 offers"), and then the indicative price and volume, which would give them away, are
    hidden too. A side shown has its best limit: one household's limit price, of one of at least
    3 households other than the viewer's, which cannot tell whose. ``full`` (admins) shows every
    side."""
    params = ledger.params()
    owner_of = owners(ledger.meters())
    own_households = households(own_meters, owner_of)
    out = []
    for interval, orders in sorted(ledger.book().items(), key=lambda kv: int(kv[0])):
        asks = [o for o in orders.values() if o["side"] == "sell"]
        bids = [o for o in orders.values() if o["side"] == "buy"]
        # The book holds one order per meter and interval; a household (member) may have several
        # meters, and counts once (found in a QA pass: one member's three offers showed its sum).
        # The viewer's own household does not count towards the threshold: the sum minus its own
        # orders would be the other households' figures.
        sellers = households((m for m, o in orders.items() if o["side"] == "sell"), owner_of)
        buyers = households((m for m, o in orders.items() if o["side"] == "buy"), owner_of)
        other_sellers, other_buyers = len(sellers - own_households), len(buyers - own_households)
        asks_shown = full or other_sellers >= min_households(logged_in)
        bids_shown = full or other_buyers >= min_households(logged_in)
        try:
            outcome = clear(
                [
                    Order(o["order"], m, o["side"], o["energy_wh"], o["limit_price"], o["position"])
                    for m, o in sorted(orders.items())
                ],
                params["mechanism"],
                community_price=params["community_price"] if params["mechanism"] == "community" else None,
                grid_fee_per_kwh=params["grid_fee_per_kwh"],
                levies_per_kwh=params["levies_per_kwh"],
            )
            indicative = (outcome.price, outcome.volume_wh)
        except (ValueError, KeyError):
            indicative = (None, None)
        if not (asks_shown and bids_shown):
            indicative = (None, None)
        out.append(
            {
                "interval": int(interval),
                "gate_closes": int(interval) - params["gate_s"],
                **_side(
                    "ask", asks, min, asks_shown, bool(sellers & own_households), logged_in, other_sellers
                ),
                **_side("bid", bids, max, bids_shown, bool(buyers & own_households), logged_in, other_buyers),
                "indicative_price_per_kwh": indicative[0],
                "indicative_volume_wh": indicative[1],
                "own_orders": [
                    {
                        "meter": m,
                        "side": o["side"],
                        "energy_wh": o["energy_wh"],
                        "limit_price": o["limit_price"],
                    }
                    for m, o in sorted(orders.items())
                    if m in own_meters
                ],
            }
        )
    return out


def overview(
    ledger: LedgerReader,
    conn,
    *,
    days: int = 7,
    own_meters: frozenset[str] = frozenset(),
    now: int,
    full_book: bool = False,
    logged_in: bool = False,
) -> dict[str, Any]:
    """Everything the overview page shows (all aggregates), as the viewer may see them: an admin
    (``full_book``) everything, a logged-in household (``logged_in``, ``own_meters``) sums of at
    least MIN_BOOK_HOUSEHOLDS households besides its own, a visitor of one more."""
    head = ledger.head()
    tz = ledger.community.tz
    today = local_date(head.time, tz)
    start, end = day_range(today, tz)
    days = max(1, min(days, MAX_PRICE_DAYS))
    series_start = day_range(local_date(head.time - (days - 1) * 86400, tz), tz)[0]
    params = ledger.params()
    owner_of = owners(ledger.meters())
    today_seen = (
        None if full_book else seen_volumes(conn, start, end, owner_of, own_meters, logged_in=logged_in)
    )
    return {
        "community": {
            "id": ledger.community.id,
            "name": ledger.community.name,
            "timezone": ledger.community.timezone,
        },
        "today": {
            "date": today.isoformat(),
            "start": start,
            "end": end,
            **today_totals(conn, start, end, today_seen),
        },
        "prices": {
            "days": days,
            **price_series(
                conn, series_start, end, owner_of, own_meters, full=full_book, logged_in=logged_in
            ),
        },
        "book": live_book(ledger, own_meters, full=full_book, logged_in=logged_in),
        "chain": {
            "height": head.height,
            "head_hash": head.hash,
            "head_time": head.time,
            "head_age_s": max(0, now - head.time),
            "validators": len(ledger.validators()),
            "quorum": ledger.quorum(),
        },
        "tariffs": {
            "retail_price_per_kwh": params["retail_price"],
            "feed_in_price_per_kwh": params["feed_in_price"],
            "grid_fee_per_kwh": params["grid_fee_per_kwh"],
            "levies_per_kwh": params["levies_per_kwh"],
            "mechanism": params["mechanism"],
            "interval_s": params["interval_s"],
        },
    }
