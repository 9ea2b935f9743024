"""Monthly statements: the ledger's figures for one member over one period, as integers (pure).

Input: a :class:`LedgerView` (what the ledger held up to one block: genesis, the governance
history of members, meters and parameters, the readings, and the ``trade``, ``settlement``,
``adjustment`` and ``balance`` results), read from a store by ``peerwatt/statements.py``.
Output: JSON-ready dicts of ints and strings (money in micro-units, energy in Wh, prices in
micro-units per kWh). No clock, float, randomness or I/O: anyone holding the chain re-derives
the same statement from the same height (docs/billing.md).

Rules (docs/billing.md has them in plain words):

- An interval ``X`` (``[X, X + interval_s)``) belongs to the period when ``start <= X < end``, and
  to a meter's billed days when ``enrolled_at <= X`` and ``X + interval_s <= revoked_at``: the
  metered energy of a meter outside its membership is never counted (its settlements cannot exist:
  orders are only accepted after enrolment and readings are refused after revocation).
- Money lines are the trades' settled amounts with later adjustments applied, per member (a meter's
  owner). Their sum equals the member's ``balance`` results for the period's intervals.
- A line is *provisional* while its interval may still be re-settled (a late or corrected reading
  is accepted until ``X + correction_window_intervals * interval_s``); *pending* energy was cleared
  but not yet settled (no money yet).
- Shown amounts (whole cents) add up: each group is rounded by the largest-remainder method to
  its rounded total (:func:`shown_parts`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from market.money import div_round_half_even
from market.params import GRIDOPS, METER, METER_THEN_GRIDOPS, with_defaults
from market.settlement import MISSING_READING, SETTLED, Reading, apply_adjustment, check_meter
from market.statement import household_statement

CENT = 10_000  # micro-units per shown cent
FORMAT = 2  # version of the statement's JSON layout (docs/billing.md: what each one holds)
FORMATS = (1, 2)  # layouts this version re-derives (1: without missing_reading flags)


@dataclass(frozen=True)
class MeterInfo:
    """An enrolled meter and its membership window (Unix s; ``revoked_at`` None while active)."""

    meter: str
    owner: str
    name: str
    serial: str
    capacity_w: int
    enrolled_at: int
    revoked_at: int | None = None


@dataclass
class LedgerView:
    """What the ledger held after block ``height`` (every list in ledger order)."""

    community: str
    timezone: str
    height: int
    block_hash: str
    block_time: int
    params: dict[str, Any]
    # (height, parameters in force after that block), ascending; the first is genesis
    param_history: list[tuple[int, dict[str, Any]]]
    members: dict[str, str]  # member id -> name (every member the ledger ever knew)
    removed_members: dict[str, int]  # member id -> time removed
    meters: dict[str, MeterInfo]
    readings: dict[str, dict[int, tuple[int, int, str]]]  # meter -> interval -> (imp, exp, serial)
    trades: list[dict[str, Any]] = field(default_factory=list)  # with "height"
    settlements: list[dict[str, Any]] = field(default_factory=list)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    balances: list[dict[str, Any]] = field(default_factory=list)
    erased_meters: set[str] = field(default_factory=set)
    # the grid operator's recorded data: meter -> interval -> (import_wh, export_wh, quality)
    gridops: dict[str, dict[int, tuple[int, int, str]]] = field(default_factory=dict)

    @cached_property
    def last_recorded(self) -> int | None:
        """The last interval any meter of the community has a record for, under the community's
        settlement source (a reading, or the grid operator's data); None: none yet. Once per
        view: a month-end run asks for it for every household (a scan of every record)."""
        source = self.params["settlement_source"]
        tables = [
            *(self.readings.values() if source != GRIDOPS else ()),
            *(self.gridops.values() if source != METER else ()),
        ]
        return max((max(t) for t in tables if t), default=None)


@dataclass(frozen=True)
class VatSetting:
    """The community's VAT on statements: a rate in basis points (2000 = 20 %) or not charged."""

    charged: bool
    rate_bp: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"charged": self.charged, "rate_bp": self.rate_bp, "note": self.note}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VatSetting:
        return cls(bool(d["charged"]), int(d["rate_bp"]), str(d["note"]))


