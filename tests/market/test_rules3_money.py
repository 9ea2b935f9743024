"""Ledger rules 3 in the market (docs/ledger.md "Rules", docs/market.md): two wrong-money bugs a QA
pass found, fixed for new ledgers only; a ledger on rules 2 re-executes as it was made.

1. Under ``meter_then_gridops`` a reading correction that moved no money was forgotten: the
   figures kept for a re-settlement (``settled``'s ``measured``) stayed the old ones, so when the
   grid operator's data arrived after the readings had left the state, the interval was re-settled
   on the old reading (the seller paid for 800 Wh where its corrected reading says 500), and a late
   reading taken while the other party's was still missing was lost (the buyer then blamed for a
   missing reading it had sent).
2. A cancelled order came back: the cancellation (seq 2) removed the order from the book, so the
   older seq 1 arriving after it (a resend after an outage) was booked, and it traded."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.envelope import Rejected
from chain.genesis import genesis_from_dict
from market.app import MarketApp
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, PARAMS, T0, order, reading

SELLER, BUYER = 1, 2
PRUNED = I1 + 12 * 900  # the readings of I1 have left the state (correction window 4 or 6 intervals)


def community(tmp_path: Path, rules: int, window: int | None = None) -> LocalCommunity:
    """Four meters; with a correction ``window`` (intervals), settlement on the meters then the
    grid operator's data (validator 0 its importer)."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    d = c.genesis.doc
    app = {}
    if window is not None:
        app = {
            "settlement_source": "meter_then_gridops",
            "gridops_operators": [c.validators[0].id],
            "correction_window_intervals": window,
        }
    c.genesis = genesis_from_dict(
        {
            "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
            "chain": {"sequencer": d["chain"]["sequencer"], "rules": rules},
            "app": {**PARAMS, **app},
            "validators": list(d["validators"].values()),
            "members": list(d["members"].values()),
            "meters": list(d["meters"].values()),
        }
    )
    c.open_ledgers(tmp_path, MarketApp)
    return c


def results(c: LocalCommunity, kind: str) -> list[dict]:
    store = c.ledgers[0].store
    return [r for h in range(1, store.height() + 1) for r in store.results(h) if r["kind"] == kind]


def statuses(block) -> list[str]:
    return [r.get("reason") or r["status"] for r in block.results if r["kind"] == "tx"]


def trade_1000_wh(c: LocalCommunity) -> None:
    t = T0 + 10
    c.run_block([order(c, SELLER, "sell", 1000, 90_000, t), order(c, BUYER, "buy", 1000, 200_000, t)], t)
    c.run_block([], I1 - 300)  # gate closure: 1000 Wh traded


def gridops(c: LocalCommunity, meter: int, import_wh: int, export_wh: int, t: int):
    body = {
        "meter": c.meters[meter].id,
        "metering_point": f"MP{meter}",
        "rows": [{"interval": I1, "import_wh": import_wh, "export_wh": export_wh, "quality": "measured"}],
    }
    return c.validators[0].sign(c.community, "gridops", body, created=t)


@pytest.mark.parametrize("rules, settled_wh", [(3, 500), (2, 800)])
def test_a_correction_that_moves_no_money_is_kept_for_the_grid_operators_data(tmp_path, rules, settled_wh):
    """The seller reads 800 Wh exported, the buyer 300 imported: 300 settle. The seller corrects
    to 500 (still 300 settle: no adjustment). The buyer's grid operator data (1000 Wh imported)
    arrives after the readings left the state: rules 3 settle 500 Wh, the corrected export; rules
    2 settle 800, the reading the seller itself corrected (as every such ledger did)."""
    c = community(tmp_path, rules, window=4)
    trade_1000_wh(c)
    t = I1 + 905
    c.run_block(
        [
            reading(c, SELLER, I1 - 900, 0, 0, t),
            reading(c, SELLER, I1, 0, 800, t),
            reading(c, BUYER, I1 - 900, 0, 0, t),
            reading(c, BUYER, I1, 300, 0, t),
        ],
        t,
    )
    assert [s["settled_wh"] for s in results(c, "settlement")] == [300]
    b = c.run_block([reading(c, SELLER, I1, 0, 500, t + 10)], t + 10)
    assert statuses(b) == ["ok"] and not [r for r in b.results if r["kind"] == "adjustment"]
    measured = c.ledgers[0].state["app"]["settled"][str(I1)]["measured"]
    assert measured[c.meters[SELLER].id] == ([0, 500] if rules >= 3 else [0, 800])
    c.run_block([], PRUNED)
    assert str(I1) not in c.ledgers[0].state["app"]["readings"].get(c.meters[SELLER].id, {})
    b = c.run_block([gridops(c, BUYER, 1000, 0, PRUNED + 5)], PRUNED + 5)
    assert statuses(b) == ["ok"]
    (adjustment,) = results(c, "adjustment")
    assert (adjustment["reason"], adjustment["status"]) == ("gridops_data", "settled")
    assert 300 + adjustment["delta_wh"] == settled_wh
    assert adjustment["delta_value"] == (settled_wh - 300) * 145  # 145k per kWh (the midpoint)


