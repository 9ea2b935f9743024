"""Issue 17 item 8: the public order book never shows fewer than 3 households' orders on a side
(their volume and limit prices would be one household's forecast and price); a logged-in
household sees its own orders in full. Ledger: 1, 2 and 3 households per side in three intervals."""

from __future__ import annotations

import re

import pytest

from dashboard.app import create_app
from dashboard.units import energy as format_energy
from dashboard.units import price as format_price
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, login
from tests.dashboard.ledger_fixture import build_book


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    built = build_book(tmp_path_factory.mktemp("book-ledger"))
    app = create_app(
        built.data_dir,
        instance_dir=tmp_path_factory.mktemp("book-instance"),
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )
    app.extensions["peerwatt"].indexer.sync()
    app.extensions["peerwatt"].accounts.add_user(
        "villa", PASSWORDS["villa"], role="household", meters=[built.meters[0]]
    )
    app.extensions["peerwatt"].accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    return built, app


def _row(rows, interval):
    (row,) = [r for r in rows if r["interval"] == interval]
    return row


def _figures(built, k):
    """Every volume and limit price of the interval with k households per side (as the page writes them)."""
    interval = built.intervals[k]
    out = set()
    for entries in built.orders.values():
        for i, _side, wh, price in entries:
            if i == interval:
                out |= {format_energy(wh), format_price(price)}
    return out


def _page_rows(html):
    body = html.split('id="book"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


@pytest.mark.parametrize("k", [1, 2])
def test_public_api_hides_sides_of_fewer_than_3_households(book, k):
    built, app = book
    row = _row(app.test_client().get("/api/v1/overview").get_json()["book"], built.intervals[k])
    for side in ("ask", "bid"):
        word = "offers" if side == "ask" else "bids"
        assert row[f"{side}s_shown"] is False
        assert row[f"{side}s_note"] == f"fewer than 3 {word}"
        assert row[f"{side}s"] is None and row[f"{side}_wh"] is None
        assert row[f"best_{side}_per_kwh"] is None
    assert row["indicative_price_per_kwh"] is None and row["indicative_volume_wh"] is None
    assert row["own_orders"] == []


def test_3_households_per_side_are_summed_for_a_household_not_among_them(book):
    """A side of 3 households is shown to a logged-in household that is not one of them (3
    besides its own), not to a visitor, who may be one of them and subtract its own
    (tests/dashboard/test_book_visitor_threshold.py)."""
    built, app = book
    interval = built.intervals[3]
    public = _row(app.test_client().get("/api/v1/overview").get_json()["book"], interval)
    assert public["asks_shown"] is public["bids_shown"] is False
    assert public["asks_note"] == "only 3 offers: each could subtract its own from their sum"
    assert public["indicative_price_per_kwh"] is None
    c = app.test_client()
    assert login(c, "villa").status_code == 302  # Sunny Villa offers: it is no bidder
    row = _row(c.get("/api/v1/overview").get_json()["book"], interval)
    bids = [(wh, p) for e in built.orders.values() for i, s, wh, p in e if i == interval and s == "buy"]
    assert row["bids_shown"] is True
    assert (row["bids"], row["bid_wh"], row["best_bid_per_kwh"]) == (
        3,
        sum(w for w, _ in bids),
        max(p for _, p in bids),
    )


def test_public_page_says_fewer_than_3_without_figures(book):
    built, app = book
    html = app.test_client().get("/").get_data(as_text=True)
    rows = _page_rows(html)
    assert len(rows) == 3
    for k, row in zip((1, 2, 3), rows, strict=True):
        if k < 3:
            assert "fewer than 3 offers" in row and "fewer than 3 bids" in row
            for figure in _figures(built, k):
                assert figure not in row, (k, figure)
        else:  # 3 households: withheld from visitors, who may be one of them
            assert "only 3 offers" in row and "only 3 bids" in row
            for figure in _figures(built, k):
                assert figure not in row, (k, figure)
    for k in (1, 2):  # no figure of a small side anywhere on the page
        for figure in _figures(built, k) - _figures(built, 3):
            assert figure not in html, (k, figure)


def test_household_sees_its_own_orders_in_full(book):
    built, app = book
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    rows = c.get("/api/v1/overview").get_json()["book"]
    html = c.get("/").get_data(as_text=True)
    for interval, side, wh, price in built.orders[built.meters[0]]:
        row = _row(rows, interval)
        assert row["own_orders"] == [
            {"meter": built.meters[0], "side": side, "energy_wh": wh, "limit_price": price}
        ]
        assert f"{side} {format_energy(wh)} at {format_price(price)}" in html
    # the others' small sides stay hidden from a household too
    assert _row(rows, built.intervals[1])["bids_shown"] is False
    assert _row(rows, built.intervals[2])["asks"] is None


def test_admin_sees_every_side(book):
    built, app = book
    c = app.test_client()
    assert login(c, "admin").status_code == 302
    row = _row(c.get("/api/v1/overview").get_json()["book"], built.intervals[1])
    assert row["asks"] == row["bids"] == 1 and row["asks_shown"] is True


def test_threshold_excludes_the_viewers_own_household(book):
    """Issue 17 item 8: with 3 sellers of which the viewer is one, the sum minus its own order
    would be 2 households' figures: the viewer sees that side withheld; the side without its
    order (3 other households) in full."""
    built, app = book
    c = app.test_client()
    assert login(c, "villa").status_code == 302  # Sunny Villa is one of the 3 sellers of interval 3
    row = _row(c.get("/api/v1/overview").get_json()["book"], built.intervals[3])
    assert row["asks_shown"] is False and row["asks"] is None and row["ask_wh"] is None
    assert row["asks_note"] == "fewer than 3 offers besides yours"
    assert row["bids_shown"] is True and row["bids"] == 3
    assert row["indicative_price_per_kwh"] is None and row["indicative_volume_wh"] is None
    assert row["own_orders"] != []
    # logged out, the same interval is withheld too: a visitor may be one of the 3 (found in a QA
    # pass: Sunny Villa logged out and subtracted its own offer from the visitors' sum)
    public = _row(app.test_client().get("/api/v1/overview").get_json()["book"], built.intervals[3])
    assert public["asks_shown"] is False and public["ask_wh"] is None
