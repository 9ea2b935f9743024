"""Ledger rules 5 in the market (docs/ledger.md "Rules", docs/market.md), found in a QA pass and
fixed for new ledgers only; a ledger on rules 4 re-executes as it was made.

1. A community voted ``settlement_source`` from "meter" (or "meter_then_gridops") to "gridops";
   an interval already settled on its readings was re-settled as soon as the grid operator's row
   of ONE of its meters arrived, and every other meter counted as ``missing_gridops``: the seller's
   row, equal to what its meter read, reversed the whole interval (seller -95,000, buyers
   +96,000 / +24,000), for good if the buyers' rows never came. On rules 5 a meter without a row
   keeps what the interval settled on; only a meter with a row changes, by the difference.
2. A community voted from "gridops" back to "meter" 12 h after its intervals had cleared: their
   readings had come on time but were pruned while the intervals waited for the grid operator's
   data, so they settled ``unsettled`` / ``missing_reading``. On rules 5 the readings of intervals
   still waiting are kept whatever the source."""

from __future__ import annotations

from pathlib import Path

from chain.genesis import genesis_from_dict
from market.app import MarketApp
from tests.market.test_governance_recheck import propose, yes
from tests.market.test_gridops_app import I2, START, USE, trade_two_intervals
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, PARAMS, T0, reading

VOTED = I2 + 1800


