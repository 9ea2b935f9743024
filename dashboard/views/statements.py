"""The operator's page of issued statements (issue 20 item 1): every statement and correction note
the treasurer issued with `peerwatt statements`, per month, with its total, the ledger height it was
computed from and whether it was marked paid. Admins only (statements are per-household money)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, render_template, request
from flask_login import login_required

from dashboard.statements import KIND_WORDS, PERIOD_RE, RegisterError, issued, periods
from dashboard.views.common import services, viewer

bp = Blueprint("statements", __name__)


def _documents():
    """(billing folder, the period asked for or None, its documents); 403 for non-admins."""
    user = viewer()
    if user is None or not user.is_admin:
        abort(403, "The issued statements are for the community's operator.")
    period = request.args.get("period") or None
    if period is not None and not PERIOD_RE.fullmatch(period):
        abort(400, "period: use a month like 2026-06")
    s = services()
    billing = Path(current_app.config.get("BILLING_DIR") or s.ledger.data_dir / "billing")
    try:
        docs = issued(billing, s.ledger.community.id, period)
    except RegisterError as exc:
        abort(500, str(exc))
    return billing, period, docs


@bp.route("/statements")
@login_required
def page():
    billing, period, docs = _documents()
    return render_template(
        "statements.html",
        billing=billing,
        period=period,
        docs=docs,
        periods=periods(docs),
        kinds=KIND_WORDS,
    )


@bp.route("/api/v1/statements")
@login_required
def api():
    _, period, docs = _documents()
    return jsonify(period=period, statements=[d.to_json() for d in docs], periods=periods(docs))
