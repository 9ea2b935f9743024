"""Ledger explorer (everyone; household data only for its household or an admin): blocks, a
block's transactions, results and seals, governance, and full verification runs."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from flask_login import login_required

from dashboard import explorer as ex
from dashboard.params import MAX_INT, arg_gov_cursor, arg_int, parse_int
from dashboard.views.common import names, pseudonyms_view, services, viewer

bp = Blueprint("explorer", __name__)
MAX_BLOCKS_PAGE = 200
MAX_PROPOSALS_PAGE = 200


def _height(text: str) -> int:
    """A block height from the URL (a 400 for anything but 0..2**53-1)."""
    return parse_int("height", text, lo=0, hi=MAX_INT)


def _chain() -> dict:
    s = services()
    ledger = s.ledger
    head = ledger.head()
    return {
        "community": ledger.community.id,
        "genesis_hash": ledger.community.genesis_hash,
        "height": head.height,
        "head_hash": head.hash,
        "head_time": head.time,
        "validators": [{"id": k, "name": v.get("name", "")} for k, v in sorted(ledger.validators().items())],
        "quorum": ledger.quorum(),
        "proposer": ledger.sequencer(),
        "failovers": ledger.failovers(),
        "indexed_height": s.indexer.indexed_height(),
        "verify": s.verifier.latest(),
        "verify_running": s.verifier.running,
        "verify_rest_s": s.verifier.rest_s(),
    }


@bp.route("/explorer")
def page():
    s = services()
    listing = ex.blocks(s.ledger, before=arg_int("before", lo=0, hi=MAX_INT))
    return render_template("explorer.html", chain=_chain(), listing=listing)


@bp.route("/explorer/blocks/<height>")
def block_page(height: str):
    s = services()
    data = ex.block(s.ledger, s.index.conn, _height(height), viewer(), pseudonyms_view())
    if data is None:
        abort(404, f"No block at height {height}.")
    # the head has no "next block" link: it would be a 404 until the next block is final
    return render_template("block.html", b=data, directory=names(), head=s.ledger.head().height)


def _governance(limit: int | None = None) -> dict:
    """A page of proposals (``before``: the cursor of the page before; ``limit`` 1..200)."""
    s = services()
    before = arg_gov_cursor("before")
    if limit is None:
        limit = arg_int("limit", lo=1, hi=MAX_PROPOSALS_PAGE, default=ex.PAGE)
    return ex.governance(s.ledger, s.index.conn, viewer(), pseudonyms_view(), before=before, limit=limit)


@bp.route("/explorer/governance")
def governance_page():
    listing = _governance()
    return render_template(
        "governance.html",
        proposals=listing["proposals"],
        listing=listing,
        first_page=request.args.get("before") is None,
        directory=names(),
    )


@bp.route("/explorer/verify", methods=["POST"])
@login_required
def verify_start():
    services().verifier.start(viewer().name)
    return redirect(url_for("explorer.page") + "#verify")


@bp.route("/api/v1/chain")
def api_chain():
    return jsonify(_chain())


@bp.route("/api/v1/blocks")
def api_blocks():
    before = arg_int("before", lo=0, hi=MAX_INT)
    limit = arg_int("limit", lo=1, hi=MAX_BLOCKS_PAGE, default=ex.PAGE)
    return jsonify(ex.blocks(services().ledger, before=before, limit=limit))


@bp.route("/api/v1/blocks/<height>")
def api_block(height: str):
    s = services()
    data = ex.block(s.ledger, s.index.conn, _height(height), viewer(), pseudonyms_view())
    if data is None:
        abort(404, f"No block at height {height}.")
    return jsonify(data)


@bp.route("/api/v1/governance")
def api_governance():
    return jsonify(_governance())


@bp.route("/api/v1/verify", methods=["GET", "POST"])
def api_verify():
    s = services()
    if request.method == "POST":
        if viewer() is None:
            return jsonify(error="login required"), 401
        started = s.verifier.start(viewer().name)
        if started:
            return jsonify(started=True, running=True), 202
        rest = s.verifier.rest_s()
        response = jsonify(started=False, running=s.verifier.running, retry_after_s=rest)
        if rest:
            response.headers["Retry-After"] = str(rest)
        return response, 409
    return jsonify(latest=s.verifier.latest(), running=s.verifier.running)