# -- rounding for display --------------------------------------------------------------------


def round_cents(value: int) -> int:
    """``value`` (micro-units) rounded half-even to whole cents (still in micro-units)."""
    sign = -1 if value < 0 else 1
    return sign * div_round_half_even(abs(value), CENT) * CENT


def shown_parts(parts: Sequence[int], total: int) -> list[int]:
    """Round ``parts`` to whole cents so they add up to ``total`` (a whole-cent rounding of their
    sum): each part rounded down, the cents still missing to the largest remainders (ties in
    order). A part already in whole cents is never changed."""
    if total % CENT:
        raise ValueError("total must be whole cents")
    floors = [p // CENT for p in parts]
    missing = total // CENT - sum(floors)
    if not 0 <= missing <= sum(1 for p in parts if p % CENT):
        raise ValueError("total is not a rounding of the sum of the parts")
    order = sorted(range(len(parts)), key=lambda i: (-(parts[i] % CENT), i))
    bump = set(order[:missing])
    return [(f + (i in bump)) * CENT for i, f in enumerate(floors)]


# -- the period's figures --------------------------------------------------------------------


def _trade_key(sell_order: str, buy_order: str) -> str:
    return f"{sell_order[:24]}:{buy_order[:24]}"


def params_at(view: LedgerView, height: int) -> dict[str, Any]:
    """The market parameters in force after block ``height``."""
    chosen = view.param_history[0][1]
    for h, p in view.param_history:
        if h <= height:
            chosen = p
    return with_defaults(chosen)


def effective_settlements(view: LedgerView, start: int, end: int) -> list[dict[str, Any]]:
    """The settlements of the period's intervals with every later adjustment applied, each with
    the grid fee and levies rates in force when its trade cleared (``fee_rate``, ``levies_rate``)."""
    trade_height = {
        (t["interval"], _trade_key(t["sell_order"], t["buy_order"])): t["height"] for t in view.trades
    }
    effective: dict[tuple[int, str], dict[str, Any]] = {}
    for s in view.settlements:
        if start <= s["interval"] < end:
            key = (s["interval"], s["trade"])
            p = params_at(view, trade_height.get(key, s["height"]))
            effective[key] = dict(s, fee_rate=p["grid_fee_per_kwh"], levies_rate=p["levies_per_kwh"])
    for a in view.adjustments:
        s = effective.get((a["interval"], a["trade"]))
        if s is None:
            continue
        apply_adjustment(s, a)
    return list(effective.values())


def billed_window(meter: MeterInfo, start: int, end: int) -> tuple[int, int] | None:
    """[from, to) of the period in which ``meter`` was a member's enrolled meter, or None."""
    lo = max(start, meter.enrolled_at)
    hi = end if meter.revoked_at is None else min(end, meter.revoked_at)
    return (lo, hi) if lo < hi else None


def metered(
    view: LedgerView, meter: MeterInfo, start: int, end: int, interval_s: int, until: int | None = None
) -> tuple[int, int, list[str], int]:
    """Import and export (Wh) of ``meter`` over the intervals of [start, end) inside its billed
    window, by the settlement's rules and source: the grid operator's data for an interval where
    the community uses it and has it, else the readings (not under the ``gridops`` source);
    flags for the intervals left out, in interval order (``flag@interval`` as untrue, and with
    ``until`` given, ``missing_reading@first..last`` for those without their data, up to
    ``until``, the last interval any meter of the community has a record for: from the window's
    start under the grid operator's data and for a meter without any record, else from the
    interval after the meter's first reading, its baseline); the number of intervals taken from
    the grid operator's data."""
    window = billed_window(meter, start, end)
    if window is None:
        return 0, 0, [], 0
    source = view.params["settlement_source"]
    readings = view.readings.get(meter.meter, {}) if source != GRIDOPS else {}
    data = view.gridops.get(meter.meter, {}) if source != METER else {}
    imported = exported = from_gridops = 0
    flagged: list[tuple[int, str]] = []
    counted: set[int] = set()
    for interval in sorted(set(readings) | set(data)):
        if not (window[0] <= interval and interval + interval_s <= window[1]):
            continue
        row = data.get(interval)
        if row is not None:
            imported += row[0]
            exported += row[1]
            from_gridops += 1
            counted.add(interval)
            continue
        if interval not in readings:
            continue
        before = readings.get(interval - interval_s)
        if before is None:
            continue  # missing: flagged below (and by the settlement); nothing is guessed
        outcome = check_meter(
            Reading(*before), Reading(*readings[interval]), meter.capacity_w, interval_s, meter.serial
        )
        counted.add(interval)
        if isinstance(outcome, str):
            flagged.append((interval, f"{outcome}@{interval}"))
            continue
        imported += outcome.import_wh
        exported += outcome.export_wh
    if until is not None:
        lo = -(-window[0] // interval_s) * interval_s  # the first interval inside the window
        if source != GRIDOPS and (readings or data):  # a meter's first reading is its baseline
            lo = max(lo, min([*(i + interval_s for i in readings), *data]))
        hi = min(until, window[1] - interval_s)
        flagged += missing_reading_flags(
            [i for i in range(lo, hi + 1, interval_s) if i not in counted], interval_s
        )
    return imported, exported, [flag for _, flag in sorted(flagged)], from_gridops


# why a statement's intervals are left out, by the settlement source (its note in words)
LEFT_OUT_WHY = {
    METER: "without their readings or with readings that cannot be true",
    GRIDOPS: "without the grid operator's data",
    METER_THEN_GRIDOPS: (
        "without the grid operator's data and their readings, or with readings that cannot be true"
    ),
}


def missing_reading_flags(missing: Sequence[int], interval_s: int) -> list[tuple[int, str]]:
    """``missing`` interval starts (ascending) as ``(first, "missing_reading@first..last")`` per
    run of consecutive intervals (``missing_reading@first`` for a run of one)."""
    runs: list[list[int]] = []
    for i in missing:
        if runs and runs[-1][-1] == i - interval_s:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [
        (run[0], f"{MISSING_READING}@{run[0]}" + (f"..{run[-1]}" if len(run) > 1 else "")) for run in runs
    ]


def left_out_count(flags: Sequence[str], interval_s: int) -> int:
    """How many intervals ``flags`` (``flag@interval`` or ``flag@first..last``, optionally after
    a ``meter:`` prefix) leave out."""
    count = 0
    for flag in flags:
        first, _, last = flag.rpartition("@")[2].partition("..")
        count += (int(last) - int(first)) // interval_s + 1 if last else 1
    return count


def awaits_gridops(view: LedgerView, settlement: dict[str, Any], interval_s: int) -> bool:
    """Whether a settled trade may still change when the grid operator's data arrives: the
    community uses that data, the interval is within ``gridops_window_s``, and the data of its
    seller or buyer is missing or only estimated."""
    p = view.params
    interval = settlement["interval"]
    if p["settlement_source"] == METER or interval + interval_s + p["gridops_window_s"] < view.block_time:
        return False
    rows = [view.gridops.get(m, {}).get(interval) for m in (settlement["seller"], settlement["buyer"])]
    return any(row is None or row[2] == "estimated" for row in rows)


@dataclass(frozen=True)
class _Owned:
    """A settlement as the statement formula reads it, with meters replaced by their owners."""

    seller: str
    buyer: str
    settled_wh: int
    value: int
    grid_fee: int
    levies: int
    status: str


def members_to_bill(view: LedgerView, start: int, end: int) -> list[str]:
    """Members with an enrolled meter during the period or a balance change for its intervals."""
    chosen = {m.owner for m in view.meters.values() if billed_window(m, start, end) is not None}
    chosen |= {
        b["account"] for b in view.balances if start <= b["interval"] < end and b["account"] in view.members
    }
    return sorted(chosen)


def _line(code: str, label: str, energy_wh: int, rate: int | None, amount: int, provisional: int) -> dict:
    return {
        "code": code,
        "label": label,
        "energy_wh": energy_wh,
        "rate": rate,
        "amount": amount,
        "provisional": provisional,
    }


def member_statement(
    view: LedgerView,
    member: str,
    *,
    period: str,
    start: int,
    end: int,
    vat: VatSetting,
    currency: str = "EUR",
    layout: int = FORMAT,
) -> dict[str, Any]:
    """The statement figures of ``member`` for intervals in [start, end) as of the view's block
    (no number yet: numbering is the issuer's; see :func:`with_number`), in JSON layout
    ``layout`` (one of :data:`FORMATS`: an older one to re-derive a statement issued in it)."""
    if layout not in FORMATS:
        raise ValueError(f"statement format {layout!r} is not one this version knows ({FORMATS})")
    p = view.params
    interval_s = p["interval_s"]
    final_before = view.block_time - p["correction_window_intervals"] * interval_s
    owner = {m.meter: m.owner for m in view.meters.values()}
    own_meters = sorted((m for m in view.meters.values() if m.owner == member), key=lambda m: m.meter)

    # metered energy, per meter inside its membership
    meters_out = []
    import_wh = export_wh = 0
    flags: list[str] = []
    notes: list[str] = []
    until = view.last_recorded if layout >= 2 else None
    for m in own_meters:
        window = billed_window(m, start, end)
        if window is None:
            continue
        imp, exp, fl, from_gridops = metered(view, m, start, end, interval_s, until)
        import_wh += imp
        export_wh += exp
        flags += [f"{m.meter[:8]}:{f}" for f in fl]
        left_out = left_out_count(fl, interval_s)
        if left_out and layout >= 2:
            notes.append(
                f"meter {m.name or m.meter[:8]} ({m.meter[:8]}): {left_out} interval(s) not billed, "
                f"{LEFT_OUT_WHY[p['settlement_source']]} (flags below); its metered energy is incomplete"
            )
        if m.meter in view.erased_meters:
            notes.append(f"meter {m.meter[:8]}: readings erased; metered energy incomplete")
        meter_out = {
            "meter": m.meter,
            "name": m.name,
            "serial": m.serial,
            "billed_from": window[0],
            "billed_to": window[1],
            "import_wh": imp,
            "export_wh": exp,
        }
        if p["settlement_source"] != METER:
            meter_out["gridops_intervals"] = from_gridops
        if layout >= 2:
            meter_out["intervals_left_out"] = left_out
        meters_out.append(meter_out)

    # money: settled trades (adjusted), by counterparty and by rate
    settled = [
        s
        for s in effective_settlements(view, start, end)
        if member in (owner.get(s["seller"]), owner.get(s["buyer"]))
    ]
    bought: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # counterparty -> wh, value, prov
    sold: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    fees: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # rate -> wh, amount, prov
    levies: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    unsettled_bought = unsettled_sold = 0
    for s in settled:
        provisional = s["interval"] >= final_before or awaits_gridops(view, s, interval_s)
        as_buyer = owner.get(s["buyer"]) == member
        as_seller = owner.get(s["seller"]) == member
        if s["status"] != SETTLED:
            unsettled_bought += s["energy_wh"] if as_buyer else 0
            unsettled_sold += s["energy_wh"] if as_seller else 0
            continue
        if as_buyer:
            row = bought[owner.get(s["seller"], s["seller"])]
            row[0] += s["settled_wh"]
            row[1] += s["value"]
            row[2] += s["value"] if provisional else 0
            for table, rate, amount in (
                (fees, s["fee_rate"], s["grid_fee"]),
                (levies, s["levies_rate"], s["levies"]),
            ):
                table[rate][0] += s["settled_wh"]
                table[rate][1] += amount
                table[rate][2] += amount if provisional else 0
        if as_seller:
            row = sold[owner.get(s["buyer"], s["buyer"])]
            row[0] += s["settled_wh"]
            row[1] += s["value"]
            row[2] += s["value"] if provisional else 0

    # cleared but not yet settled
    done = {(s["interval"], s["trade"]) for s in view.settlements}
    pending_bought = pending_sold = 0
    for t in view.trades:
        if not start <= t["interval"] < end:
            continue
        if (t["interval"], _trade_key(t["sell_order"], t["buy_order"])) in done:
            continue
        pending_bought += t["energy_wh"] if owner.get(t["buyer"]) == member else 0
        pending_sold += t["energy_wh"] if owner.get(t["seller"]) == member else 0

    def avg(value: int, wh: int) -> int | None:
        return div_round_half_even(value * 1000, wh) if wh else None

    def parties(table: dict[str, list[int]]) -> list[dict[str, Any]]:
        return [
            {
                "member": cp,
                "name": view.members.get(cp, ""),
                "energy_wh": v[0],
                "amount": v[1],
                "provisional": v[2],
                "avg_price": avg(v[1], v[0]),
            }
            for cp, v in sorted(table.items())
        ]

    sold_wh = sum(v[0] for v in sold.values())
    bought_wh = sum(v[0] for v in bought.values())
    earnings = sum(v[1] for v in sold.values())
    cost = sum(v[1] for v in bought.values())
    lines = [
        _line(
            "p2p_earnings",
            "Energy sold to neighbours",
            sold_wh,
            avg(earnings, sold_wh),
            earnings,
            sum(v[2] for v in sold.values()),
        ),
        _line(
            "p2p_cost",
            "Energy bought from neighbours",
            bought_wh,
            avg(cost, bought_wh),
            -cost,
            -sum(v[2] for v in bought.values()),
        ),
    ]
    for rate in sorted(fees):
        wh, amount, prov = fees[rate]
        lines.append(_line(f"grid_fees@{rate}", "Grid fee on energy bought", wh, rate, -amount, -prov))
    for rate in sorted(levies):
        wh, amount, prov = levies[rate]
        lines.append(_line(f"levies@{rate}", "Levies on energy bought", wh, rate, -amount, -prov))
    net = sum(line["amount"] for line in lines)

    # the ledger's own balance changes for the period's intervals (must equal the lines)
    movement = sum(
        b["delta"] for b in view.balances if b["account"] == member and start <= b["interval"] < end
    )
    before = sum(b["delta"] for b in view.balances if b["account"] == member and b["interval"] < start)
    if movement != net:
        notes.append(f"ledger balance changes {movement} differ from the statement's lines {net}")

    vat_amount = div_round_half_even(net * vat.rate_bp, 10_000) if vat.charged else 0
    total = net + vat_amount

    # savings against the grid-only baseline (tariffs in force at the view's block)
    objs = [
        _Owned(
            owner.get(s["seller"], s["seller"]),
            owner.get(s["buyer"], s["buyer"]),
            s["settled_wh"],
            s["value"],
            s["grid_fee"],
            s["levies"],
            s["status"],
        )
        for s in settled
    ]
    try:
        hs = household_statement(
            member,
            import_wh=import_wh,
            export_wh=export_wh,
            trades=objs,  # type: ignore[arg-type]
            retail_price_per_kwh=p["retail_price"],
            feed_in_price_per_kwh=p["feed_in_price"],
        )
        savings: dict[str, Any] | None = {
            "retail_price": hs.retail_price_per_kwh,
            "feed_in_price": hs.feed_in_price_per_kwh,
            "baseline_import_cost": hs.baseline_import_cost,
            "baseline_export_earnings": hs.baseline_export_earnings,
            "baseline_cost": hs.baseline_cost,
            "residual_import_wh": hs.residual_import_wh,
            "residual_import_cost": hs.residual_import_cost,
            "residual_export_wh": hs.residual_export_wh,
            "residual_export_earnings": hs.residual_export_earnings,
            "actual_cost": hs.actual_cost,
            "savings": hs.savings,
        }
    except ValueError as exc:
        savings = None
        notes.append(str(exc))

    # final: nothing after the period can be billed any more. The member is removed (no meter can
    # be enrolled for it) and none of its meters is active after the period (a removed member's
    # meters stay enrolled and trade until each is revoked: docs/governance.md)
    billed_after = member not in view.removed_members or any(
        m.revoked_at is None or m.revoked_at > end for m in own_meters
    )
    statement: dict[str, Any] = {
        "format": layout,
        "kind": "statement",
        "community": view.community,
        "period": period,
        "period_start": start,
        "period_end": end,
        "timezone": view.timezone,
        "currency": currency,
        "member": member,
        "member_name": view.members.get(member, ""),
        "final": not billed_after,
        "ledger": {"height": view.height, "block_hash": view.block_hash, "block_time": view.block_time},
        "meters": meters_out,
        "energy": {
            "import_wh": import_wh,
            "export_wh": export_wh,
            "p2p_bought_wh": bought_wh,
            "p2p_sold_wh": sold_wh,
            "unsettled_bought_wh": unsettled_bought,
            "unsettled_sold_wh": unsettled_sold,
            "pending_bought_wh": pending_bought,
            "pending_sold_wh": pending_sold,
        },
        "bought_from": parties(bought),
        "sold_to": parties(sold),
        "lines": lines,
        "net": net,
        "provisional": sum(line["provisional"] for line in lines),
        "vat": {**vat.to_json(), "amount": vat_amount},
        "total": total,
        "balance": {"before": before, "period": movement, "after": before + movement},
        "savings": savings,
        "flags": flags,
        "notes": notes,
    }
    statement["shown"] = shown(statement)
    return statement


def shown_money(amounts: Sequence[int], vat: int, total: int) -> tuple[int, int, list[int]]:
    """The shown net, VAT and lines (in ``amounts``' order) of a document whose lines are
    ``amounts`` (their sum is its net) and VAT ``vat`` (micro-units), shown with the whole-cent
    ``total``: net and VAT to it, the lines to the net (:func:`shown_parts`)."""
    net, vat_amount = shown_parts([sum(amounts), vat], total)
    return net, vat_amount, shown_parts(amounts, net)


def line_order(code: str) -> tuple[int, int, str]:
    """Where a money line of code ``code`` stands among a statement's lines (as
    :func:`member_statement` makes them: earnings, cost, then the grid fees and the levies by
    rate), which decides who gets a cent on a tie (:func:`shown_parts`)."""
    group = {"p2p_earnings": 0, "p2p_cost": 1, "grid_fees": 2, "levies": 3}
    name, _, rate = code.partition("@")
    return (group.get(name, 4), int(rate) if rate.isdigit() else 0, code)


def shown(st: dict[str, Any]) -> dict[str, Any]:
    """Whole-cent amounts that add up: total; net and VAT to it; the lines to net; each P2P line's
    counterparties to it; savings = baseline - actual, and each one's parts to it."""
    total = round_cents(st["total"])
    net, vat_amount, lines = shown_money([line["amount"] for line in st["lines"]], st["vat"]["amount"], total)
    out: dict[str, Any] = {
        "total": total,
        "net": net,
        "vat": vat_amount,
        "lines": dict(zip((line["code"] for line in st["lines"]), lines, strict=True)),
    }
    by_code = out["lines"]
    out["sold_to"] = shown_parts([p["amount"] for p in st["sold_to"]], by_code["p2p_earnings"])
    out["bought_from"] = [
        -v for v in shown_parts([p["amount"] for p in st["bought_from"]], -by_code["p2p_cost"])
    ]
    s = st["savings"]
    if s is not None:
        savings = round_cents(s["savings"])
        baseline, minus_actual = shown_parts([s["baseline_cost"], -s["actual_cost"]], savings)
        base_imp, minus_base_exp = shown_parts(
            [s["baseline_import_cost"], -s["baseline_export_earnings"]], baseline
        )
        out["savings"] = {
            "savings": savings,
            "baseline_cost": baseline,
            "actual_cost": -minus_actual,
            "baseline_import_cost": base_imp,
            "baseline_export_earnings": -minus_base_exp,
        }
    return out


def with_number(statement: dict[str, Any], number: str, issued_at: str) -> dict[str, Any]:
    """The statement as issued: its number and issue date added (nothing else changes)."""
    return {**statement, "number": number, "issued_at": issued_at}


def statement_number(community: str, period: str, seq: int) -> str:
    """``oak-street-2026-06-0001``: gap-free per community and period."""
    return f"{community}-{period}-{seq:04d}"


def money_figures(st: dict[str, Any]) -> dict[str, int]:
    """The money a statement (or a note's corrected figures) states, by line code and total."""
    out = {line["code"]: line["amount"] for line in st["lines"]}
    out["vat"] = st["vat"]["amount"]
    out["total"] = st["total"]
    return out


# the energy a statement bills (metered, and traded with neighbours); its other energy figures are
# trades that moved no money (cleared and not yet settled, or never settled)
BILLED_ENERGY = ("import_wh", "export_wh", "p2p_bought_wh", "p2p_sold_wh")


def correction_note(
    previous: dict[str, Any], corrected: dict[str, Any], *, number: str, issued_at: str
) -> dict[str, Any] | None:
    """A credit note (the member is owed more) or debit note (owes more) for the difference
    between the figures last issued for a member and period (``previous``: a statement, or the
    ``corrected`` figures of the latest note) and those re-derived now; None when no money and no
    billed energy changed (found in a QA pass under the "gridops" source: a trade cleared before
    its buyer left, whose data never came, went from "not yet settled" to "not settled" at the end
    of the grid operator's window, and a note of 0.00 was issued for it; a later change brings
    this one with it, the note being against the figures last issued). The original is never
    edited: the note references it."""
    note = note_between(previous, corrected, number=number, issued_at=issued_at)
    before, after = figures_of(previous)["energy"], corrected["energy"]
    if not any(note["deltas"].values()) and all(before[k] == after[k] for k in BILLED_ENERGY):
        return None
    return note


def figures_of(document: dict[str, Any]) -> dict[str, Any]:
    """A statement's own figures, or a credit or debit note's ``corrected`` figures."""
    return document if document["kind"] == "statement" else document["corrected"]


def note_between(
    previous: dict[str, Any], corrected: dict[str, Any], *, number: str, issued_at: str
) -> dict[str, Any]:
    """The note from ``previous``'s figures to ``corrected`` (see :func:`correction_note`),
    whether or not it changes anything."""
    base = figures_of(previous)
    before, after = money_figures(base), money_figures(corrected)
    codes = sorted(set(before) | set(after))
    deltas = {c: after.get(c, 0) - before.get(c, 0) for c in codes}
    original = previous.get("references", previous["number"])
    return {
        "format": FORMAT,
        "kind": "credit_note" if deltas["total"] >= 0 else "debit_note",
        "number": number,
        "issued_at": issued_at,
        "references": original,
        "replaces_figures_of": previous["number"],
        "community": corrected["community"],
        "period": corrected["period"],
        "member": corrected["member"],
        "member_name": corrected["member_name"],
        "currency": corrected["currency"],
        "ledger": corrected["ledger"],
        "previous_ledger": base["ledger"],
        "deltas": deltas,
        "total": deltas["total"],
        "shown_total": corrected["shown"]["total"] - base["shown"]["total"],
        "corrected": {k: v for k, v in corrected.items() if k not in ("number", "issued_at")},
    }


def note_shown(note: dict[str, Any]) -> dict[str, int]:
    """A credit or debit note's changes as the documents show them, in whole cents (micro-units):
    per line code of its ``deltas`` and for ``vat``, the figure shown on its corrected figures less
    the one shown on the figures it replaces; and ``total``, its ``shown_total``, which they add
    up to and which is paid. The replaced figures' shown cents are re-derived from the note itself
    (the corrected amounts less the deltas, shown with the corrected shown total less the note's)
    by the rule :func:`shown` showed them with. Found in a QA pass: each delta rounded on its own
    printed lines of 0.01 + 0.00 + 0.08 and a total of 0.10 above "To be paid to you: EUR 0.09",
    the amount the SEPA file paid."""
    corrected = note["corrected"]
    deltas = note["deltas"]
    after = {line["code"]: line["amount"] for line in corrected["lines"]}
    codes = sorted((c for c in deltas if c not in ("vat", "total")), key=line_order)
    before_total = corrected["shown"]["total"] - note["shown_total"]
    _net, before_vat, before_lines = shown_money(
        [after.get(c, 0) - deltas[c] for c in codes], corrected["vat"]["amount"] - deltas["vat"], before_total
    )
    out = {c: corrected["shown"]["lines"].get(c, 0) - was for c, was in zip(codes, before_lines, strict=True)}
    out["vat"] = corrected["shown"]["vat"] - before_vat
    out["total"] = note["shown_total"]
    return out