@pytest.mark.parametrize("rules", [3, 2])
def test_a_late_reading_while_the_other_is_missing_is_kept_for_the_grid_operators_data(tmp_path, rules):
    """Nobody read by the deadline: unsettled, missing_reading. The buyer's late readings (1000
    Wh) change nothing yet (the seller's are still missing). The seller's grid operator data
    (1000 Wh exported) arrives after the readings left the state: rules 3 settle the 1000 Wh;
    rules 2 had forgotten the buyer's readings and flag the buyer as missing, as before."""
    c = community(tmp_path, rules, window=6)  # the late readings are taken
    trade_1000_wh(c)
    c.run_block([], I1 + 3 * 900)  # the settlement deadline
    (settlement,) = results(c, "settlement")
    assert (settlement["status"], settlement["flag"]) == ("unsettled", "missing_reading")
    t = I1 + 3 * 900 + 10
    b = c.run_block([reading(c, BUYER, I1 - 900, 0, 0, t), reading(c, BUYER, I1, 1000, 0, t)], t)
    assert statuses(b) == ["ok", "ok"] and not [r for r in b.results if r["kind"] == "adjustment"]
    c.run_block([], PRUNED)
    assert str(I1) not in c.ledgers[0].state["app"]["readings"].get(c.meters[BUYER].id, {})
    c.run_block([gridops(c, SELLER, 0, 1000, PRUNED + 5)], PRUNED + 5)
    (adjustment,) = results(c, "adjustment")
    balances = c.ledgers[0].state["app"]["balances"]
    if rules >= 3:
        assert (adjustment["status"], adjustment["delta_wh"]) == ("settled", 1000)
        # 145k per kWh to the seller; the buyer pays it with the grid fee and levies (25k per kWh)
        assert (balances[c.members[SELLER].id], balances[c.members[BUYER].id]) == (145_000, -170_000)
    else:
        assert (adjustment["status"], adjustment["flag"]) == ("unsettled", "missing_reading")
        assert adjustment["delta_wh"] == 0 and balances == {}


@pytest.mark.parametrize("rules, booked", [(3, False), (2, True)])
def test_an_order_older_than_a_cancellation_is_stale(tmp_path, rules, booked):
    """Seq 2 cancels; the older seq 1 of the same meter and interval arrives after it. Rules 3
    refuse it as stale_order (also at a node's intake) and nothing trades; rules 2 book it and
    it trades, as every such ledger did."""
    c = community(tmp_path, rules)
    t = T0 + 10
    older = order(c, SELLER, "sell", 1000, 90_000, t)  # seq 1
    cancel = order(c, SELLER, "sell", 0, 90_000, t)  # seq 2
    c.run_block([cancel], t)
    if not booked:
        with pytest.raises(Rejected) as refused:
            c.ledgers[0].intake(older.to_bytes(), t + 5)
        assert refused.value.reason == "stale_order"
    b = c.run_block([older], t + 5)
    assert statuses(b) == (["ok"] if booked else ["stale_order"])
    c.run_block([order(c, BUYER, "buy", 1000, 200_000, t + 6)], t + 6)
    c.run_block([], I1 - 300)
    assert [tr["energy_wh"] for tr in results(c, "trade")] == ([1000] if booked else [])


def test_an_order_newer_than_a_cancellation_is_taken_and_the_cancellation_forgotten_at_the_gate(tmp_path):
    c = community(tmp_path, 3)
    t = T0 + 10
    c.run_block([order(c, SELLER, "sell", 1000, 90_000, t)], t)  # seq 1
    c.run_block([order(c, SELLER, "sell", 0, 90_000, t + 1)], t + 1)  # seq 2 cancels
    assert c.ledgers[0].state["app"]["cancelled"] == {str(I1): {c.meters[SELLER].id: 2}}
    b = c.run_block([order(c, SELLER, "sell", 400, 90_000, t + 2)], t + 2)  # seq 3
    assert statuses(b) == ["ok"]
    c.run_block([order(c, BUYER, "buy", 1000, 200_000, t + 3)], t + 3)
    c.run_block([], I1 - 300)
    assert [tr["energy_wh"] for tr in results(c, "trade")] == [400]
    assert c.ledgers[0].state["app"]["cancelled"] == {}  # its gate closed: no order for it is taken


def test_rules_2_keep_no_cancellations(tmp_path):
    """A ledger on rules 2 keeps the state it always had (its state root must not change)."""
    c = community(tmp_path, 2)
    t = T0 + 10
    c.run_block([order(c, SELLER, "sell", 0, 90_000, t)], t)
    assert "cancelled" not in c.ledgers[0].state["app"]
