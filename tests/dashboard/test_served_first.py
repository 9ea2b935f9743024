"""An order's explanation says others were served first only where the ledger shows it (found in
a QA pass of the demo: an interval cleared with 6 asks, 2 bids and 66 Wh, both of its trades this
household's own sell order, read "cheaper and earlier offers were served first": no other offer
had been served at all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from chain.engine import Ledger
from chain.genesis import Genesis
from dashboard.explain import explain
from market.app import MarketApp
from tests.dashboard.conftest import make_app
from tests.dashboard.ledger_fixture import APP_PARAMS, GATE_S, INTERVAL_S, START, TZ, _run_block
from tests.support.localnet import make_community

SELLERS, BUYERS = 6, 2
BIDS_WH = (30, 36)  # 66 Wh in all, as in the demo


@dataclass
class DemoLedger:
    data_dir: Path
    meters: list[str]  # SELLERS sellers (cheapest first), then BUYERS buyers
    interval: int


def build_demo(base_dir: Path) -> DemoLedger:
    """Six offers of 200 Wh (10.0, 10.1, ... 10.5 ct) and two bids of 30 and 36 Wh at 20.0 ct in one
    interval: the cheapest offer takes both bids and is matched only partly; the others get none."""
    c = make_community(
        community="demo-lane",
        time=START - 3600,
        validators=3,
        members=SELLERS + BUYERS,
        app="market",
        app_params=APP_PARAMS,
    )
    doc = c.genesis.doc
    doc["community"]["timezone"] = TZ
    c.genesis = Genesis(doc)
    ledger = Ledger.create(base_dir / "validator-0", c.genesis, MarketApp())
    interval = START + 2 * INTERVAL_S
    txs = []
    for i, m in enumerate(c.meters):
        if i < SELLERS:
            body = {
                "side": "sell",
                "interval": interval,
                "energy_wh": 200,
                "limit_price": 100_000 + 1_000 * i,
            }
        else:
            body = {
                "side": "buy",
                "interval": interval,
                "energy_wh": BIDS_WH[i - SELLERS],
                "limit_price": 200_000,
            }
        txs.append(m.sign(c.community, "order", body, created=START))
    _run_block(ledger, c, txs, START)
    _run_block(ledger, c, [], interval - GATE_S)  # the gate closes: the interval clears
    ledger.close()
    return DemoLedger(base_dir / "validator-0", [m.id for m in c.meters], interval)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    built = build_demo(tmp_path_factory.mktemp("demo-ledger"))
    # accounts: villa has the cheapest offer (meters[0]), flat the third (meters[2])
    return built, make_app(built, tmp_path_factory.mktemp("demo-instance"))


def said(app, who: str, meter: str, interval: int) -> dict:
    from tests.dashboard.conftest import login

    c = app.test_client()
    assert login(c, who).status_code == 302
    orders = c.get(f"/api/v1/households/{meter}/orders?date=2025-06-02").get_json()["orders"]
    (order,) = [o for o in orders if o["interval"] == interval]
    return order


def test_an_offer_that_took_all_the_bids_is_not_told_others_came_first(demo):
    built, app = demo
    clearing = (
        app.extensions["peerwatt"]
        .index.conn.execute(
            "SELECT asks, bids, volume_wh FROM clearings WHERE interval = ?", (built.interval,)
        )
        .fetchone()
    )
    assert tuple(clearing) == (SELLERS, BUYERS, sum(BIDS_WH))
    first = said(app, "admin", built.meters[0], built.interval)
    assert first["filled_wh"] == sum(BIDS_WH) < first["energy_wh"]
    assert "served first" not in first["explanation"], first["explanation"]
    assert first["explanation"].startswith(
        "Neighbours wanted less than was offered at your price: 66 Wh bid against 1.20 kWh offered, "
        "and all 66 Wh neighbours bought went to your offer (no other offer was served)."
    ), first["explanation"]
    # the household itself reads it with the bids' sums withheld (2 bids): nor what others got
    own = said(app, "villa", built.meters[0], built.interval)["explanation"]
    assert "served first" not in own and "66 Wh bid" not in own, own
    assert own.startswith(
        "Neighbours wanted less than was offered at your price (fewer than 3 bids: the sums are not "
        "shown, nor what other offers got)."
    ), own
    assert "66 Wh cleared, not yet settled against the meter readings" in own  # its own fill, as before


def test_an_offer_that_got_none_is_told_cheaper_ones_came_first(demo):
    built, app = demo
    for who in ("admin", "flat"):
        third = said(app, who, built.meters[2], built.interval)
        assert third["filled_wh"] == 0
        assert "cheaper and earlier offers were served first" in third["explanation"], (who, third)


def test_served_first_only_when_others_got_volume():
    uniform = {"mechanism": "uniform", "price": 150_000, "asks": 6, "bids": 4, "ask_wh": 1_200, "bid_wh": 66}
    ask = {"side": "sell", "energy_wh": 200, "limit_price": 100_000}
    # all the volume was this order's
    alone = explain(dict(ask, filled_wh=66), dict(uniform, volume_wh=66))
    assert "served first" not in alone and "no other offer was served" in alone, alone
    # some went to others
    shared = explain(dict(ask, filled_wh=40), dict(uniform, volume_wh=66))
    assert "cheaper and earlier offers were served first" in shared, shared
    assert "no other offer" not in shared
    bid = {"side": "buy", "energy_wh": 500, "limit_price": 200_000}
    scarce = dict(uniform, asks=4, bids=6, ask_wh=80, bid_wh=1_500)
    alone = explain(dict(bid, filled_wh=80), dict(scarce, volume_wh=80))
    assert alone.startswith(
        "Less was offered than neighbours wanted at your price: 80 Wh offered against 1.50 kWh bid, "
        "and all 80 Wh neighbours sold went to your bid (no other bid was served)."
    ), alone
    shared = explain(dict(bid, filled_wh=30), dict(scarce, volume_wh=80))
    assert "higher and earlier bids were served first" in shared, shared
    # withheld sums and volume: others were served when this order got none of a volume > 0;
    # of an order that got some, what others got is not said either way
    hidden = dict(uniform, volume_wh=None, bid_wh=None, bid_wh_note="fewer than 3 bids")
    none = explain(dict(ask, filled_wh=0), hidden)
    assert "(fewer than 3 bids: the sums are not shown); cheaper and earlier offers were served first" in none
    some = explain(dict(ask, filled_wh=30), hidden)
    assert "served first" not in some and "no other offer" not in some, some
    assert "nor what other offers got" in some
