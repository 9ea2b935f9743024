"""Issue 17 item 3: the home-use estimate says "not enough data yet" instead of 0 Wh when it has
nothing to rest on, and says what it rests on."""

from __future__ import annotations

from dashboard import household_view as hh
from tests.dashboard.conftest import login
from tests.dashboard.ledger_fixture import INTERVAL_S, START
from tests.dashboard.test_public_book import book  # noqa: F401  (the small ledger: no readings)


def test_no_interval_without_export_is_not_enough_data(app, built):
    conn = app.extensions["peerwatt"].index.conn
    villa = built.meters[0]
    noon = START + 48 * INTERVAL_S  # 12:00-13:00 on day 1: Sunny Villa exports in every quarter-hour
    f = hh.flows(conn, villa, noon, noon + 4 * INTERVAL_S)
    assert f["export_wh"] > 0 and f["intervals_with_data"] == 4
    assert f["home_estimated_wh"] is None and f["solar_estimated_wh"] is None
    assert f["estimate_basis"] == {
        "intervals_without_export": 0,
        "intervals_with_export": 4,
        "average_without_export_wh": None,
    }
    whole_day = hh.flows(conn, villa, START, START + 96 * INTERVAL_S)
    basis = whole_day["estimate_basis"]
    assert basis["intervals_without_export"] > 0 and basis["average_without_export_wh"] > 0
    assert whole_day["home_estimated_wh"] > whole_day["import_wh"]


def test_page_says_not_enough_data_and_what_it_rests_on(book):  # noqa: F811
    built, app = book
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    html = c.get(f"/household/{built.meters[0]}").get_data(as_text=True)
    assert 'id="tile-home">not enough data yet<' in html and 'id="tile-solar">not enough data yet<' in html
    assert "rests on 0 quarter-hour(s) without export" in html


def test_page_says_what_the_estimate_rests_on(as_villa, built):
    html = as_villa.get(f"/household/{built.meters[0]}").get_data(as_text=True)
    assert "Today this rests on " in html and "imported each" in html
    assert "not enough data yet" not in html
