"""Issue 17 item 9: a per-neighbour summary of the period: with whom the household traded, how
much (settled, and cleared not yet settled apart) and at what average price; neighbours named as
the community chose (names or pseudonyms)."""

from __future__ import annotations

import html as html_lib

from market.money import div_round_half_even
from tests.dashboard.conftest import login, make_app


def _expected(client, meter, day_from, day_to):
    trades = []
    url = f"/api/v1/trades?household={meter}&from={day_from}&to={day_to}&limit=500"
    page = client.get(url).get_json()
    trades += page["trades"]
    while page["next"]:
        page = client.get(url + f"&after={page['next']}").get_json()
        trades += page["trades"]
    out: dict[tuple[str, str], dict[str, int]] = {}
    for t in trades:
        row = out.setdefault((t["counterparty"], t["side"]), {"wh": 0, "value": 0, "pending": 0})
        if t["status"] == "settled":
            row["wh"] += t["settled_wh"]
            row["value"] += t["settled_value"]
        elif t["status"] == "cleared":
            row["pending"] += t["energy_wh"]
    return out


def test_summary_per_neighbour_adds_up(as_villa, built):
    meter = built.meters[0]
    data = as_villa.get(f"/api/v1/households/{meter}?view=month&date=2025-06-01").get_json()
    rows = data["neighbours"]
    expected = _expected(as_villa, meter, "2025-06-01", "2025-06-30")
    assert {(r["meter"], r["side"]) for r in rows} == set(expected)
    for r in rows:
        e = expected[(r["meter"], r["side"])]
        assert (r["settled_wh"], r["settled_value"], r["pending_wh"]) == (e["wh"], e["value"], e["pending"])
        if e["wh"]:
            assert r["average_price_per_kwh"] == div_round_half_even(e["value"] * 1000, e["wh"])
        assert r["name"] == built.households[r["meter"]]
    assert (
        sum(r["settled_wh"] for r in rows if r["side"] == "sell") == data["statement"]["sold"]["settled_wh"]
    )
    page = html_lib.unescape(
        as_villa.get(f"/household/{meter}?view=month&date=2025-06-01").get_data(as_text=True)
    )
    table = page.split('id="neighbours"', 1)[1].split("</table>", 1)[0]
    assert "Flat 3B" in table


def test_pseudonyms_as_a_community_setting(built, tmp_path):
    app = make_app(built, tmp_path / "instance", NEIGHBOUR_NAMES="pseudonyms")
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    meter = built.meters[0]
    rows = c.get(f"/api/v1/households/{meter}?view=month&date=2025-06-01").get_json()["neighbours"]
    assert rows
    for r in rows:
        assert r["name"].startswith("Neighbour ") and r["name"] != built.households[r["meter"]]
    page = c.get(f"/household/{meter}?view=month&date=2025-06-01").get_data(as_text=True)
    table = page.split('id="neighbours"', 1)[1].split("</table>", 1)[0]
    for name in built.households.values():
        assert name not in table
