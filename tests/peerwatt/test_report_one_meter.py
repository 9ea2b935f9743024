"""`peerwatt report --meter`: the KPIs of one household, and tables without rows.

Found in a QA pass: a household that only sold had its P2P sales divided by its import, a "P2P
share of consumption" of 170 %; and a period without trades gave a 1-byte trades CSV without a
header, which pandas.read_csv refuses (EmptyDataError).
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from market.app import MarketApp
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, order, reading


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    """Meter 0 imports 400 Wh and exports 1000 Wh, and sells 600 Wh to meter 1, which imports 800
    Wh; meter 2 reads (300 Wh imported) and never trades."""
    base = tmp_path_factory.mktemp("one-meter")
    c = make_community(validators=1, members=3, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(base / "nodes", MarketApp)
    t = T0 + 10
    c.run_block([order(c, 0, "sell", 1000, 90_000, t), order(c, 1, "buy", 600, 200_000, t)], t)
    c.run_block([], I1 - 300)
    t = I1 + 905
    c.run_block(
        [
            reading(c, 0, I1 - 900, 0, 5000, t),
            reading(c, 0, I1, 400, 6000, t),
            reading(c, 1, I1 - 900, 2000, 0, t),
            reading(c, 1, I1, 2800, 0, t),
            reading(c, 2, I1 - 900, 700, 0, t),
            reading(c, 2, I1, 1000, 0, t),
        ],
        t,
    )
    c.ledgers[0].close()
    return base / "nodes" / "validator-0", [m.id for m in c.meters]


def _report(data, out, *args):
    res = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "report", "--data", str(data), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return pd.read_csv(out.with_name(f"{out.stem}-kpis.csv")).iloc[0]


def test_a_sellers_share_of_consumption_counts_only_what_it_bought(ledger, tmp_path):
    data, (seller, buyer, _) = ledger
    kpis = _report(data, tmp_path / "seller.csv", "--meter", seller)
    assert kpis["metered_import_wh"] == 400 and kpis["metered_export_wh"] == 1000
    assert kpis["p2p_share_of_consumption"] == 0  # it was 600 / 400 = 1.5
    assert kpis["self_consumption"] == 0.6  # the share of its export sold in the community
    assert kpis["p2p_bought_wh"] == 0 and kpis["p2p_sold_wh"] == 600
    assert kpis["p2p_settled_wh"] == 600  # the energy of its settled trades

    kpis = _report(data, tmp_path / "buyer.csv", "--meter", buyer)
    assert kpis["p2p_share_of_consumption"] == 600 / 800
    assert pd.isna(kpis["self_consumption"])  # it exported nothing: undefined, not 0
    assert kpis["p2p_bought_wh"] == 600 and kpis["p2p_sold_wh"] == 0


def test_the_community_kpis_count_each_settled_trade_once(ledger, tmp_path):
    data, _ = ledger
    kpis = _report(data, tmp_path / "all.csv")
    assert kpis["metered_import_wh"] == 400 + 800 + 300 and kpis["metered_export_wh"] == 1000
    assert kpis["p2p_settled_wh"] == kpis["p2p_bought_wh"] == kpis["p2p_sold_wh"] == 600
    assert kpis["p2p_share_of_consumption"] == 600 / 1500
    assert kpis["self_consumption"] == 600 / 1000


def test_no_meters_share_is_above_one(ledger, tmp_path):
    data, meters = ledger
    for meter in meters:
        kpis = _report(data, tmp_path / f"{meter}.csv", "--meter", meter)
        for share in ("p2p_share_of_consumption", "self_sufficiency", "self_consumption"):
            assert pd.isna(kpis[share]) or 0 <= kpis[share] <= 1, (meter, share, kpis[share])


def test_tables_without_rows_keep_their_header(ledger, tmp_path):
    data, (seller, _, quiet) = ledger
    _report(data, tmp_path / "some.csv")
    _report(data, tmp_path / "none.csv", "--meter", quiet)  # a meter that never traded
    for table in ("trades", "settlements"):
        some = pd.read_csv(tmp_path / f"some-{table}.csv")
        none = pd.read_csv(tmp_path / f"none-{table}.csv")  # (EmptyDataError before)
        assert len(some) == 1 and len(none) == 0
        assert list(none.columns) == list(some.columns)
