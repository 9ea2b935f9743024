"""Reports from a node's store with pandas: the read side, outside the ledger (the market app
itself never reads SQLite nor imports pandas; this module reads the store and uses the app's
settlement rules).

Tables: trades; settlements (with later adjustments applied); per-household totals (metered
import/export, P2P sold/bought, earnings, costs, grid-only baseline, savings — market/statement.py's
formula); and community KPIs as gsy-e defines them for a community (self-sufficiency = share of the
community's consumption met by energy produced in the community; self-consumption = share of the
community's production consumed in the community), or for one meter the same KPIs of its household
(its P2P purchases against its import, its P2P sales against its export: docs/market.md). Meters
see only what crosses the household's connection, so "production" and "consumption" here are the
exported and imported energy; energy a household uses behind its own meter is invisible to the
market and not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from chain.canonical import CanonicalError, loads_strict
from chain.store import Store, StoreError
from market.billing import billed_window, left_out_count, missing_reading_flags
from market.clearing import Trade
from market.params import with_defaults
from market.settlement import Reading, apply_adjustment, check_meter
from market.statement import household_statement
from peerwatt.statements import accepted_readings, registry

# the columns of the trades and settlements tables when the period has none, as the ledger's
# `trade` and `settlement` results (market/app.py) give them, keys in canonical (sorted) order,
# then the block's height (and the adjustments applied; a community settling on the grid
# operator's data adds `source` to the rows it has): the CSV has its header and reads back
# (found in a QA pass: a period without trades gave a 1-byte file that pandas.read_csv refused
# with EmptyDataError)
TRADE_COLUMNS = (*sorted({"kind", "interval", *(f.name for f in fields(Trade))}), "height")
SETTLEMENT_COLUMNS = (
    *sorted(
        "kind interval trade seller buyer energy_wh settled_wh price value grid_fee levies status flag"
        " flagged_meter".split()
    ),
    "height",
    "adjustments",
)

# the end of a report without one: after every interval (the ledger's integers are below 2**53)
_NO_END = 2**53


@dataclass(frozen=True)
class _Settled:
    """The fields of a settled trade the statement reads."""

    seller: str
    buyer: str
    settled_wh: int
    value: int
    grid_fee: int
    levies: int
    status: str


def _results(store: Store, kinds: set[str], start: int | None, end: int | None) -> list[dict[str, Any]]:
    rows = []
    for height, idx, data in store.results_of_kinds(kinds):
        try:
            result = loads_strict(data)
        except CanonicalError as exc:
            raise StoreError(
                f"{store.path}: result {idx} of block {height} is damaged ({exc});"
                " restore the data folder from a peer"
            ) from None
        interval = result.get("interval")
        if interval is not None and (
            (start is not None and interval < start) or (end is not None and interval >= end)
        ):
            continue
        rows.append(dict(result, height=height))
    return rows


def metered_intervals(
    readings: list[tuple[int, int, int, str]],
    start: int | None,
    end: int | None,
    interval_s: int,
    *,
    capacity_w: int | None = None,
    enrolled_serial: str | None = None,
    until: int | None = None,
    window: tuple[int, int] | None = None,
) -> tuple[dict[int, tuple[int, int]], list[str]]:
    """Import and export (Wh) of each interval in [start, end) bounded by two readings the
    settlement would trust, and a flag for each interval left out: ``flag@interval`` when its
    readings cannot be true (settlement's rules: another serial, a counter backwards, a jump
    beyond the enrolled capacity), ``missing_reading@interval`` when the ledger lacks one of its
    two readings (consecutive ones as ``missing_reading@first..last``, both interval starts).
    Readings are expected for every interval after the meter's first (its baseline) up to its
    last, or up to ``until`` (the last interval any meter of the community read, for a meter
    that fell silent; None: its own last). The flags are in interval order. (Found in a QA pass:
    an interval without its readings was left out silently, 27 % of a household's import.)

    With ``window`` (the meter's billed window, market.billing.billed_window: [enrolled, revoked)
    within the period), only the intervals inside it count and are flagged, as on its statement
    (``window[0] <= interval`` and ``interval + interval_s <= window[1]``): a reading from before
    the enrolment is only the baseline of the first interval inside it (found in a QA pass: the
    interval in which a household joined began before its enrolment, and its readings, accepted
    later, added 3,334 Wh to its import in the report and not on its statement)."""

    def inside(interval: int) -> bool:
        return (
            (start is None or interval >= start)
            and (end is None or interval < end)
            and (window is None or (window[0] <= interval and interval + interval_s <= window[1]))
        )

    metered: dict[int, tuple[int, int]] = {}
    flagged: list[tuple[int, str]] = []
    by_interval = {r[0]: r for r in readings}
    for interval, imp, exp, serial in readings:
        if not inside(interval):
            continue
        before = by_interval.get(interval - interval_s)
        if before is None:
            continue  # missing: flagged below (and in settlement), not guessed here
        outcome = check_meter(
            Reading(before[1], before[2], before[3]),
            Reading(imp, exp, serial),
            capacity_w if capacity_w is not None else 2**53,
            interval_s,
            enrolled_serial,
        )
        if isinstance(outcome, str):
            flagged.append((interval, f"{outcome}@{interval}"))
            continue
        metered[interval] = (outcome.import_wh, outcome.export_wh)
    if by_interval:
        first = min(by_interval)
        last = max(by_interval) if until is None else max(max(by_interval), until)
        missing = [
            i
            for i in range(first + interval_s, last + 1, interval_s)
            if inside(i) and (i not in by_interval or i - interval_s not in by_interval)
        ]
        flagged += missing_reading_flags(missing, interval_s)
    return metered, [flag for _, flag in sorted(flagged)]


def build_report(
    store: Store, *, start: int | None = None, end: int | None = None, meter: str | None = None
) -> dict[str, pd.DataFrame]:
    """All report tables for intervals in [start, end) (Unix s), optionally one meter's only.
    Tariffs are those in force at the end of the period (its last block; without ``end`` the
    ledger's last), so a vote after it does not change a past month's report. Each meter's
    metered energy counts the intervals inside its billed window, as its statement does
    (market.billing.billed_window: from its enrolment to its revocation). A ledger row that
    does not read (damaged or tampered with) is a StoreError naming it."""
    store.check_column("txs", "hash", bytes)  # (the readings are read by their raw rows' hashes)
    community = registry(store)  # genesis with every passed vote applied (peerwatt.statements)
    if end is not None:
        (at_end,) = store.conn.execute("SELECT max(height) FROM blocks WHERE time < ?", (end,)).fetchone()
        in_force = registry(store, at_end or 0).params
    else:
        in_force = community.params
    params = with_defaults({k: v for k, v in in_force.items() if k != "timezone"})
    meters = {  # genesis's and those enrolled by vote since (whose votes carry no meter name: the
        # owner's, as on the dashboard)
        m.meter: {
            "owner": m.owner,
            "name": m.name or community.members.get(m.owner, ""),
            "serial": m.serial,
            "capacity_w": m.capacity_w,
            "revoked_at": m.revoked_at,
        }
        for m in community.meters.values()
    }
    registered = community.meters
    if meter is not None and meter not in meters:
        raise ValueError(f"meter {meter} is not enrolled in this community")
    trades = _results(store, {"trade"}, start, end)
    settlements = _results(store, {"settlement"}, start, end)
    adjustments = _results(store, {"adjustment"}, start, end)
    effective: dict[tuple[int, str], dict[str, Any]] = {}
    for s in settlements:
        effective[(s["interval"], s["trade"])] = dict(s, adjustments=0)
    for a in adjustments:
        s = effective.get((a["interval"], a["trade"]))
        if s is None:
            continue
        apply_adjustment(s, a)
        s["adjustments"] += 1
    settled = list(effective.values())
    if meter is not None:
        trades = [t for t in trades if meter in (t["seller"], t["buyer"])]
        settled = [s for s in settled if meter in (s["seller"], s["buyer"])]
    readings, _erased = accepted_readings(store)
    households = []
    chosen = [meter] if meter is not None else sorted(meters)
    # the last interval the community's meters read: a meter silent since is missing readings
    read_until = max((max(own) for own in readings.values() if own), default=None)
    community: dict[int, list[int]] = {}  # interval -> [import Wh, export Wh] of the chosen meters
    for m in chosen:
        enrolled = meters.get(m, {})
        own = readings.get(m, {})
        info = registered[m]
        # the intervals its statement bills: inside its membership (docs/billing.md), up to its
        # revocation (so a revoked meter's readings are expected up to then, as on its statement)
        window = billed_window(
            info, info.enrolled_at if start is None else start, _NO_END if end is None else end
        )
        metered, flags = (
            metered_intervals(
                [(i, *own[i]) for i in sorted(own)],
                start,
                end,
                params["interval_s"],
                capacity_w=enrolled.get("capacity_w"),
                enrolled_serial=enrolled.get("serial"),
                until=read_until,
                window=window,
            )
            if window is not None
            else ({}, [])
        )
        for interval, (imp, exp) in metered.items():
            total = community.setdefault(interval, [0, 0])
            total[0] += imp
            total[1] += exp
        imported = sum(i for i, _ in metered.values())
        exported = sum(e for _, e in metered.values())
        objs = [
            _Settled(
                s["seller"], s["buyer"], s["settled_wh"], s["value"], s["grid_fee"], s["levies"], s["status"]
            )
            for s in settled
            if m in (s["seller"], s["buyer"])
        ]
        try:
            statement = asdict(
                household_statement(
                    m,
                    import_wh=imported,
                    export_wh=exported,
                    trades=objs,
                    retail_price_per_kwh=params["retail_price"],
                    feed_in_price_per_kwh=params["feed_in_price"],
                )
            )
            statement["note"] = ""
        except ValueError as exc:
            statement = {"meter": m, "import_wh": imported, "export_wh": exported, "note": str(exc)}
        statement["flags"] = " ".join(flags)  # intervals not counted, and why
        statement["intervals_left_out"] = left_out_count(flags, params["interval_s"])
        statement["name"] = meters.get(m, {}).get("name", "")
        statement["owner"] = meters.get(m, {}).get("owner", "")
        households.append(statement)
    trades_df = pd.DataFrame(trades) if trades else pd.DataFrame(columns=list(TRADE_COLUMNS))
    settlements_df = pd.DataFrame(settled) if settled else pd.DataFrame(columns=list(SETTLEMENT_COLUMNS))
    households_df = pd.DataFrame(households)
    total_import = int(households_df["import_wh"].sum()) if len(households_df) else 0
    total_export = int(households_df["export_wh"].sum()) if len(households_df) else 0
    done = [s for s in settled if s["status"] == "settled"]
    p2p_wh = sum(s["settled_wh"] for s in done)  # for one meter: its purchases and its sales
    # what the chosen meters bought and sold P2P: for the community both are every settled trade's
    # energy; for one meter, its own side of its trades (found in a QA pass: a meter that only
    # sold had its sales divided by its import, a "P2P share of consumption" of 170 %)
    bought_wh = sum(s["settled_wh"] for s in done if meter is None or s["buyer"] == meter)
    sold_wh = sum(s["settled_wh"] for s in done if meter is None or s["seller"] == meter)
    kpis = pd.DataFrame(
        [
            {
                "metered_import_wh": total_import,
                "metered_export_wh": total_export,
                "p2p_settled_wh": p2p_wh,
                "p2p_bought_wh": bought_wh,
                "p2p_sold_wh": sold_wh,
                "p2p_share_of_consumption": bought_wh / total_import if total_import else None,
                # imports balanced by the chosen meters' own exports in the same interval (for the
                # community, as the dashboard's overview: docs/dashboard.md)
                "self_sufficiency": (
                    sum(min(i, e) for i, e in community.values()) / total_import if total_import else None
                ),
                "self_consumption": sold_wh / total_export if total_export else None,
                "trades": len(trades),
                "settled_trades": len(done),
                "unsettled_trades": sum(1 for s in settled if s["status"] != "settled"),
                "savings_total": int(households_df["savings"].sum()) if "savings" in households_df else 0,
            }
        ]
    )
    return {"households": households_df, "trades": trades_df, "settlements": settlements_df, "kpis": kpis}
