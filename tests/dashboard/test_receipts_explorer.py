"""Receipts (inclusion proofs checked against sealed headers), the ledger explorer with its
redaction, governance, and the background full-verify run."""

from __future__ import annotations

import copy
import json
import time

from chain.block import header_hash
from chain.merkle import leaf_hash, proof_from_hex, verify_inclusion
from chain.store import Store
from dashboard.receipt_view import verify_receipt


def token(client) -> str:
    return client.get("/").get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]


def settled_trade(client, meter: str) -> dict:
    rows = client.get(f"/api/v1/trades?household={meter}&limit=100").get_json()["trades"]
    return next(r for r in rows if r["status"] == "settled")


def test_receipt_proves_trade_and_settlement_against_sealed_headers(as_villa, built):
    trade = settled_trade(as_villa, built.meters[0])
    receipt = as_villa.get(f"/api/v1/receipts/{trade['id']}").get_json()
    assert [e["what"] for e in receipt["entries"]] == ["trade", "settlement"]
    for e in receipt["entries"]:  # checked here with chain.merkle directly, not the dashboard
        from chain.canonical import dumps_checked

        assert verify_inclusion(
            leaf_hash(dumps_checked(e["result"])),
            e["index"],
            e["tree_size"],
            proof_from_hex(e["proof"]),
            bytes.fromhex(e["header"]["result_root"]),
        )
        assert header_hash(e["header"]).hex() == e["header_hash"]
        assert len(e["seals"]) == 3 and e["quorum"] == 3
    verdict = as_villa.post(
        f"/api/v1/receipts/{trade['id']}/verify", headers={"X-CSRFToken": token(as_villa)}
    )
    result = verdict.get_json()
    assert result["ok"] is True and len(result["entries"]) == 2
    assert all(c["ok"] for e in result["entries"] for c in e["checks"])
    # the check counts results as the receipt page does, from 1 ("result 25 of 30" beside the
    # page's "26 of 30" was found in a QA pass)
    page = as_villa.get(f"/trade/{trade['id']}").get_data(as_text=True)
    for e, checked in zip(receipt["entries"], result["entries"], strict=True):
        position = f"{e['index'] + 1} of {e['tree_size']}"
        assert f"<dd>{position} in the block</dd>" in page
        proof = next(c for c in checked["checks"] if c["check"] == "inclusion proof")
        where = f"in block {e['header']['height']} (leaf index {e['index']})"
        assert f"result {position} {where}" in proof["detail"]


def test_tampered_receipts_fail_verification(app, as_villa, built):
    trade = settled_trade(as_villa, built.meters[0])
    receipt = as_villa.get(f"/api/v1/receipts/{trade['id']}").get_json()
    services = app.extensions["peerwatt"]

    def failing(mutate) -> set[str]:
        r = copy.deepcopy(receipt)
        mutate(r)
        with app.app_context():
            out = verify_receipt(r, trade, services.ledger, services.index.conn)
        assert out["ok"] is False
        return {c["check"] for e in out["entries"] for c in e["checks"] if not c["ok"]}

    assert failing(lambda r: r["entries"][0]["result"].update(value=10**9)) == {
        "inclusion proof",
        "trade result is the ledger's",
        "trade result is about this trade",
    }
    assert failing(lambda r: r["entries"][0]["header"].update(time=1)) >= {
        "header hash",
        "trade header is the ledger's",
    }
    assert failing(lambda r: r["entries"][1]["seals"].pop()) == {"seals reach the quorum"}
    assert failing(lambda r: r["entries"][0]["seals"][0].update(sig=r["entries"][0]["seals"][1]["sig"])) == {
        "seals reach the quorum"
    }
    assert failing(lambda r: r["entries"][0]["result"].update(seller="ff" * 16)) >= {
        "trade result is about this trade"
    }
    # the same through the API: a posted receipt is checked as posted
    bad = copy.deepcopy(receipt)
    bad["entries"][0]["proof"][0] = "00" * 32
    response = as_villa.post(
        f"/api/v1/receipts/{trade['id']}/verify",
        data=json.dumps(bad),
        headers={"X-CSRFToken": token(as_villa), "Content-Type": "application/json"},
    )
    assert response.get_json()["ok"] is False
    garbage = as_villa.post(
        f"/api/v1/receipts/{trade['id']}/verify", data="{not json", headers={"X-CSRFToken": token(as_villa)}
    )
    assert garbage.status_code == 400


