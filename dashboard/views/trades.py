"""Trade history (login): filters, sorting, keyset paging and the CSV of the filtered rows.

A household sees only trades of its own meters (asking for another meter is a 403); an admin
sees all and may filter by household.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, abort, jsonify, render_template, request, stream_with_context
from flask_login import login_required

from dashboard.params import (
    MAX_DATE,
    MAX_INT,
    MIN_DATE,
    arg_choice,
    arg_date,
    arg_int,
    arg_key_id,
    arg_local_datetime,
    arg_text,
)
from dashboard.timeutil import fmt_time, local_midnight
from dashboard.trades import (
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    SIDES,
    SORTS,
    FilterError,
    TradeFilter,
    csv_chunks,
    query_page,
)
from dashboard.views.common import names, services, viewer

bp = Blueprint("trades", __name__)
# the query keys trade_filter reads: the only ones the page carries into its links (a key such as
# _method or _external would be an option of url_for, not a filter)
FILTER_KEYS = ("household", "interval", "at", "from", "to", "side", "sort", "order", "limit")


def trade_filter() -> TradeFilter:
    """The filter of the request's query string, restricted to what the viewer may see."""
    user = viewer()
    if user is None:
        abort(401)
    household = arg_key_id("household")
    if household is not None:
        if not user.may_see(household):
            abort(403, "This household's trades are not yours to see.")
        meters: tuple[str, ...] | None = (household,)
    else:
        meters = None if user.is_admin else tuple(sorted(user.meters))
    ledger = services().ledger
    interval_s = ledger.params()["interval_s"]
    interval = arg_int("interval", lo=0, hi=MAX_INT)  # Unix seconds: for API clients
    if interval is not None:
        # like at: the delivery interval containing it (a time inside one matched no trade while
        # the date-time field showed its interval's start, which has trades: found in a QA pass)
        interval -= interval % interval_s
    at = arg_local_datetime("at", ledger.community.tz)  # what people type: a local date-time
    if at is not None:
        containing = at - at % interval_s
        if interval is not None and interval != containing:
            raise FilterError("give the interval either as at (local date-time) or as interval, not both")
        interval = containing
    return TradeFilter(
        meters=meters,
        date_from=arg_date("from"),
        date_to=arg_date("to"),
        side=arg_choice("side", SIDES, None),
        interval=interval,
        sort=arg_choice("sort", SORTS, "time"),
        descending=arg_choice("order", ("asc", "desc"), "desc") == "desc",
        limit=arg_int("limit", lo=1, hi=MAX_LIMIT, default=50),
    ).check()


def _page():
    s = services()
    f = trade_filter()
    page = query_page(
        s.index.conn,
        f,
        s.ledger.community.tz,
        names(),
        after=arg_text("after", max_len=MAX_CURSOR_LENGTH),
        before=arg_text("before", max_len=MAX_CURSOR_LENGTH),
    )
    return f, page


@bp.route("/trades")
@login_required
def page():
    f, page = _page()
    user = viewer()
    directory = names()
    households = (
        directory.households() if user.is_admin else [(m, directory.label(m)) for m in sorted(user.meters)]
    )
    args = {k: v for k, v in request.args.items() if k in FILTER_KEYS}
    tz = services().ledger.community.tz
    at_value = args.get("at", "")
    # an interval given inside a delivery interval shows that interval, and the page says so
    asked = args.get("interval")
    snapped = asked if asked is not None and f.interval is not None and int(asked) != f.interval else None
    # an interval given in Unix seconds is shown in the date-time field only where the field
    # takes it back (dates MIN_DATE..MAX_DATE); any other stays in the address, the field empty
    if f.interval is not None and not at_value:
        if local_midnight(MIN_DATE, tz) <= f.interval < local_midnight(MAX_DATE + timedelta(days=1), tz):
            at_value = fmt_time(f.interval, tz, "%Y-%m-%dT%H:%M")
    # a household filter of a well-formed key id that is no meter of this community (only an
    # admin gets this far with one): the page says so, rather than a select reading "All
    # households" over a list that is empty because it is filtered (found in a QA pass)
    chosen = args.get("household")
    unknown = chosen if chosen and chosen not in {m for m, _ in households} else None
    return render_template(
        "trades.html",
        page=page,
        f=f,
        households=households,
        args=args,
        sorts=SORTS,
        at_value=at_value,
        unknown_household=unknown,
        snapped_interval=snapped,
        # the other filters stay, but a side, which needs a household
        all_households={k: v for k, v in args.items() if k not in ("household", "side")},
    )


@bp.route("/api/v1/trades")
@login_required
def api():
    _, page = _page()
    return jsonify(trades=page.rows, next=page.next_cursor, prev=page.prev_cursor)


@bp.route("/api/v1/trades.csv")
@login_required
def csv():
    s = services()
    f = trade_filter()
    chunks = csv_chunks(s.index.conn, f, s.ledger.community.tz, names(), s.ledger.params()["interval_s"])
    first = next(chunks)  # filter errors surface before the response starts
    name = f"peerwatt-trades-{s.ledger.community.id}.csv"

    def body():
        yield first
        yield from chunks

    return Response(
        stream_with_context(body()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
