"""`peerwatt report` over a store filled by a real ledger run with the market app."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from market.app import MarketApp
from peerwatt.reports import build_report
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, order, reading


def test_report_tables_match_the_ledger(tmp_path):
    c = make_community(validators=1, members=3, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "nodes", MarketApp)
    t = T0 + 10
    c.run_block([order(c, 0, "sell", 1000, 90_000, t), order(c, 1, "buy", 600, 200_000, t)], t)
    c.run_block([], I1 - 300)
    t = I1 + 905
    c.run_block(
        [
            reading(c, 0, I1 - 900, 0, 5000, t),
            reading(c, 0, I1, 0, 6000, t),
            reading(c, 1, I1 - 900, 2000, 0, t),
            reading(c, 1, I1, 2800, 0, t),
        ],
        t,
    )
    c.ledgers[0].close()
    out = tmp_path / "r.csv"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "report",
            "--data",
            str(tmp_path / "nodes" / "validator-0"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "\n1 trade, 0.6 kWh settled P2P, self-sufficiency 100.0%, total savings " in res.stdout
    households = pd.read_csv(out).set_index("meter")
    seller, buyer = c.meters[0].id, c.meters[1].id
    assert households.loc[seller, "export_wh"] == 1000 and households.loc[seller, "p2p_sold_wh"] == 600
    assert households.loc[buyer, "import_wh"] == 800 and households.loc[buyer, "p2p_bought_wh"] == 600
    # savings = baseline - actual, each part gross
    row = households.loc[buyer]
    assert row["baseline_cost"] - row["actual_cost"] == row["savings"]
    trades = pd.read_csv(tmp_path / "r-trades.csv")
    assert trades["energy_wh"].sum() == 600
    kpis = pd.read_csv(tmp_path / "r-kpis.csv").iloc[0]
    assert kpis["p2p_settled_wh"] == 600 and abs(kpis["p2p_share_of_consumption"] - 600 / 800) < 1e-9
    # the 800 Wh imported were balanced by the 1000 Wh exported in the same interval (the
    # dashboard's definition; it was the P2P share again)
    assert kpis["self_sufficiency"] == 1.0
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "report",
            "--data",
            str(tmp_path / "nodes" / "validator-0"),
            "--from",
            "yesterday",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "--from" in bad.stderr and bad.stderr.count("\n") == 1


def test_report_does_not_count_readings_that_cannot_be_true(tmp_path):
    """A jump beyond the enrolled capacity (10 kW: 2,500 Wh per interval) or a reading with a serial
    that is not the enrolled one is not metered energy: the statement would otherwise pay feed-in
    for 99,999,999 Wh. The household row names the flags instead."""
    c = make_community(validators=1, members=2, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "nodes", MarketApp)
    t = I1 + 3 * 900 + 5
    c.run_block(
        [
            reading(c, 0, I1 - 900, 0, 5000, t),
            reading(c, 0, I1, 0, 6000, t),  # 1,000 Wh: plausible
            reading(c, 0, I1 + 900, 0, 99_999_999, t),  # the jump
            reading(c, 0, I1 + 1800, 0, 99_999_999 + 500, t),
            reading(c, 1, I1 - 900, 100, 0, t, serial="EVIL-1"),
            reading(c, 1, I1, 900, 0, t, serial="EVIL-1"),
        ],
        t,
    )
    tables = build_report(c.ledgers[0].store)
    households = tables["households"].set_index("meter")
    seller, other = c.meters[0].id, c.meters[1].id
    assert households.loc[seller, "export_wh"] == 1500
    assert households.loc[seller, "flags"] == f"implausible_jump@{I1 + 900}"
    assert households.loc[other, "import_wh"] == 0
    # (and its meter sent no reading for the two intervals after: left out, and said so)
    assert (
        households.loc[other, "flags"] == f"serial_not_enrolled@{I1} missing_reading@{I1 + 900}..{I1 + 1800}"
    )


def test_report_counts_no_reading_the_ledger_refused(tmp_path):
    """A reading the ledger refused (here: for an interval outside the correction window) stays
    in the block as a refused transaction; the report must not count it as metered energy."""
    from chain.store import Store
    from peerwatt.reports import build_report

    c = make_community(validators=1, members=3, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "nodes", MarketApp)
    t = I1 + 905
    c.run_block([reading(c, 0, I1 - 900, 0, 5000, t), reading(c, 0, I1, 0, 6000, t)], t)
    late = I1 + 40 * 900
    block = c.run_block([reading(c, 0, I1 + 900, 0, 6500, late)], late)
    assert block.results[0]["status"] == "rejected" and block.results[0]["reason"] == "reading_too_old"
    c.ledgers[0].close()
    store = Store.open(tmp_path / "nodes" / "validator-0", readonly=True)
    try:
        households = build_report(store)["households"].set_index("meter")
    finally:
        store.close()
    assert households.loc[c.meters[0].id, "export_wh"] == 1000


def test_a_vote_in_a_block_at_the_periods_end_belongs_to_the_next_period(tmp_path):
    """Found in a QA pass: the report of [start, end) took the tariffs after a block at exactly
    `end` (the first instant of the next period), so a vote passed at midnight priced the month
    before it."""
    from tests.support.market_ledger import build_market

    c = build_market(tmp_path / "ledgers", validators=1)
    head = c.ledgers[0].head["time"]
    end = head - head % 86_400 + 86_400  # the next midnight after the trade round
    body = {"action": "set_param", "args": {"name": "retail_price", "value": 400_000}, "deadline": end + 3600}
    proposal = c.members[0].sign(c.community, "propose", body, created=end)
    votes = [
        m.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=end)
        for m in c.members[1:3]
    ]
    c.run_block([proposal, *votes], end)  # passes at exactly `end`
    assert c.ledgers[0].chain_state["params"]["retail_price"] == 400_000
    households = build_report(c.ledgers[0].store, start=end - 86_400 * 2, end=end)["households"]
    assert set(households["retail_price_per_kwh"]) == {PARAMS.get("retail_price", 300_000)}
    for ledger in c.ledgers:
        ledger.close()
