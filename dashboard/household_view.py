"""A household's figures: energy flows, history, money (gross, never netted) and orders.

Energy comes from the meter's signed readings (cumulative counters; the index keeps the
per-interval differences) and from its trades. Money comes from the settled trades only and goes
through market.statement (the project's one statement formula); trades cleared but not yet
settled are shown apart as provisional.

Solar production is not on the ledger: a grid meter sees only import and export. The estimate
(always labelled as such) is: solar = export + estimated self-consumption, where the
self-consumption is the household's average consumption in its intervals without export
(assumed covered by its own panels in every interval in which it exports).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chain.keys import KeyFileError, key_id, load_public_key
from dashboard.community import book_households, own_orders, seen_clearing
from dashboard.explain import explain
from dashboard.timeutil import fmt_time
from dashboard.units import largest_remainder, round_to_step, shown_statement
from market.billing import MeterInfo, billed_window
from market.money import div_round_half_even
from market.settlement import SETTLED, TradeSettlement
from market.statement import household_statement

SAVINGS_FORMULA = (
    "savings = grid-only baseline − actual cost; baseline = imports × retail price − exports × "
    "feed-in tariff; actual cost = P2P costs + grid fees + levies + (imports − bought from neighbours) "
    "× retail price − P2P earnings − (exports − sold to neighbours) × feed-in tariff"
)


@dataclass(frozen=True)
class Metered:
    """A meter's metered energy of a period: ``intervals`` with a usable reading, and ``gaps``,
    those of its readings without a usable figure (no reading of the interval before it, or one
    that cannot be true), not counting the meter's first reading, its baseline (docs/billing.md:
    readings are expected from the interval after it on)."""

    import_wh: int
    export_wh: int
    intervals: int
    gaps: int


# a reading without a usable figure that is not the meter's first (its baseline, which has none);
# SQL, with the meter as its one parameter
_GAP = "({d} IS NULL AND {interval} > (SELECT min(interval) FROM readings WHERE meter = ?))"


@dataclass(frozen=True)
class TradeTotals:
    """A side's trades in a period, by state: settled (final), pending (cleared, provisional),
    unsettled (flagged: no money moved)."""

    settled_count: int = 0
    settled_wh: int = 0
    settled_value: int = 0
    settled_grid_fee: int = 0
    settled_levies: int = 0
    pending_count: int = 0
    pending_wh: int = 0
    pending_value: int = 0
    pending_grid_fee: int = 0
    pending_levies: int = 0
    unsettled_count: int = 0
    unsettled_wh: int = 0


def departure(ledger, conn, meter: str) -> dict[str, Any] | None:
    """What the ledger says of the household's leaving (docs/quickstart.md, "Leaving"), None if
    nothing: ``meter_revoked``, the block (``height`` and ``time``) whose vote revoked the meter (the
    governance state's ``revoked``), and ``member_removed``, the block whose vote removed its
    member (the index's passed ``remove_member`` naming it; the state keeps no height for it),
    each None if it did not happen and with a None height or time where the ledger no longer
    shows it; and ``note``, what is true in words. Found in a QA pass: the page of a household
    that had left told it to restart the agent the quickstart had told it to stop."""
    entry = ledger.meters().get(meter)
    if entry is None:
        return None
    chain = ledger.state()["chain"]
    revoked = chain.get("revoked", {}).get(meter)
    meter_revoked = _block(ledger, revoked) if revoked is not None or entry.get("active") is False else None
    owner = entry.get("owner")
    member_removed = None
    if owner and owner not in ledger.members():
        row = conn.execute(
            "SELECT g.height FROM gov g JOIN gov_txs p ON p.tx = g.proposal AND p.type = 'propose'"
            " WHERE g.action = 'remove_member' AND g.outcome = 'passed'"
            " AND json_extract(p.args, '$.member') = ? ORDER BY g.height DESC LIMIT 1",
            (owner,),
        ).fetchone()
        member_removed = _block(ledger, None if row is None else row[0])
    if meter_revoked is None and member_removed is None:
        return None
    tz = ledger.community.tz
    if meter_revoked is not None:
        note = (
            f"This meter left the community{_at(meter_revoked, tz)}: its key was revoked by a community "
            "vote, so the ledger takes no more orders or readings of it, and its agent is no longer "
            "needed."
        )
        if member_removed is not None:
            note += f" The household's membership ended{_at(member_removed, tz)}."
        else:
            note += (
                " The household is still a member (a meter replaced by a new one trades under its new key)."
            )
        note += " Its history stays here."
    else:
        note = (
            f"The household's membership ended{_at(member_removed, tz)} (a remove_member vote), but this "
            "meter is still enrolled: it trades, and its agent is needed, until the community revokes it "
            '(revoke_meter; docs/quickstart.md, "Leaving").'
        )
    return {"meter_revoked": meter_revoked, "member_removed": member_removed, "note": note}


def _block(ledger, height: int | None) -> dict[str, int | None]:
    """{height, time} of a block (time None for a block the store does not have)."""
    header = None if height is None else ledger.header(height)
    return {"height": height, "time": None if header is None else header.get("time")}


def _at(block: dict[str, int | None], tz) -> str:
    """ " at block 12 on 2025-06-02 14:05" (local time), as far as it is known."""
    if block["height"] is None:
        return ""
    when = "" if block["time"] is None else f" on {fmt_time(block['time'], tz)}"
    return f" at block {block['height']}{when}"


def billed_meter(ledger, conn, meter: str) -> MeterInfo | None:
    """The meter as its statement bills it (market.billing.MeterInfo), None for a meter the ledger
    does not know: ``enrolled_at``, the time of the block whose ``enroll_meter`` vote passed (the
    index's governance rows; the genesis's time for a meter of the genesis), and ``revoked_at``,
    that of the block whose vote revoked it (the governance state's ``revoked``)."""
    entry = ledger.meters().get(meter)
    if entry is None:
        return None
    enrolled_at = ledger.community.genesis_time
    for height, args in conn.execute(
        "SELECT g.height, p.args FROM gov g JOIN gov_txs p ON p.tx = g.proposal AND p.type = 'propose'"
        " WHERE g.action = 'enroll_meter' AND g.outcome = 'passed'"
        " AND json_extract(p.args, '$.owner') = ? AND json_extract(p.args, '$.serial') = ?",
        (entry.get("owner"), entry.get("serial")),
    ):
        try:
            enrolled = key_id(load_public_key(json.loads(args)["key"]))
        except (KeyFileError, ValueError, KeyError, TypeError):
            continue  # not a key: its vote could not have passed
        when = _block(ledger, height)["time"] if enrolled == meter else None
        if when is not None:
            enrolled_at = when
            break
    revoked = ledger.state()["chain"].get("revoked", {}).get(meter)
    return MeterInfo(
        meter,
        entry.get("owner", ""),
        entry.get("name", ""),
        entry.get("serial", ""),
        entry.get("capacity_w", 0),
        enrolled_at,
        None if revoked is None else _block(ledger, revoked)["time"],
    )


@dataclass(frozen=True)
class Billed:
    """Which intervals count in a meter's metered energy: those inside its billed window, as on its
    statement and in `peerwatt report` (market.billing.billed_window; docs/billing.md: from its
    enrolment, ``enrolled_at <= X``, to its revocation, ``X + interval_s <= revoked_at``). The
    ledger accepts the readings of the interval in which a meter was enrolled (it began before:
    found in a QA pass, a household that joined at 23:30 on a day of daily intervals had that
    day's 3,334 Wh in its import on the page and not on its statement); they are its baseline."""

    meter: MeterInfo | None  # None: a meter the ledger does not know (every interval counts)
    interval_s: int

    def within(self, start: int, end: int) -> tuple[int, int]:
        """[first, stop) of the interval starts of [start, end) that count ((start, start): none)."""
        if self.meter is None:
            return start, end
        # an interval beginning before ``end`` belongs to the period (as its trades do), and counts
        # if it ends by the window's end
        window = billed_window(self.meter, start, end + self.interval_s)
        if window is None:
            return start, start
        return window[0], max(window[0], min(end, window[1] - self.interval_s + 1))


def metered(conn, meter: str, start: int, end: int, billed: Billed | None = None) -> Metered:
    """The meter's metered energy in [start, end), inside its billed window (``billed``; None:
    every interval of the period)."""
    lo, hi = (start, end) if billed is None else billed.within(start, end)
    gap = _GAP.format(d="d_import_wh", interval="interval")
    row = conn.execute(
        "SELECT coalesce(sum(d_import_wh), 0), coalesce(sum(d_export_wh), 0), count(d_import_wh),"
        f" coalesce(sum({gap}), 0) FROM readings WHERE meter = ? AND interval >= ? AND interval < ?",
        (meter, meter, lo, hi),
    ).fetchone()
    return Metered(*row)


def trade_totals(conn, meter: str, start: int, end: int) -> dict[str, TradeTotals]:
    """{'sell': ..., 'buy': ...} for the meter's trades with intervals in [start, end)."""
    acc: dict[str, dict[str, int]] = {"sell": {}, "buy": {}}
    for side, status, count, wh, value, fee, levies, s_wh, s_value, s_fee, s_levies in conn.execute(
        "SELECT side, status, count(*), sum(energy_wh), sum(value), sum(grid_fee), sum(levies),"
        " sum(coalesce(settled_wh, 0)), sum(coalesce(s_value, 0)), sum(coalesce(s_grid_fee, 0)),"
        " sum(coalesce(s_levies, 0)) FROM trade_sides"
        " WHERE meter = ? AND interval >= ? AND interval < ? GROUP BY side, status",
        (meter, start, end),
    ):
        d = acc[side]
        if status == "settled":
            d.update(
                settled_count=count,
                settled_wh=s_wh,
                settled_value=s_value,
                settled_grid_fee=s_fee,
                settled_levies=s_levies,
            )
        elif status == "unsettled":
            d.update(unsettled_count=count, unsettled_wh=wh)
        else:
            d.update(
                pending_count=count,
                pending_wh=wh,
                pending_value=value,
                pending_grid_fee=fee,
                pending_levies=levies,
            )
    return {side: TradeTotals(**d) for side, d in acc.items()}


def statement(
    conn, meter: str, start: int, end: int, params: dict[str, Any], billed: Billed | None = None
) -> dict[str, Any]:
    """Money of a period, gross: every part separately, and the savings with its formula (the
    metered energy inside the meter's billed window, ``billed``)."""
    m = metered(conn, meter, start, end, billed)
    totals = trade_totals(conn, meter, start, end)
    sold, bought = totals["sell"], totals["buy"]
    aggregates = [
        TradeSettlement(
            0,
            "",
            "",
            "",
            meter,
            0,
            bought.settled_wh,
            bought.settled_wh,
            bought.settled_value,
            bought.settled_grid_fee,
            bought.settled_levies,
            SETTLED,
            None,
            None,
        ),
        TradeSettlement(
            1,
            "",
            "",
            meter,
            "",
            0,
            sold.settled_wh,
            sold.settled_wh,
            sold.settled_value,
            0,
            0,
            SETTLED,
            None,
            None,
        ),
    ]
    out: dict[str, Any] = {
        "metered": asdict(m),
        "sold": asdict(sold),
        "bought": asdict(bought),
        "retail_price_per_kwh": params["retail_price"],
        "feed_in_price_per_kwh": params["feed_in_price"],
        "formula": SAVINGS_FORMULA,
        "provisional": bool(sold.pending_count or bought.pending_count),
        "problem": None,
    }
    try:
        s = household_statement(
            meter,
            import_wh=m.import_wh,
            export_wh=m.export_wh,
            trades=aggregates,
            retail_price_per_kwh=params["retail_price"],
            feed_in_price_per_kwh=params["feed_in_price"],
        )
    except ValueError:
        out["statement"] = None
        out["shown"] = None
        out["problem"] = (
            "Readings are missing for part of this period, so the metered energy is less than the "
            "energy settled with neighbours; the savings cannot be computed until they arrive."
        )
        return out
    out["statement"] = asdict(s)
    # what the page shows: whole cents that add up (largest remainder), the ledger's integers above
    out["shown"] = shown_statement(out["statement"])
    return out


def flows(conn, meter: str, start: int, end: int, billed: Billed | None = None) -> dict[str, Any]:
    """Where the household's energy came from and went to in [start, end), with the solar
    estimate (see the module docstring); metered energy inside the meter's billed window
    (``billed``; None: every interval of the period)."""
    lo, hi = (start, end) if billed is None else billed.within(start, end)
    rows = conn.execute(
        "SELECT d_import_wh, d_export_wh FROM readings WHERE meter = ? AND interval >= ? AND interval < ?"
        " AND d_import_wh IS NOT NULL",
        (meter, lo, hi),
    ).fetchall()
    import_wh = sum(r[0] for r in rows)
    export_wh = sum(r[1] for r in rows)
    base = [r[0] for r in rows if r[1] == 0]
    exporting = sum(1 for r in rows if r[1] > 0)
    base_per_interval = sum(base) // len(base) if base else 0
    # Without an interval without export (or without any reading) there is nothing to estimate
    # the self-consumption from: "not enough data yet" (None), never a made-up 0 Wh.
    enough = bool(rows) and (bool(base) or not exporting)
    self_consumed = base_per_interval * exporting if enough else None
    totals = trade_totals(conn, meter, start, end)
    # Settled energy is what the money table counts; cleared trades awaiting their readings are
    # shown apart with their cleared amounts (the same words and figures as the trade rows, the
    # money table and the CSV's status/energy_wh/settled_wh columns).
    sold_wh, bought_wh = totals["sell"].settled_wh, totals["buy"].settled_wh
    solar = export_wh + self_consumed if enough else None
    return {
        "import_wh": import_wh,
        "export_wh": export_wh,
        "from_grid_wh": max(0, import_wh - bought_wh),
        "from_neighbours_wh": bought_wh,
        "from_neighbours_pending_wh": totals["buy"].pending_wh,
        "to_grid_wh": max(0, export_wh - sold_wh),
        "to_neighbours_wh": sold_wh,
        "to_neighbours_pending_wh": totals["sell"].pending_wh,
        "unsettled_sold_wh": totals["sell"].unsettled_wh,
        "unsettled_bought_wh": totals["buy"].unsettled_wh,
        "solar_estimated_wh": solar,
        "solar_to_home_estimated_wh": self_consumed,
        "home_estimated_wh": import_wh + self_consumed if enough else None,
        "solar_is_estimate": True,
        "estimate_basis": {
            "intervals_without_export": len(base),
            "intervals_with_export": exporting,
            "average_without_export_wh": base_per_interval if base else None,
        },
        "solar_note": (
            "Estimated: your meter measures only the grid connection. Solar = exported energy + "
            "your average consumption in intervals without export, assumed covered by your panels "
            "in each interval in which you exported."
        ),
        "provisional": bool(totals["sell"].pending_count or totals["buy"].pending_count),
        "intervals_with_data": len(rows),
    }


def history(
    conn, meter: str, buckets: list[tuple[int, int, str]], billed: Billed | None = None
) -> dict[str, Any]:
    """Per bucket (the community's intervals of a day, days of a month, months of a year): metered
    import/export (inside the meter's billed window, ``billed``; None: every interval), energy
    sold/bought as settled (``sold_wh``, ``bought_wh``: what the money table counts) and, apart, as
    cleared but not yet settled (``sold_pending_wh``, ``bought_pending_wh``); and
    ``missing_intervals``, its readings without a usable figure (as :class:`Metered`'s ``gaps``:
    the meter's baseline is none).

    Summed in SQLite, one index range scan per bucket (a year of a household is ~35,000
    readings and as many trade rows)."""
    n = len(buckets)
    series = {
        k: [0] * n
        for k in ("import_wh", "export_wh", "sold_wh", "bought_wh", "sold_pending_wh", "bought_pending_wh")
    }
    missing = [0] * n
    if not buckets:
        return {"labels": [], "starts": [], **series, "missing_intervals": missing}
    values = ",".join("(?, ?, ?)" for _ in buckets)
    bounds = [x for i, (s, e, _) in enumerate(buckets) for x in (i, s, e)]
    inside = [(s, e) if billed is None else billed.within(s, e) for s, e, _ in buckets]
    metered_bounds = [x for i, (s, e) in enumerate(inside) for x in (i, s, e)]
    gap = _GAP.format(d="r.d_import_wh", interval="r.interval")
    for i, d_import, d_export, gaps in conn.execute(
        f"WITH b(i, s, e) AS (VALUES {values}) SELECT b.i, coalesce(sum(r.d_import_wh), 0),"
        f" coalesce(sum(r.d_export_wh), 0), sum({gap})"
        " FROM b JOIN readings r ON r.meter = ? AND r.interval >= b.s AND r.interval < b.e GROUP BY b.i",
        (*metered_bounds, meter, meter),
    ):
        series["import_wh"][i] = d_import
        series["export_wh"][i] = d_export
        missing[i] = gaps
    for i, side, settled, pending in conn.execute(
        f"WITH b(i, s, e) AS (VALUES {values}) SELECT b.i, s.side,"
        " sum(CASE WHEN s.status = 'settled' THEN coalesce(s.settled_wh, 0) ELSE 0 END),"
        " sum(CASE WHEN s.status = 'cleared' THEN s.energy_wh ELSE 0 END)"
        " FROM b JOIN trade_sides s ON s.meter = ? AND s.interval >= b.s AND s.interval < b.e"
        " GROUP BY b.i, s.side",
        (*bounds, meter),
    ):
        name = "sold" if side == "sell" else "bought"
        series[f"{name}_wh"][i] = settled
        series[f"{name}_pending_wh"][i] = pending
    return {
        "labels": [b[2] for b in buckets],
        "starts": [b[0] for b in buckets],
        **series,
        "missing_intervals": missing,
    }


def orders(
    conn,
    meter: str,
    start: int,
    end: int,
    subunit: str = "ct",
    own_meters: frozenset[str] = frozenset(),
    *,
    owner_of: Mapping[str, str],
    full: bool = True,
) -> list[dict[str, Any]]:
    """The meter's orders of [start, end) as cleared, each with a plain explanation. Unless
    ``full`` (admins), the explanation reads the interval's clearing as a viewer with
    ``own_meters`` may (community.seen_clearing): no side's sum of fewer than 3 other households
    (by ``owner_of``, community.owners: one member's meters count once)."""
    own = {} if full else own_orders(conn, own_meters, start, end)
    others = {} if full else book_households(conn, owner_of, own_meters, start, end)
    rows = conn.execute(
        "SELECT o.interval, o.side, o.energy_wh, o.limit_price, o.filled_wh, o.order_id, o.height,"
        " c.mechanism, c.price, c.volume_wh, c.asks, c.bids, c.ask_wh, c.bid_wh"
        " FROM outcomes o LEFT JOIN clearings c ON c.interval = o.interval"
        " WHERE o.meter = ? AND o.interval >= ? AND o.interval < ? ORDER BY o.interval",
        (meter, start, end),
    ).fetchall()
    out = []
    for (
        interval,
        side,
        energy_wh,
        limit,
        filled,
        order_id,
        height,
        mech,
        price,
        volume_wh,
        asks,
        bids,
        ask_wh,
        bid_wh,
    ) in rows:
        outcome = {"side": side, "energy_wh": energy_wh, "limit_price": limit, "filled_wh": filled}
        clearing = (
            None
            if mech is None
            else seen_clearing(
                {
                    "mechanism": mech,
                    "price": price,
                    "volume_wh": volume_wh,
                    "asks": asks,
                    "bids": bids,
                    "ask_wh": ask_wh,
                    "bid_wh": bid_wh,
                },
                own.get(interval, {}),
                full,
                others.get(interval, {}),
                logged_in=True,  # the household page: its household, or an admin (full)
            )
        )
        delivery = _delivery(conn, meter, interval, side)
        out.append(
            {
                "interval": interval,
                **outcome,
                "order": order_id,
                "height": height,
                "clearing_price_per_kwh": price,
                "delivered_wh": delivery["settled_wh"],
                "pending_wh": delivery["pending_wh"],
                "unsettled_wh": delivery["unsettled_wh"],
                "metered_wh": delivery["metered_wh"],
                "explanation": explain(outcome, clearing, subunit, delivery),
            }
        )
    return out


def _delivery(conn, meter: str, interval: int, side: str) -> dict[str, Any]:
    """The settlement of the meter's trades of an interval on one side, and what its meter
    measured in that direction (export for sell, import for buy; None without a usable reading)."""
    out = {"settled_wh": 0, "pending_wh": 0, "unsettled_wh": 0}
    for status, settled, cleared in conn.execute(
        "SELECT status, sum(coalesce(settled_wh, 0)), sum(energy_wh) FROM trade_sides"
        " WHERE meter = ? AND interval = ? AND side = ? GROUP BY status",
        (meter, interval, side),
    ):
        if status == "settled":
            out["settled_wh"] = settled
        elif status == "unsettled":
            out["unsettled_wh"] = cleared
        else:
            out["pending_wh"] = cleared
    column = "d_export_wh" if side == "sell" else "d_import_wh"
    row = conn.execute(
        f"SELECT {column} FROM readings WHERE meter = ? AND interval = ?", (meter, interval)
    ).fetchone()
    return {**out, "metered_wh": None if row is None else row[0]}


def neighbours(conn, meter: str, start: int, end: int, label, owner) -> list[dict[str, Any]]:
    """Per counterparty and side over [start, end): settled energy and value (what the money table
    counts), the average price of the settled energy (value / energy, half-even), cleared but not
    yet settled energy apart, and the number of trades. ``label(meter)`` names the neighbour;
    ``owner(meter)`` is a meter's member: a counterparty of the same member is no neighbour but
    the household's own other meter (``own_meter``: clearing matches orders by meter, so a
    member's two meters may trade with each other, paying the grid fee and levies; docs/market.md)."""
    rows = conn.execute(
        "SELECT CASE WHEN s.side = 'sell' THEN t.buyer ELSE t.seller END AS other, s.side, count(*),"
        " sum(CASE WHEN s.status = 'settled' THEN coalesce(s.settled_wh, 0) ELSE 0 END),"
        " sum(CASE WHEN s.status = 'settled' THEN coalesce(s.s_value, 0) ELSE 0 END),"
        " sum(CASE WHEN s.status = 'cleared' THEN s.energy_wh ELSE 0 END),"
        " sum(CASE WHEN s.status = 'unsettled' THEN s.energy_wh ELSE 0 END)"
        " FROM trade_sides s JOIN trades t ON t.id = s.trade"
        " WHERE s.meter = ? AND s.interval >= ? AND s.interval < ? GROUP BY other, s.side",
        (meter, start, end),
    ).fetchall()
    mine = owner(meter)
    out = [
        {
            "meter": other,
            "name": label(other),
            "own_meter": mine is not None and owner(other) == mine,
            "side": side,
            "trades": count,
            "settled_wh": wh,
            "settled_value": value,
            "average_price_per_kwh": div_round_half_even(value * 1000, wh) if wh else None,
            "pending_wh": pending,
            "unsettled_wh": unsettled,
        }
        for other, side, count, wh, value, pending, unsettled in rows
    ]
    out.sort(key=lambda r: (r["side"] != "sell", -(r["settled_wh"] + r["pending_wh"]), r["name"]))
    return out


def shown_neighbour_values(rows: list[dict[str, Any]], shown: dict[str, int] | None) -> None:
    """Give each per-neighbour row its ``shown_value``: whole cents that add up, per side, to the
    money table's P2P earnings (sold) or P2P costs (bought) as shown (``shown_statement``), by the
    largest-remainder method, so the summary and the money table never differ by a rounding cent.
    Without a shown statement (readings missing) each value is rounded on its own."""
    for side, line in (("sell", "p2p_earnings"), ("buy", "p2p_cost")):
        mine = [r for r in rows if r["side"] == side]
        values = [r["settled_value"] for r in mine]
        try:
            rounded = largest_remainder(values, shown[line]) if shown is not None else None
        except ValueError:  # the rows do not sum to the line (cannot happen: the same settled trades)
            rounded = None
        if rounded is None:
            rounded = [round_to_step(v) for v in values]
        for r, v in zip(mine, rounded, strict=True):
            r["shown_value"] = v