def test_receipt_page_and_provisional_trade(as_flat, built):
    rows = as_flat.get(f"/api/v1/trades?household={built.meters[2]}&limit=5").get_json()["trades"]
    pending = rows[0]
    assert pending["status"] == "cleared"
    receipt = as_flat.get(f"/api/v1/receipts/{pending['id']}").get_json()
    assert [e["what"] for e in receipt["entries"]] == ["trade"]
    page = as_flat.get(f"/trade/{pending['id']}").get_data(as_text=True)
    assert "provisional" in page and 'id="verify-receipt"' in page and "Inclusion proof" in page


def test_explorer_lists_blocks_with_seals_and_pages(client, built):
    first = client.get("/api/v1/blocks?limit=10").get_json()
    assert [b["height"] for b in first["blocks"]] == list(range(351, 341, -1))
    assert all(b["seals"] == 3 for b in first["blocks"])
    older = client.get(f"/api/v1/blocks?limit=10&before={first['next_before']}").get_json()
    assert older["blocks"][0]["height"] == 341
    page = client.get("/explorer").get_data(as_text=True)
    assert "Full verification" in page and 'id="older-blocks"' in page
    assert 'id="proposer"' in page  # who proposes next, and the failovers so far (none here)
    assert "0 blocks made final after their first proposer was silent" in page


def test_block_detail_is_redacted_for_the_viewer(client, as_villa, as_admin, built):
    height = 200
    public = client.get(f"/api/v1/blocks/{height}").get_json()
    assert public["txs"] == [] and public["hidden_txs"] == public["tx_count"]
    assert {r["kind"] for r in public["results"]} <= {"clearing", "gov"}
    assert sum(public["hidden_results"].values()) + len(public["results"]) == public["result_count"]
    own = as_villa.get(f"/api/v1/blocks/{height}").get_json()
    assert own["txs"] and all(t["signer"] == built.meters[0] for t in own["txs"])
    assert all(t["body"] is not None and not t["erased"] for t in own["txs"])
    full = as_admin.get(f"/api/v1/blocks/{height}").get_json()
    assert len(full["txs"]) == full["tx_count"] and full["hidden_results"] == {}
    html = client.get(f"/explorer/blocks/{height}").get_data(as_text=True)
    assert "household data" in html and "result_root" in html
    assert client.get("/explorer/blocks/99999").status_code == 404


def test_governance_shows_the_vote(client, as_admin):
    proposals = client.get("/api/v1/governance").get_json()["proposals"]
    fee = next(p for p in proposals if p["args"] == {"name": "grid_fee_per_kwh", "value": 20_000})
    assert fee["outcome"] == "passed" and fee["yes"] == 4 and fee["votes"] == []  # who voted: login
    assert any(p["outcome"] == "open" for p in proposals)
    votes = next(
        p for p in as_admin.get("/api/v1/governance").get_json()["proposals"] if p["id"] == fee["id"]
    )
    assert sorted(v["vote"] for v in votes["votes"]) == ["no", "yes", "yes", "yes"]
    assert "grid operator" in client.get("/explorer/governance").get_data(as_text=True)


