"""Issue 17 items 1 and 2 (the rest): settled and cleared-not-yet-settled apart in the history
chart and table; order explanations from settled figures once settled; the CSV's delivery note;
unsettled trades say whose meter was flagged; and a household's day, month and year views agree
with each other and with the CSV to the micro-unit and the watt-hour."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import pytest

from dashboard.app import create_app
from dashboard.units import energy
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, login
from tests.dashboard.ledger_fixture import build_unsettled

DAYS = [date(2025, 6, 2) + timedelta(days=i) for i in range(4)]
MONEY = ("p2p_earnings", "p2p_cost", "grid_fees", "levies", "baseline_cost", "actual_cost", "savings")
ENERGY = (
    "import_wh",
    "export_wh",
    "p2p_sold_wh",
    "p2p_bought_wh",
    "residual_import_wh",
    "residual_export_wh",
)


def _csv(client, query: str) -> list[dict[str, str]]:
    response = client.get(f"/api/v1/trades.csv?{query}")
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def _summary(client, meter, view, day):
    return client.get(f"/api/v1/households/{meter}?view={view}&date={day.isoformat()}").get_json()


@pytest.mark.parametrize("who,index", [("villa", 0), ("flat", 2)])
def test_day_month_year_and_csv_agree(app, built, who, index):
    c = app.test_client()
    assert login(c, who).status_code == 302
    meter = built.meters[index]
    month = _summary(c, meter, "month", DAYS[0])
    year = _summary(c, meter, "year", DAYS[0])
    days = [_summary(c, meter, "day", d) for d in DAYS]
    ms, ys = month["statement"], year["statement"]
    for field in MONEY + ENERGY:
        total = sum(d["statement"]["statement"][field] for d in days)
        assert total == ms["statement"][field] == ys["statement"][field], field
    for side in ("sold", "bought"):
        for field in ("settled_wh", "settled_value", "pending_wh", "pending_value", "unsettled_wh"):
            assert sum(d["statement"][side][field] for d in days) == ms[side][field] == ys[side][field]
    # the month's history has one bucket per day, equal to that day's figures
    h = month["history"]
    for d, day in zip(days, DAYS, strict=True):
        i = h["labels"].index(day.strftime("%d"))
        st = d["statement"]
        assert h["import_wh"][i] == st["metered"]["import_wh"]
        assert h["sold_wh"][i] == st["sold"]["settled_wh"] == d["period"]["flows"]["to_neighbours_wh"]
        assert h["sold_pending_wh"][i] == st["sold"]["pending_wh"]
        assert h["bought_wh"][i] == st["bought"]["settled_wh"]
        assert h["bought_pending_wh"][i] == st["bought"]["pending_wh"]
        assert sum(d["history"]["sold_wh"]) == h["sold_wh"][i]
        assert sum(d["history"]["bought_pending_wh"]) == h["bought_pending_wh"][i]
    # the year's June bucket is the month
    yh = year["history"]
    assert yh["sold_wh"][5] == sum(h["sold_wh"]) and yh["bought_pending_wh"][5] == sum(h["bought_pending_wh"])
    # the CSV of the month adds up to the money table, to the micro-unit and the Wh
    rows = _csv(c, f"household={meter}&from=2025-06-01&to=2025-06-30")
    sold = [r for r in rows if r["side"] == "sell" and r["status"] == "settled"]
    bought = [r for r in rows if r["side"] == "buy" and r["status"] == "settled"]
    s = ms["statement"]
    assert sum(int(r["settled_wh"]) for r in sold) == s["p2p_sold_wh"]
    assert sum(int(r["settled_value_micro"]) for r in sold) == s["p2p_earnings"]
    assert sum(int(r["settled_wh"]) for r in bought) == s["p2p_bought_wh"]
    assert sum(int(r["settled_value_micro"]) for r in bought) == s["p2p_cost"]
    assert sum(int(r["settled_grid_fee_micro"]) for r in bought) == s["grid_fees"]
    assert sum(int(r["settled_levies_micro"]) for r in bought) == s["levies"]
    pending = [r for r in rows if r["status"] == "cleared"]
    assert sum(int(r["energy_wh"]) for r in pending) == ms["sold"]["pending_wh"] + ms["bought"]["pending_wh"]


def test_history_table_shows_settled_and_pending_apart(as_villa, built):
    html = as_villa.get(f"/household/{built.meters[0]}").get_data(as_text=True)
    table = html.split('id="history-table"', 1)[1].split("</table>", 1)[0]
    assert "to neighbours, settled" in table and "cleared, not yet settled" in table


def test_csv_has_the_delivery_note(as_villa, built):
    meter = built.meters[0]
    day = "2025-06-04"
    api = as_villa.get(f"/api/v1/trades?household={meter}&from={day}&to={day}&limit=500").get_json()["trades"]
    notes = {t["id"]: t["delivery_note"] for t in api}
    rows = _csv(as_villa, f"household={meter}&from={day}&to={day}")
    assert "delivery_note" in rows[0] and "flagged_meter" in rows[0]
    assert any(r["delivery_note"] for r in rows)
    for r in rows:
        assert r["delivery_note"] == (notes[r["trade_id"]] or "")


def test_order_explanations_use_settled_figures(as_villa, built):
    meter = built.meters[0]
    day = "2025-06-04"  # cloudy: Sunny Villa sold more than it delivered
    orders = as_villa.get(f"/api/v1/households/{meter}/orders?date={day}").get_json()["orders"]
    trades = as_villa.get(
        f"/api/v1/trades?household={meter}&side=sell&from={day}&to={day}&limit=500"
    ).get_json()["trades"]
    settled: dict[int, int] = {}
    for t in trades:
        settled[t["interval"]] = settled.get(t["interval"], 0) + (t["settled_wh"] or 0)
    short = [o for o in orders if o["side"] == "sell" and settled.get(o["interval"], 0) < o["filled_wh"]]
    assert short, "the cloudy day has sell orders that delivered less than they cleared"
    for o in short:
        text = o["explanation"]
        assert o["delivered_wh"] == settled[o["interval"]]
        assert f"delivered {energy(settled[o['interval']])}" in text, text
        grid = o["metered_wh"] - settled[o["interval"]]
        if grid:
            assert f"{energy(grid)} your meter exported went to the grid" in text, text
        else:
            assert "None of your export went to the grid." in text, text
        assert "remaining" not in text


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    built = build_unsettled(tmp_path_factory.mktemp("unsettled-ledger"))
    app = create_app(
        built.data_dir,
        instance_dir=tmp_path_factory.mktemp("unsettled-instance"),
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )
    services = app.extensions["peerwatt"]
    services.indexer.sync()
    services.accounts.add_user("villa", PASSWORDS["villa"], role="household", meters=[built.seller])
    services.accounts.add_user("flat", PASSWORDS["flat"], role="household", meters=[built.buyer])
    return built, app


def test_unsettled_trades_say_whose_meter_was_flagged(quiet):
    built, app = quiet
    seller, buyer = app.test_client(), app.test_client()
    assert login(seller, "villa").status_code == 302 and login(buyer, "flat").status_code == 302
    (mine,) = seller.get("/api/v1/trades").get_json()["trades"]
    (theirs,) = buyer.get("/api/v1/trades").get_json()["trades"]
    assert mine["status"] == theirs["status"] == "unsettled"
    assert mine["flagged_meter"] == theirs["flagged_meter"] == built.seller
    assert mine["delivery_note"].startswith("unsettled: a meter reading is missing from your meter")
    assert theirs["delivery_note"].startswith(
        "unsettled: a meter reading is missing from the seller's meter (Seller Sun)"
    )
    assert "no money moved" in theirs["delivery_note"]
    page = buyer.get("/trades").get_data(as_text=True)
    assert "the seller&#39;s meter (Seller Sun)" in page or "the seller's meter (Seller Sun)" in page
    (row,) = _csv(buyer, "")
    assert row["flagged_meter"] == built.seller and row["delivery_note"] == theirs["delivery_note"]
