"""The community overview (everyone): today's totals, prices and volumes, the live book, chain."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from dashboard.community import overview
from dashboard.views.common import arg_int, now, own_meters, services

bp = Blueprint("overview", __name__)


def _data() -> dict:
    s = services()
    return overview(s.ledger, s.index.conn, days=arg_int("days", 7), own_meters=own_meters(), now=now())


@bp.route("/")
def page():
    return render_template("overview.html", data=_data())


@bp.route("/api/v1/overview")
def api():
    return jsonify(_data())