def test_overview_and_report_agree_on_the_day_s_shares(as_admin, built):
    """Found in a QA pass: for one day the overview said P2P share 41.0 % and self-sufficiency
    36.9 %, `peerwatt report` 19.35 % and 19.35 %: the overview divided cleared energy, the report
    settled energy, and the report's self-sufficiency was its P2P share again. Both now use the
    definitions of docs/dashboard.md: settled P2P energy ÷ metered import, and imports balanced by
    the community's exports in the same quarter-hour."""
    from chain.store import Store
    from peerwatt.reports import build_report

    # an admin's: a visitor's or household's tiles count only the intervals whose volume it may see
    today = as_admin.get("/api/v1/overview").get_json()["today"]
    store = Store.open(built.data_dir, readonly=True)
    try:
        kpis = build_report(store, start=today["start"], end=today["end"])["kpis"].iloc[0]
    finally:
        store.close()
    assert kpis["metered_import_wh"] == today["import_wh"]
    assert round(1000 * kpis["p2p_share_of_consumption"]) == today["p2p_share_permille"]
    assert round(1000 * kpis["self_sufficiency"]) == today["self_sufficiency_permille"]
    assert kpis["self_sufficiency"] != kpis["p2p_share_of_consumption"]


def test_overview_after_the_grid_fee_vote(client, as_admin):
    whole = as_admin.get("/api/v1/overview").get_json()["today"]
    assert whole["trades"] > 0 and whole["withheld_intervals"] == 0
    assert 0 < whole["p2p_share_permille"] <= 1000
    data = client.get("/api/v1/overview").get_json()
    assert data["tariffs"]["grid_fee_per_kwh"] == 20_000
    today = data["today"]
    # six households: every interval that traded had a side of fewer than 4 (a visitor's threshold)
    assert today["date"] == "2025-06-05" and today["active_households"] == 6
    assert today["withheld_intervals"] > 0
    assert today["traded_wh"] < whole["traded_wh"]
    assert 0 < today["self_sufficiency_permille"] <= 1000
    book = data["book"][0]  # public: a side of fewer than 3 households is withheld (test_public_book)
    assert book["asks"] or book["bids"] or book["asks_note"] or book["bids_note"]
    assert len(data["prices"]["intervals"]) > 96 * 3
    assert data["chain"]["height"] == 351 and data["chain"]["quorum"] == 3


def test_full_verify_runs_in_the_background(fresh_app):
    from tests.dashboard.conftest import csrf_token, login

    c = fresh_app.test_client()
    assert c.post("/api/v1/verify", headers={"X-CSRFToken": csrf_token(c)}).status_code == 401
    login(c, "flat")
    started = c.post("/api/v1/verify", headers={"X-CSRFToken": csrf_token(c)})
    assert started.status_code == 202
    fresh_app.extensions["peerwatt"].verifier.wait(60)
    latest = c.get("/api/v1/verify").get_json()["latest"]
    assert latest["status"] == "ok" and latest["summary"].startswith("ok: 351 blocks")
    assert latest["finished"] >= latest["started"] >= time.time() - 120
    page = c.get("/explorer").get_data(as_text=True)
    assert "ok: 351 blocks" in page