def community(tmp_path: Path, source: str, rules: int, **extra) -> LocalCommunity:
    """Four meters (0, 1 sell; 2, 3 buy), validator 0 the grid data operator, fees at clearing."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    d = c.genesis.doc
    c.genesis = genesis_from_dict(
        {
            "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
            "chain": {"sequencer": d["chain"]["sequencer"], "rules": rules},
            "app": {
                **PARAMS,
                "settlement_source": source,
                "gridops_operators": [c.validators[0].id],
                "fee_rates_at": "clearing",
                **extra,
            },
            "validators": list(d["validators"].values()),
            "members": list(d["members"].values()),
            "meters": list(d["meters"].values()),
        }
    )
    c.open_ledgers(tmp_path, MarketApp)
    return c


def vote_source(c: LocalCommunity, value: str, t: int) -> None:
    p = propose(c, c.members[0], "set_param", {"name": "settlement_source", "value": value}, t)
    c.run_block([p, yes(c, c.members[1], p, t), yes(c, c.members[2], p, t)], t)
    assert c.ledgers[0].chain_state["params"]["settlement_source"] == value


def gridops(c: LocalCommunity, meter: int, data: dict[int, tuple[int, int]], t: int):
    body = {
        "meter": c.meters[meter].id,
        "metering_point": f"AT{meter:04d}",
        "rows": [
            {"interval": i, "import_wh": imp, "export_wh": exp, "quality": "measured"}
            for i, (imp, exp) in sorted(data.items())
        ],
    }
    return c.validators[0].sign(c.community, "gridops", body, created=t)


def results(c: LocalCommunity, kind: str, since: int = 1) -> list[dict]:
    store = c.ledgers[0].store
    return [r for h in range(since, store.height() + 1) for r in store.results(h) if r["kind"] == kind]


def balances(c: LocalCommunity) -> dict[str, int]:
    return dict(c.ledgers[0].state["app"]["balances"])


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def _seller_row_after_switch(tmp_path: Path, rules: int, source: str, row: tuple[int, int]):
    """The QA's study: I1, I2 settle on readings; a vote sets "gridops"; the seller's row for I1
    alone arrives. The adjustments and balance changes it gives."""
    c = community(tmp_path, source, rules)
    trade_two_intervals(c)
    settled = results(c, "settlement")
    assert [(r["status"], r["settled_wh"]) for r in settled] == [("settled", 800), ("settled", 200)] * 2
    vote_source(c, "gridops", VOTED)
    before, since = balances(c), c.ledgers[0].store.height() + 1
    block = c.run_block([gridops(c, 0, {I1: row}, VOTED + 60)], VOTED + 60)
    assert [r["status"] for r in block.results if r["kind"] == "tx"] == ["ok"]
    return c, results(c, "adjustment", since), changes(before, balances(c))


def test_rules_4_a_row_equal_to_the_reading_reverses_the_interval(tmp_path: Path) -> None:
    c, adjustments, moved = _seller_row_after_switch(tmp_path, 4, "meter", USE[0])
    assert [(a["delta_wh"], a["delta_value"], a["status"], a["flag"]) for a in adjustments] == [
        (-800, -76_000, "unsettled", "missing_gridops"),
        (-200, -19_000, "unsettled", "missing_gridops"),
    ]
    assert moved["grid_fees"] == -20_000
    assert sorted(moved.values()) == [-95_000, -20_000, -5_000, 24_000, 96_000]


def test_rules_5_a_row_equal_to_the_reading_changes_nothing(tmp_path: Path) -> None:
    for source in ("meter", "meter_then_gridops"):
        c, adjustments, moved = _seller_row_after_switch(tmp_path / source, 5, source, USE[0])
        assert adjustments == [] and moved == {}, source
        # the buyers' rows, equal to their readings, change nothing either
        since = c.ledgers[0].store.height() + 1
        before = balances(c)
        c.run_block([gridops(c, m, {I1: USE[m]}, VOTED + 120) for m in (2, 3)], VOTED + 120)
        assert results(c, "adjustment", since) == [] and balances(c) == before


def test_rules_5_only_the_meter_with_a_row_changes_by_the_difference(tmp_path: Path) -> None:
    # the operator says the seller exported 600 Wh in I1, not 1000: 400 Wh less settle, and the
    # buyers, without rows, keep what their readings gave
    c, adjustments, moved = _seller_row_after_switch(tmp_path, 5, "meter", (0, 600))
    assert sum(a["delta_wh"] for a in adjustments) == -400
    assert all(a["flag"] != "missing_gridops" for a in adjustments)
    assert all(a["reason"] == "gridops_data" for a in adjustments)
    assert {a["source"] for a in adjustments} == {"mixed"}  # the seller's row, the buyers' readings
    assert sum(a["delta_value"] for a in adjustments) == -38_000
    assert moved["grid_fees"] == -8_000 and moved["levies"] == -2_000
    # the window ends without the buyers' rows: nothing more changes
    since, before = c.ledgers[0].store.height() + 1, balances(c)
    end = I1 + 900 + 3_456_000 + 900
    for t in range(VOTED + 900, end, 86_400):
        c.run_block([], t)
    c.run_block([], end)
    assert results(c, "adjustment", since) == [] and balances(c) == before


def test_rules_5_a_reading_correction_after_the_vote_changes_nothing(tmp_path: Path) -> None:
    # under "gridops" the readings no longer count: on rules 4 a buyer's correction re-settled the
    # interval with every meter missing its row
    outcome = {}
    for rules in (4, 5):
        c = community(tmp_path / str(rules), "meter", rules)
        trade_two_intervals(c)
        vote_source(c, "gridops", VOTED)
        since, before = c.ledgers[0].store.height() + 1, balances(c)
        imp, exp = START[2]
        c.run_block([reading(c, 2, I1, imp + 700, exp, VOTED + 60)], VOTED + 60)
        outcome[rules] = ({a["flag"] for a in results(c, "adjustment", since)}, balances(c) == before)
    assert outcome == {4: ({"missing_gridops"}, False), 5: (set(), True)}


def test_rules_5_readings_gone_the_other_meters_keep_what_they_settled_on(tmp_path: Path) -> None:
    # the seller's row arrives a day later, after the readings of I1 have left the state
    c = community(tmp_path, "meter", 5)
    trade_two_intervals(c)
    vote_source(c, "gridops", VOTED)
    late = I2 + 86_400
    c.run_block([], late - 60)
    assert str(I1) not in c.ledgers[0].state["app"]["readings"].get(c.meters[2].id, {})
    since, before = c.ledgers[0].store.height() + 1, balances(c)
    c.run_block([gridops(c, 0, {I1: USE[0]}, late)], late)
    assert results(c, "adjustment", since) == [] and balances(c) == before


def test_rules_5_an_interval_first_settled_under_gridops_still_waits_for_every_row(tmp_path: Path) -> None:
    c = community(tmp_path, "gridops", 5, gridops_window_s=7200)
    trade_two_intervals(c)
    c.run_block([gridops(c, 0, {I1: USE[0]}, I2 + 1000)], I2 + 1000)
    assert [r for r in results(c, "settlement") if r["interval"] == I1] == []
    c.run_block([], I1 + 900 + 7200)
    flags = [(r["status"], r["flag"]) for r in results(c, "settlement") if r["interval"] == I1]
    assert flags == [("unsettled", "missing_gridops")] * 2


def _back_to_meter_after_12_h(tmp_path: Path, rules: int) -> list[tuple]:
    c = community(tmp_path, "gridops", rules)
    trade_two_intervals(c)
    t = I2 + 12 * 3600
    c.run_block([], t - 10)
    vote_source(c, "meter", t)
    c.run_block([], t + 900)
    return [(r["interval"], r["status"], r["flag"], r["settled_wh"]) for r in results(c, "settlement")]


def test_rules_4_back_to_meter_settles_missing_reading(tmp_path: Path) -> None:
    settled = _back_to_meter_after_12_h(tmp_path, 4)
    assert {(s[1], s[2]) for s in settled} == {("unsettled", "missing_reading")}
    assert len(settled) == 4


def test_rules_5_back_to_meter_settles_on_the_readings_kept(tmp_path: Path) -> None:
    settled = _back_to_meter_after_12_h(tmp_path, 5)
    assert sorted(settled) == sorted([(i, "settled", None, wh) for i in (I1, I2) for wh in (800, 200)])
