"""Found in a QA pass: a household account with two meters of one member that traded with each
other (a documented decision of docs/market.md: clearing matches orders by meter) has that trade
twice in its history, once per side. Keyset paging keyed both rows alike (sort value, trade id)
and skipped the second; and the household page named its own other meter a neighbour."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from dashboard.app import create_app
from market.app import MarketApp
from tests.dashboard.conftest import TEST_PASSWORD_METHOD, login
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, SETTLED_AT, T0, order, reading, reading_values

CONFIG = {"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD}


@pytest.fixture(scope="module")
def two_meters(tmp_path_factory):
    """member-0 has meters 0 and 1; meter 0 sells and meter 1 buys, so they trade with each
    other, and meter 0 with member-1's buyer: 2 trades, 3 rows of member-0's history."""
    base = tmp_path_factory.mktemp("own-meters")
    c = make_community(validators=1, members=2, meters_per_member=2, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(base, MarketApp)
    t = T0 + 10
    c.run_block(
        [
            order(c, 0, "sell", 1000, 90_000, t),
            order(c, 1, "buy", 800, 200_000, t),
            order(c, 2, "sell", 500, 120_000, t),
            order(c, 3, "buy", 600, 100_000, t),
        ],
        t,
    )
    c.run_block([], I1 - 300)
    t = I1 + 900 + 5
    rs = []
    for m in range(4):
        a, b, ci, ce = reading_values(m)
        rs += [reading(c, m, I1 - 900, a, b, t), reading(c, m, I1, ci, ce, t)]
    c.run_block(rs, t)
    c.run_block([], SETTLED_AT)
    for ledger in c.ledgers:
        ledger.close()
    app = create_app(base / "validator-0", instance_dir=base / "inst", config=CONFIG)
    s = app.extensions["peerwatt"]
    s.indexer.sync()
    s.accounts.add_user("home", "home-pass-1234", role="household", meters=[c.meters[0].id, c.meters[1].id])
    client = app.test_client()
    assert login(client, "home", "home-pass-1234").status_code == 302
    return client, c


def _walk(client, query: str, direction: str = "next") -> list[dict]:
    page = client.get(f"/api/v1/trades?{query}").get_json()
    seen = list(page["trades"])
    while page[direction]:
        arg = "after" if direction == "next" else "before"
        page = client.get(f"/api/v1/trades?{query}&{arg}=" + urllib.parse.quote(page[direction])).get_json()
        seen += page["trades"]
    return seen


def _rows(trades: list[dict]) -> list[tuple[str, str]]:
    return [(t["id"], t["side"]) for t in trades]


@pytest.mark.parametrize("order", ["", "&order=asc", "&sort=energy", "&sort=value&order=asc"])
@pytest.mark.parametrize("limit", [1, 2])
def test_paging_returns_each_row_once(two_meters, order, limit):
    client, _ = two_meters
    rows = _rows(client.get(f"/api/v1/trades?limit=500{order}").get_json()["trades"])
    assert len(rows) == 3 and len(set(rows)) == 3
    assert len({i for i, _ in rows}) == 2  # the self-trade twice: sold and bought
    assert _rows(_walk(client, f"limit={limit}{order}")) == rows


def test_paging_back_returns_each_row_once(two_meters):
    client, _ = two_meters
    forward = _rows(_walk(client, "limit=1"))
    page = client.get("/api/v1/trades?limit=1").get_json()
    while page["next"]:
        page = client.get("/api/v1/trades?limit=1&after=" + urllib.parse.quote(page["next"])).get_json()
    back = _rows(page["trades"])
    while page["prev"]:
        page = client.get("/api/v1/trades?limit=1&before=" + urllib.parse.quote(page["prev"])).get_json()
        back = _rows(page["trades"]) + back
    assert back == forward


def _cursor(key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def test_a_cursor_without_a_side_still_pages_and_a_bad_side_is_a_400(two_meters):
    """A cursor made before the side was in it pages as it did (sort value and trade id); a side
    that is neither sell nor buy is the one-line 400 of any bad cursor."""
    client, _ = two_meters
    first = client.get("/api/v1/trades?limit=1").get_json()
    text = first["next"]
    value, trade_id, side = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    assert side in ("sell", "buy")
    old = client.get("/api/v1/trades?limit=500&after=" + _cursor([value, trade_id]))
    assert old.status_code == 200 and old.get_json()["trades"]
    bad = client.get("/api/v1/trades?limit=1&after=" + _cursor([value, trade_id, "both"]))
    assert bad.status_code == 400 and "bad page cursor" in bad.get_data(as_text=True)


def test_the_csv_has_each_row_once_in_the_pages_order(two_meters):
    client, _ = two_meters
    pages = _walk(client, "limit=1")
    body = client.get("/api/v1/trades.csv").get_data(as_text=True).splitlines()
    assert [tuple(line.split(",")[i] for i in (0, 3)) for line in body[1:]] == _rows(pages)


def test_the_own_other_meter_is_no_neighbour(two_meters):
    client, c = two_meters
    seller, buyer = c.meters[0].id, c.meters[1].id
    day = "&date=2025-11-24"  # I1's day
    api = client.get(f"/api/v1/households/{seller}?view=year{day}").get_json()
    rows = {r["meter"]: r for r in api["neighbours"]}
    assert rows[buyer]["own_meter"] is True
    assert all(not r["own_meter"] for m, r in rows.items() if m != buyer)
    page = client.get(f"/household/{seller}?view=year{day}").get_data(as_text=True)
    table = page.split('id="neighbours"', 1)[1].split("</table>", 1)[0]
    assert "your own meter" in table
    assert 'id="own-meter-trades"' in page and "grid fee and levies" in page
    assert "Neighbours and your own meters you traded with" in page
