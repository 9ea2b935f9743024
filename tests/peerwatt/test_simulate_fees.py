"""`peerwatt simulate`: a simulated household never bids more for P2P energy than its supplier
would charge, the grid fee and levies it pays on top of the P2P price included.

Found in a QA pass: the households' limits were fixed draws, clamped only to the feed-in and
retail prices, so with `--grid-fee 200000` every buyer paid the P2P price plus 0.205 per kWh, more
than the retail price (savings down to -0.20), in the very trades of the run without the fee.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from peerwatt.sim_community import SimOptions, buy_limit_cap, make_homes

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


def test_a_buyers_limit_leaves_room_for_the_grid_fee_and_levies():
    for fee in (20_000, 200_000):
        o = SimOptions(homes=40, grid_fee_per_kwh=fee)
        assert buy_limit_cap(o) == RETAIL - fee - LEVIES
        assert all(FEED_IN < h["buy"] <= RETAIL - fee - LEVIES for h in make_homes(o))
    # the same households whatever the fee: only the limits above the cap change
    assert [h["sell"] for h in make_homes(SimOptions(homes=40, grid_fee_per_kwh=200_000))] == [
        h["sell"] for h in make_homes(SimOptions(homes=40))
    ]
    # no room above the feed-in price: no household trades P2P
    o = SimOptions(homes=5, grid_fee_per_kwh=RETAIL - LEVIES - FEED_IN)
    assert buy_limit_cap(o) is None and all(h["buy"] is None for h in make_homes(o))


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


def test_no_room_above_feed_in_no_orders(tmp_path):
    """A grid fee and levies that leave the buyer no price above feed-in (0.30 - 0.22 - 0.005 <
    0.08): no household orders, so the ledger holds the readings only."""
    simulate(tmp_path / "none", "--grid-fee", "220000", "--days", "0.3")
    assert len(pd.read_csv(tmp_path / "none" / "trades.csv")) == 0
    kpis = pd.read_csv(tmp_path / "none" / "kpis.csv").iloc[0]
    assert kpis["trades"] == 0 and kpis["metered_export_wh"] > 0  # the sun shone: there was energy to sell
