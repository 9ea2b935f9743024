"""Found in a QA pass: a household that is one of exactly 3 sellers sees that side withheld
("fewer than 3 offers besides yours"), but logged out, as a visitor, it saw the side summed over
the 3 and subtracted its own offer: the other two sellers' sum (114 Wh − 31 Wh = 83 Wh). The same
held for the explorer's clearing results and the overview chart's volumes. What a visitor sees
must hold at least MIN_BOOK_HOUSEHOLDS + 1 households (any household may be the visitor); what a
logged-in household sees, at least MIN_BOOK_HOUSEHOLDS besides its own.

The ledger (8 households, one meter each):
- cleared interval CLEARED: households 0, 1, 2 offer 100, 110, 120 Wh; 3, 4, 5, 6 bid 200 Wh
  each: 330 Wh clear (every offer, the short side);
- open interval OPEN (the live book): households 0, 1, 2, 7 offer; 3, 4, 5 bid.
"""

from __future__ import annotations

import json
import re

import pytest

from dashboard.community import MIN_BOOK_HOUSEHOLDS
from market.app import MarketApp
from tests.dashboard.conftest import login, synced_app
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, order

CLEARED = I1
OPEN = I1 + 1800
PASSWORD = "house-pass-1234"
OFFERS = {0: 100, 1: 110, 2: 120}
OPEN_OFFERS = {0: 41, 1: 43, 2: 47, 7: 53}
OPEN_BIDS = {3: 61, 4: 67, 5: 71}


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    base = tmp_path_factory.mktemp("visitor-book")
    c = make_community(validators=1, members=8, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(base, MarketApp)
    t = T0 + 10
    c.run_block(
        [order(c, m, "sell", wh, 90_000 + m, t, CLEARED) for m, wh in OFFERS.items()]
        + [order(c, m, "buy", 200, 200_000 + m, t, CLEARED) for m in (3, 4, 5, 6)],
        t,
    )
    t = CLEARED - 300  # gate closure of CLEARED; the orders for OPEN stay in the book
    c.run_block(
        [order(c, m, "sell", wh, 95_000 + m, t, OPEN) for m, wh in OPEN_OFFERS.items()]
        + [order(c, m, "buy", wh, 190_000 + m, t, OPEN) for m, wh in OPEN_BIDS.items()],
        t,
    )
    for ledger in c.ledgers:
        ledger.close()
    app = synced_app(base / "validator-0", base / "inst")
    s = app.extensions["peerwatt"]
    for i, meter in enumerate(c.meters):
        s.accounts.add_user(f"house{i}", PASSWORD, role="household", meters=[meter.id])
    s.accounts.add_user("admin", "admin-pass-1234", role="admin")
    return app, c


def _client(app, who: int | None):
    client = app.test_client()
    if who is not None:
        assert login(client, f"house{who}", PASSWORD).status_code == 302
    return client


def _book_row(client) -> dict:
    (row,) = [r for r in client.get("/api/v1/overview").get_json()["book"] if r["interval"] == OPEN]
    return row


def _chart_volume(client) -> int | None:
    prices = client.get("/api/v1/overview?days=92").get_json()["prices"]
    return dict(zip(prices["intervals"], prices["volume_wh"], strict=True))[CLEARED]


def _clearing(app, client) -> dict:
    store = app.extensions["peerwatt"].ledger.store()
    height = next(
        h
        for h in range(1, store.height() + 1)
        if any(r["kind"] == "clearing" and r["interval"] == CLEARED for r in store.results(h))
    )
    (result,) = [
        r for r in client.get(f"/api/v1/blocks/{height}").get_json()["results"] if r["kind"] == "clearing"
    ]
    return result


def test_a_visitor_sees_no_side_of_only_3_households(market):
    """The reproduction: seller 0 logs out and reads the sum of the 3 offers (its own and two
    others'). A visitor now sees no side of fewer than 4 households, and then no indicative
    price; a side of 4 households is shown."""
    app, _ = market
    assert MIN_BOOK_HOUSEHOLDS == 3
    row = _book_row(_client(app, None))
    assert row["bids_shown"] is False and row["bids"] is None and row["bid_wh"] is None
    assert row["best_bid_per_kwh"] is None
    assert row["bids_note"] == "only 3 bids: each could subtract its own from their sum"
    assert row["asks_shown"] is True and row["asks"] == 4 and row["ask_wh"] == sum(OPEN_OFFERS.values())
    assert row["best_ask_per_kwh"] == 95_000
    assert row["indicative_price_per_kwh"] is None and row["indicative_volume_wh"] is None
    page = _client(app, None).get("/").get_data(as_text=True)
    assert "only 3 bids" in page


def test_a_household_sees_a_side_of_3_others(market):
    """Logged in, the threshold counts the households besides the viewer's own: seller 0 sees
    the other 3 sellers' side with its own in it, and the 3 bids (none of them its own);
    buyer 3 sees the bids withheld (2 besides its own); household 7's view of the bids is whole."""
    app, _ = market
    seller = _book_row(_client(app, 0))
    assert seller["asks_shown"] is True and seller["ask_wh"] == sum(OPEN_OFFERS.values())
    assert seller["bids_shown"] is True and seller["bid_wh"] == sum(OPEN_BIDS.values())
    assert seller["indicative_price_per_kwh"] is not None
    buyer = _book_row(_client(app, 3))
    assert buyer["bids_shown"] is False and buyer["bid_wh"] is None
    assert buyer["bids_note"] == "fewer than 3 bids besides yours"
    assert buyer["indicative_volume_wh"] is None
    outsider = _book_row(_client(app, 6))  # bid only for CLEARED
    assert outsider["bids_shown"] is True and outsider["bids"] == 3


def test_no_view_gives_a_participant_fewer_than_3_others_sum(market):
    """Every household of the live book, logged in and logged out: each sum it can read, less its
    own orders, is a sum over at least 3 other households."""
    app, _ = market
    sides = {"ask": OPEN_OFFERS, "bid": OPEN_BIDS}
    for who in range(8):
        for client in (_client(app, who), _client(app, None)):
            row = _book_row(client)
            for side, orders in sides.items():
                if row[f"{side}_wh"] is None:
                    continue
                others = set(orders) - {who}
                assert len(others) >= MIN_BOOK_HOUSEHOLDS, (who, side, row)
                assert row[f"{side}_wh"] - orders.get(who, 0) == sum(orders[o] for o in others)


def test_cleared_volume_of_3_sellers_is_withheld_from_visitors(market):
    """The cleared interval had 3 sellers, all matched: its volume (330 Wh) less a seller's own
    fill is the other two sellers' sum. A visitor sees neither ask_wh nor the volume, in the
    explorer and in the overview chart; the price and the counts stay."""
    app, _ = market
    visitor = _client(app, None)
    seen = _clearing(app, visitor)
    assert seen["asks"] == 3 and seen["bids"] == 4 and seen["price"] is not None
    assert seen["ask_wh"] is None and seen["volume_wh"] is None
    assert seen["ask_wh_note"] == "only 3 offers: each could subtract its own from their sum"
    assert seen["volume_wh_note"] == "withheld: only 3 offers: each could subtract its own from their sum"
    assert seen["bid_wh"] == 800  # 4 households
    assert not re.search(r"\b330\b", json.dumps(seen))
    assert _chart_volume(visitor) is None
    page = visitor.get("/").get_data(as_text=True)
    assert not re.search(r"\b330\b", page.split('id="overview-data"')[1].split("</script>")[0])


def test_cleared_volume_seen_by_households(market):
    """Seller 0: 2 other sellers, no volume; buyer 3 (3 sellers besides it, 3 other buyers) and
    household 7 (no order) see the volume; the admin sees everything."""
    app, _ = market
    seller = _clearing(app, _client(app, 0))
    assert seller["ask_wh"] is None and seller["volume_wh"] is None
    assert seller["ask_wh_note"] == "fewer than 3 offers besides yours"
    assert _chart_volume(_client(app, 0)) is None
    for who in (3, 7):
        seen = _clearing(app, _client(app, who))
        assert seen["ask_wh"] == 330 and seen["volume_wh"] == 330
        assert _chart_volume(_client(app, who)) == 330
    admin = app.test_client()
    assert login(admin, "admin", "admin-pass-1234").status_code == 302
    assert _clearing(app, admin)["volume_wh"] == 330 and _chart_volume(admin) == 330


def test_todays_tiles_count_only_intervals_whose_volume_the_viewer_may_see(market):
    """The day's traded energy, value and trades are the day's cleared volumes summed: with one
    interval cleared that day, the tile was that interval's volume (330 Wh) for everyone, and
    as intervals clear, each refresh adds one interval's volume. The tiles now sum only the
    intervals whose volume the viewer may see (the chart's bars), and say how many they leave
    out."""
    app, _ = market
    for who, shown in ((None, False), (0, False), (3, True), (7, True)):
        today = _client(app, who).get("/api/v1/overview").get_json()["today"]
        if shown:
            assert today["traded_wh"] == 330 and today["trades"] > 0 and today["withheld_intervals"] == 0
        else:
            assert (today["traded_wh"], today["traded_value"], today["trades"]) == (0, 0, 0), (who, today)
            assert today["withheld_intervals"] == 1
    admin = app.test_client()
    assert login(admin, "admin", "admin-pass-1234").status_code == 302
    today = admin.get("/api/v1/overview").get_json()["today"]
    assert today["traded_wh"] == 330 and today["withheld_intervals"] == 0
    page = _client(app, None).get("/").get_data(as_text=True)
    note = re.search(r'<p class="note" id="withheld-intervals"([^>]*)>(.*?)</p>', page, re.S)
    assert note and "hidden" not in note.group(1)
    assert 'not counting <span data-field="today.withheld_intervals">1</span> interval(s)' in note.group(2)
