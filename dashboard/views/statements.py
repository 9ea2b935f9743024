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
    """(billing folder, the period asked for or None, its documents, or why the register cannot
    be read); 403 for non-admins, so only the operator ever sees the register's path."""
    user = viewer()
    if user is None or not user.is_admin:
        abort(403, "The issued statements are for the community's operator.")
    period = request.args.get("period") or None
    if period is not None and not PERIOD_RE.fullmatch(period):
        abort(400, "period: use a month like 2026-06")
    s = services()
    billing = Path(current_app.config.get("BILLING_DIR") or s.ledger.data_dir / "billing")
    try:
        return billing, period, issued(billing, s.ledger.community.id, period), None
    except RegisterError as exc:
        return billing, period, [], str(exc)


@bp.route("/statements")
@login_required
def page():
    billing, period, docs, problem = _documents()
    return render_template(
        "statements.html",
        billing=billing,
        period=period,
        docs=docs,
        periods=periods(docs),
        kinds=KIND_WORDS,
        problem=problem,
    )


@bp.route("/api/v1/statements")
@login_required
def api():
    _, period, docs, problem = _documents()
    if problem is not None:  # not "nothing issued": a client must not read an empty list
        return jsonify(error=problem), 503
    return jsonify(period=period, statements=[d.to_json() for d in docs], periods=periods(docs))