def test_verify_form_and_household_index_pages(fresh_app, built):
    from tests.dashboard.conftest import csrf_token, login

    c = fresh_app.test_client()
    assert c.post("/explorer/verify", data={"csrf_token": csrf_token(c)}).status_code == 302  # to login
    assert fresh_app.extensions["peerwatt"].verifier.latest() is None
    login(c, "admin")
    assert c.post("/explorer/verify").status_code == 400  # no CSRF token
    response = c.post("/explorer/verify", data={"csrf_token": csrf_token(c)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/explorer#verify")
    fresh_app.extensions["peerwatt"].verifier.wait(60)
    assert fresh_app.extensions["peerwatt"].verifier.latest()["status"] == "ok"
    listing = c.get("/household").get_data(as_text=True)
    assert all(f"/household/{m}" in listing for m in built.meters)
    household = fresh_app.test_client()
    login(household, "flat")
    assert household.get("/household").headers["Location"].endswith(f"/household/{built.meters[2]}")


def test_a_clearing_of_a_small_book_side_hides_its_energy(client, as_villa, as_admin, built):
    """Found in a QA pass: the overview withholds a book side of fewer than 3 households, but the
    public block page showed the same figure after gate closure (a clearing result's ask_wh with
    one seller is that household's own offer)."""
    store = Store.open(built.data_dir, readonly=True)
    try:
        small = next(
            (h, r)
            for h in range(1, store.height() + 1)
            for r in store.results(h)
            if r["kind"] == "clearing" and r["asks"] < 3
        )
    finally:
        store.close()
    height, truth = small

    def clearing(viewer) -> dict:
        results = viewer.get(f"/api/v1/blocks/{height}").get_json()["results"]
        (result,) = [r for r in results if r["kind"] == "clearing"]
        return result

    for viewer in (client, as_villa):
        shown = clearing(viewer)
        assert shown["asks"] == truth["asks"] and shown["ask_wh"] is None
        assert shown["ask_wh_note"] == "fewer than 3 offers"
        assert shown["price"] == truth["price"]
    assert clearing(as_admin)["ask_wh"] == truth["ask_wh"]


def test_full_verify_rests_between_runs(fresh_app):
    """Found in a QA pass: any logged-in household could start full verifications back to back
    (one at a time, but without a pause), keeping a core busy on a large ledger."""
    from dashboard.verify_runner import MIN_REST_S, REST_FACTOR
    from tests.dashboard.conftest import csrf_token, login

    c = fresh_app.test_client()
    login(c, "flat")
    headers = {"X-CSRFToken": csrf_token(c)}
    assert c.post("/api/v1/verify", headers=headers).status_code == 202
    fresh_app.extensions["peerwatt"].verifier.wait(60)
    again = c.post("/api/v1/verify", headers=headers)
    assert again.status_code == 409 and again.get_json()["started"] is False
    rest = again.get_json()["retry_after_s"]
    run = fresh_app.extensions["peerwatt"].verifier.latest()
    allowed = max(MIN_REST_S, REST_FACTOR * (run["finished"] - run["started"]))  # slow on a busy machine
    assert 0 < rest <= allowed and again.headers["Retry-After"] == str(rest)
    assert "The next run can start in" in c.get("/explorer").get_data(as_text=True)


def _clearings_with_sides(built) -> list[tuple[int, dict, dict[str, set[str]]]]:
    """(height, clearing result, {"sell": sellers, "buy": buyers}) of every clearing."""
    store = Store.open(built.data_dir, readonly=True)
    try:
        out = []
        for h in range(1, store.height() + 1):
            results = store.results(h)
            for r in results:
                if r["kind"] == "clearing":
                    sides: dict[str, set[str]] = {"sell": set(), "buy": set()}
                    for o in results:
                        if o["kind"] == "order_outcome" and o["interval"] == r["interval"]:
                            if "withdrawn" not in o:
                                sides[o["side"]].add(o["meter"])
                    out.append((h, r, sides))
        return out
    finally:
        store.close()


def _clearing_seen(client, height: int) -> dict:
    results = client.get(f"/api/v1/blocks/{height}").get_json()["results"]
    (result,) = [r for r in results if r["kind"] == "clearing"]
    return result


def test_explorer_clearings_follow_the_overviews_rules(fresh_app, client, as_admin, built):
    """Found in a QA pass: (a) a household that is one of 3 sellers saw the clearing's ask_wh,
    hence the other two sellers' sum, where the overview says "fewer than 3 offers besides
    yours"; (b) volume_wh gave away a hidden short side (bids 2, bid_wh withheld, volume_wh 407:
    the two bids), for visitors too. A side of fewer than 3 households besides the viewer's own
    shows no energy, and then neither does the volume; the price and the counts stay."""
    from tests.dashboard.conftest import PASSWORDS, login

    clearings = _clearings_with_sides(built)
    # (a) a meter that is one of exactly 3 sellers, in an interval whose bids are shown to all
    height, truth, sides = next(
        (h, r, s) for h, r, s in clearings if len(s["sell"]) == 3 and len(s["buy"]) >= 3
    )
    seller = sorted(sides["sell"])[0]
    fresh_app.extensions["peerwatt"].accounts.add_user(
        "one-of-three", PASSWORDS["villa"], role="household", meters=[seller]
    )
    household = fresh_app.test_client()
    assert login(household, "one-of-three", PASSWORDS["villa"]).status_code == 302
    seen = _clearing_seen(household, height)
    assert seen["ask_wh"] is None and seen["ask_wh_note"] == "fewer than 3 offers besides yours"
    assert seen["volume_wh"] is None and seen["price"] == truth["price"] and seen["asks"] == 3
    # visitors: 3 sellers, and a visitor may be one of them (tests/dashboard/test_book_visitor_threshold.py)
    public = _clearing_seen(client, height)
    assert public["ask_wh"] is None and public["volume_wh"] is None
    assert public["ask_wh_note"] == "only 3 offers: each could subtract its own from their sum"
    # (b) a short side of 1 or 2 bids with a volume: withheld for visitors and households
    height, truth, sides = next(
        (h, r, s) for h, r, s in clearings if 0 < len(s["buy"]) < 3 and r["volume_wh"] > 0
    )
    for viewer in (client, household):
        seen = _clearing_seen(viewer, height)
        assert seen["bid_wh"] is None and seen["volume_wh"] is None, seen
        assert seen["volume_wh_note"].startswith("withheld: fewer than 3 bids"), seen
        assert str(truth["volume_wh"]) not in json.dumps(seen)
        page = viewer.get(f"/explorer/blocks/{height}").get_data(as_text=True)
        assert f"&#34;volume_wh&#34;: {truth['volume_wh']}" not in page
        assert f'"volume_wh": {truth["volume_wh"]}' not in page
    whole = _clearing_seen(as_admin, height)
    assert whole["volume_wh"] == truth["volume_wh"] and whole["bid_wh"] == truth["bid_wh"]


def test_the_overview_chart_withholds_the_volume_of_a_short_side(client, as_admin, built):
    """The same volume as a bar of the overview's price chart (found with the explorer's, QA
    pass): per interval, the volume of a clearing with a side of fewer than 3 households (besides
    the viewer's own) is null; its price stays. Admins see every volume."""
    short = {r["interval"]: r for _, r, s in _clearings_with_sides(built) if min(map(len, s.values())) < 3}
    for viewer, full in ((client, False), (as_admin, True)):
        prices = viewer.get("/api/v1/overview?days=92").get_json()["prices"]
        shown = dict(zip(prices["intervals"], prices["volume_wh"], strict=True))
        price = dict(zip(prices["intervals"], prices["price_per_kwh"], strict=True))
        assert set(short) <= set(shown)
        for interval, truth in short.items():
            # (a volume of 0 is no sum: nothing matched, as the missing price says too)
            expected = truth["volume_wh"] if full or not truth["volume_wh"] else None
            assert shown[interval] == expected, interval
            assert price[interval] == truth["price"]
        assert any(v is not None for v in shown.values())


def test_order_explanations_do_not_give_away_a_short_side(fresh_app, built):
    """The household page's explanation of an order that did not clear fully named the other
    side's sum ("448 Wh bid against 1,900 Wh offered"): with fewer than 3 households on a side
    besides the viewer's own, it says what happened without that side's figure."""
    from tests.dashboard.conftest import PASSWORDS, login

    accounts = fresh_app.extensions["peerwatt"].accounts
    said = {}
    for meter in built.meters:
        accounts.add_user(f"h-{meter[:6]}", PASSWORDS["villa"], role="household", meters=[meter])
        c = fresh_app.test_client()
        assert login(c, f"h-{meter[:6]}", PASSWORDS["villa"]).status_code == 302
        for day in ("2025-06-02", "2025-06-03", "2025-06-04", "2025-06-05"):
            for o in c.get(f"/api/v1/households/{meter}/orders?date={day}").get_json()["orders"]:
                said[(meter, o["interval"], o["side"])] = o["explanation"]
    checked = 0
    for _, r, sides in _clearings_with_sides(built):
        for side in ("sell", "buy"):
            for meter in sides[side]:
                text = said.get((meter, r["interval"], side), "")
                if "was offered" not in text:
                    continue  # not the sentence that names the sides' sums
                if min(len(sides["sell"] - {meter}), len(sides["buy"] - {meter})) < 3:
                    checked += 1
                    assert "Wh bid against" not in text and "Wh offered against" not in text, text
                    assert "the sums are not shown" in text, text
    assert checked, "the fixture has no such explanation"
