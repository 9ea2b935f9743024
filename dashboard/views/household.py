"""A household's page and API (login; own meters only, admin all): energy flows, history,
money, trades with receipts (inclusion proofs) and order explanations."""

from __future__ import annotations

import json
from datetime import date

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from markupsafe import Markup

from dashboard import household_view as hh
from dashboard.agent_status import not_configured
from dashboard.community import owners
from dashboard.params import MAX_DATE, MIN_DATE, arg_choice, arg_date
from dashboard.receipt_view import ReceiptError, build_receipt, parse_receipt, verify_receipt
from dashboard.timeutil import VIEWS, buckets, day_range, local_date, period
from dashboard.trades import FilterError, TradeFilter, parse_public_id, query_page
from dashboard.views.common import ledger_today, names, own_meters, require_meter, services, viewer

bp = Blueprint("household", __name__)
NOT_YOURS = "This trade is not yours to see (or there is no such trade)."


@bp.app_template_filter("exact_wh")
def exact_wh(energy_wh: int) -> Markup:
    """The attributes that carry a figure's exact watt-hours next to its rounded text (``12.35
    kWh`` reads ``12,347 Wh`` on hover): ``data-wh="12347" title="12,347 Wh"``."""
    wh = int(energy_wh)
    return Markup(f'data-wh="{wh}" title="{wh:,} Wh"')


def _within(day: date) -> str | None:
    """``day`` as YYYY-MM-DD if the household page takes it (``date=``), else None."""
    return day.isoformat() if MIN_DATE <= day <= MAX_DATE else None


def _summary(meter: str) -> dict:
    s = services()
    ledger = s.ledger
    tz = ledger.community.tz
    params = ledger.params()
    view = arg_choice("view", VIEWS, "day")
    today = ledger_today()
    anchor = arg_date("date") or today
    p = period(view, anchor, tz)
    conn = s.index.conn
    directory = names()
    households = owners(ledger.meters())
    today_start, today_end = day_range(today, tz)
    owner = directory.owner(meter)
    subunit = current_app.config["CURRENCY_SUBUNIT"]
    # how the page names the period in sentences: "today", "on 2025-06-03", "in June 2025"
    if view == "day":
        words = "today" if p.anchor == today else f"on {p.anchor.isoformat()}"
    else:
        words = f"in {p.label}"
    left = hh.departure(ledger, conn, meter)  # what the ledger says of the household's leaving
    # its metered energy counts inside its billed window, as on its statement
    billed = hh.Billed(hh.billed_meter(ledger, conn, meter), params["interval_s"])
    statement = hh.statement(conn, meter, p.start, p.end, params, billed)
    neighbours = hh.neighbours(conn, meter, p.start, p.end, directory.label, directory.owner)
    hh.shown_neighbour_values(neighbours, statement["shown"])
    return {
        "meter": meter,
        "name": directory.label(meter),
        "serial": ledger.meters().get(meter, {}).get("serial"),
        "owner": owner,
        "interval_s": params["interval_s"],  # the community's delivery interval (the page's words)
        "balance": ledger.balances().get(meter, ledger.balances().get(owner or "", 0)),
        "today": {"date": today.isoformat(), "flows": hh.flows(conn, meter, today_start, today_end, billed)},
        "period": {
            "view": view,
            "label": p.label,
            "date": p.anchor.isoformat(),
            "start": p.start,
            "end": p.end,
            "first_date": p.anchor.isoformat() if view == "day" else local_date(p.start, tz).isoformat(),
            "last_date": p.anchor.isoformat() if view == "day" else local_date(p.end - 1, tz).isoformat(),
            # None at the edges of the dates the page takes (2000-01-01..2100-12-31): a link
            # there would lead to a 400
            "prev": _within(p.prev_anchor),
            "next": _within(p.next_anchor),
            "words": words,
            "is_today": view == "day" and p.anchor == today,
            "flows": hh.flows(conn, meter, p.start, p.end, billed),
        },
        "left": left,
        "agent": (
            not_configured(left)
            if s.agent_status is None
            else s.agent_status.health(meter, current_app.config["AGENT_HEARTBEAT_S"], left)
        ),
        "neighbours": neighbours,
        "statement": statement,
        "neighbour_names": current_app.config["NEIGHBOUR_NAMES"],
        "history": hh.history(conn, meter, buckets(p, params["interval_s"], tz), billed),
        "orders": [
            o
            for o in hh.orders(
                conn,
                meter,
                p.start,
                p.end,
                subunit,
                own_meters(),
                full=viewer().is_admin,
                owner_of=households,
            )
            if o["filled_wh"] < o["energy_wh"]
        ]
        if view == "day"
        else [],
    }


