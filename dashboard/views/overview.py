"""The community overview (everyone): today's totals, prices and volumes, the live book, chain."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from dashboard.community import MAX_PRICE_DAYS, overview
from dashboard.params import arg_int
from dashboard.views.common import now, own_meters, services, viewer

bp = Blueprint("overview", __name__)


def _data() -> dict:
    s = services()
    days = arg_int("days", lo=1, hi=MAX_PRICE_DAYS, default=7)
    user = viewer()
    return overview(
        s.ledger,
        s.index.conn,
        days=days,
        own_meters=own_meters(),
        now=now(),
        full_book=user is not None and user.is_admin,
        logged_in=user is not None,
    )


@bp.route("/")
def page():
    return render_template("overview.html", data=_data())


@bp.route("/api/v1/overview")
def api():
    return jsonify(_data())
