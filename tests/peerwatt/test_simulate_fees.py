"""A household's agent never bids more for P2P energy than its supplier would charge, the grid
fee and levies it pays on top of the P2P price included (meter_agent/strategy.py plan_order);
`peerwatt simulate` runs the real agents, so its households do the same.

Found in a QA pass: the households' limits were fixed draws, clamped only to the feed-in and
retail prices, so with `--grid-fee 200000` every buyer paid the P2P price plus 0.205 per kWh, more
than the retail price (savings down to -0.20), in the very trades of the run without the fee.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from meter_agent.strategy import OrderPlan, StrategyConfig, plan_order

RETAIL, FEED_IN, LEVIES = 300_000, 80_000, 5_000


def simulate(out, *extra: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "simulate", "--homes", "5", "--days", "0.6", "--seed", "1"]
        + ["--validators", "0", "--workers", "1", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr


def plan(forecast_wh: int, fee: int, levies: int = LEVIES, buy: int = 280_000) -> OrderPlan | None:
    cfg = StrategyConfig(sell_limit_price=120_000, buy_limit_price=buy)
    return plan_order(forecast_wh, cfg, capacity_wh=3000, feed_in_price=FEED_IN, retail_price=RETAIL,
                      grid_fee_per_kwh=fee, levies_per_kwh=levies)  # fmt: skip


def test_a_bid_leaves_room_for_the_grid_fee_and_levies():
    assert plan(-500, fee=0, levies=0) == OrderPlan("buy", 500, 280_000)
    assert plan(-500, fee=20_000) == OrderPlan("buy", 500, RETAIL - 20_000 - LEVIES)
    assert plan(-500, fee=20_000, buy=200_000) == OrderPlan("buy", 500, 200_000)  # below the cap
    assert plan(-500, fee=200_000) == OrderPlan("buy", 500, FEED_IN + 15_000)
    assert plan(-500, fee=RETAIL - LEVIES - FEED_IN) == OrderPlan("buy", 500, FEED_IN)  # no gain, no loss
    assert plan(-500, fee=RETAIL - LEVIES - FEED_IN + 1) is None  # no price above feed-in can pay
    # an offer is not touched: the seller receives the price and pays neither
    assert plan(800, fee=250_000) == OrderPlan("sell", 640, 120_000)


def test_no_buyer_pays_more_than_retail_for_p2p_energy(tmp_path):
    fee = 200_000
    simulate(tmp_path / "fee", "--grid-fee", str(fee))
    trades = pd.read_csv(tmp_path / "fee" / "trades.csv")
    assert len(trades) > 0  # (a seller whose limit lies below 0.095 per kWh found buyers)
    assert (trades["price"] + fee + LEVIES <= RETAIL).all(), trades["price"].max()
    households = pd.read_csv(tmp_path / "fee" / "households.csv")
    buyers = households[(households["p2p_bought_wh"] > 0) & (households["p2p_sold_wh"] == 0)]
    assert len(buyers) > 0 and (buyers["savings"] >= 0).all(), buyers[["name", "savings"]]


def test_the_default_study_still_trades(tmp_path):
    simulate(tmp_path / "default")
    households = pd.read_csv(tmp_path / "default" / "households.csv")
    assert households["p2p_bought_wh"].sum() > 0 and households["p2p_sold_wh"].sum() > 0


def test_no_room_above_feed_in_no_trades(tmp_path):
    """A grid fee and levies that leave the buyer no price above feed-in (0.30 - 0.22 - 0.005 <
    0.08): no household bids, so nothing trades (offers stand unanswered)."""
    simulate(tmp_path / "none", "--grid-fee", "220000", "--days", "0.3")
    assert len(pd.read_csv(tmp_path / "none" / "trades.csv")) == 0
    kpis = pd.read_csv(tmp_path / "none" / "kpis.csv").iloc[0]
    assert kpis["trades"] == 0 and kpis["metered_export_wh"] > 0  # the sun shone: there was energy to sell