@bp.route("/household")
@login_required
def mine():
    user = viewer()
    if user.is_admin:
        return render_template("households.html", households=names().households())
    return redirect(url_for("household.page", meter=sorted(user.meters)[0]))


@bp.route("/household/<meter>")
@login_required
def page(meter: str):
    require_meter(meter)
    data = _summary(meter)
    s = services()
    recent = query_page(s.index.conn, TradeFilter(meters=(meter,), limit=20), s.ledger.community.tz, names())
    period_csv = url_for(
        "trades.csv",
        household=meter,
        **{"from": data["period"]["first_date"], "to": data["period"]["last_date"]},
    )
    return render_template("household.html", d=data, trades=recent.rows, csv_url=period_csv)


@bp.route("/api/v1/households")
@login_required
def api_list():
    user = viewer()
    directory = names()
    meters = (
        directory.households() if user.is_admin else [(m, directory.label(m)) for m in sorted(user.meters)]
    )
    return jsonify(households=[{"meter": m, "name": n} for m, n in meters])


@bp.route("/api/v1/households/<meter>")
@login_required
def api_summary(meter: str):
    require_meter(meter)
    return jsonify(_summary(meter))


@bp.route("/api/v1/households/<meter>/history")
@login_required
def api_history(meter: str):
    require_meter(meter)
    data = _summary(meter)
    return jsonify(period=data["period"], history=data["history"])


@bp.route("/api/v1/households/<meter>/orders")
@login_required
def api_orders(meter: str):
    require_meter(meter)
    s = services()
    day = arg_date("date") or ledger_today()
    start, end = day_range(day, s.ledger.community.tz)
    subunit = current_app.config["CURRENCY_SUBUNIT"]
    found = hh.orders(
        s.index.conn,
        meter,
        start,
        end,
        subunit,
        own_meters(),
        full=viewer().is_admin,
        owner_of=owners(s.ledger.meters()),
    )
    return jsonify(date=day.isoformat(), orders=found)


def _trade(trade_id: str) -> dict:
    """The trade row behind a public id, if the viewer is one of its parties (or admin)."""
    s = services()
    interval, key = parse_public_id(trade_id)  # a 400 for anything but a trade id
    user = viewer()
    row = s.index.conn.execute(
        "SELECT seller, buyer FROM trades WHERE interval = ? AND trade_key = ?", (interval, key)
    ).fetchone()
    # one answer for a trade of others and an id that does not exist: a guessed id learns nothing
    if row is None and user.is_admin:
        abort(404, "No such trade.")
    if row is None or not (user.may_see(row[0]) or user.may_see(row[1])):
        abort(403, NOT_YOURS)
    meters = None if user.is_admin else tuple(sorted(user.meters & {row[0], row[1]}))
    page = query_page(
        s.index.conn,
        TradeFilter(meters=meters, interval=interval, limit=500),
        s.ledger.community.tz,
        names(),
    )
    for trade in page.rows:
        if trade["id"] == trade_id:
            return trade
    abort(404, "No such trade.")


@bp.route("/trade/<trade_id>")
@login_required
def receipt_page(trade_id: str):
    trade = _trade(trade_id)
    s = services()
    receipt = build_receipt(s.ledger, s.index.conn, trade)
    adjustments = s.index.conn.execute(
        "SELECT delta_wh, delta_value, delta_grid_fee, delta_levies, reason, height FROM adjustments"
        " WHERE interval = ? AND trade_key = ? ORDER BY id",
        (trade["interval"], trade["id"].split(":", 1)[1]),
    ).fetchall()
    return render_template(
        "receipt.html",
        trade=trade,
        receipt=receipt,
        adjustments=adjustments,
        receipt_json=json.dumps(receipt, indent=1, sort_keys=True),
    )


@bp.route("/api/v1/receipts/<trade_id>")
@login_required
def api_receipt(trade_id: str):
    trade = _trade(trade_id)
    s = services()
    return jsonify(build_receipt(s.ledger, s.index.conn, trade))


@bp.route("/api/v1/receipts/<trade_id>/verify", methods=["POST"])
@login_required
def api_verify(trade_id: str):
    """Check a receipt server-side against the ledger: the one posted (JSON body), or else the
    ledger's own."""
    trade = _trade(trade_id)
    s = services()
    if request.data:
        try:
            receipt = parse_receipt(request.get_data(as_text=True))
        except ReceiptError as exc:
            raise FilterError(str(exc)) from None
    else:
        receipt = build_receipt(s.ledger, s.index.conn, trade)
    try:
        return jsonify(verify_receipt(receipt, trade, s.ledger, s.index.conn))
    except (KeyError, TypeError, AttributeError):
        raise FilterError("the posted receipt is missing fields") from None
