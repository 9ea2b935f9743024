"""Ledger rules 4 in the market (docs/ledger.md "Rules", docs/market.md), found in a QA pass and
fixed for new ledgers only; a ledger on rules 3 re-executes as it was made.

1. A vote lowering ``gate_s`` after an interval had cleared opened it again: new orders for it
   were booked, it cleared a second time, and that clearing replaced the first one's trades, which
   never settled (a seller delivered 1000 Wh and was never paid).
2. A feed-in price above what an order's limit can carry (chain.messages.MAX_PRICE) passed the
   checks and left no price any order could be signed with.
3. ``correction_window_intervals`` of 0 refused every reading and 1 took one for 60 s, so no trade
   ever settled: the window must cover the readings a settlement needs until it is due."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.messages import MAX_PRICE
from market.app import MarketApp
from market.params import MAX_PRICE_PER_KWH, check_params
from tests.market.test_governance_recheck import propose, yes
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import PARAMS, T0, order, reading

INTERVAL = T0 + 3600


def _results(c: LocalCommunity, kind: str) -> list[dict]:
    store = c.ledgers[0].store
    return [r for h in range(1, store.height() + 1) for r in store.results(h) if r["kind"] == kind]


def _gate_lowered_after_clearing(tmp_path: Path, rules: int) -> tuple[list[str], LocalCommunity]:
    """Meter 0 sells 1000 Wh to meter 1 at the gate (600 s ahead); a vote then lowers gate_s to
    300 and meters 2 and 3 order for the same interval: their orders' outcomes."""
    params = dict(PARAMS, gate_s=600)
    chain = {"max_open_proposals": 32, "rules": rules}
    c = make_community(validators=1, members=4, app="market", app_params=params, chain_options=chain, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    t = T0 + 10
    sell, buy = (
        order(c, 0, "sell", 1000, 90_000, t, interval=INTERVAL),
        order(c, 1, "buy", 1000, 200_000, t, interval=INTERVAL),
    )
    c.run_block([sell, buy], t)
    c.run_block([], INTERVAL - 600)  # the gate closes: the trade
    assert len(_results(c, "trade")) == 1
    t = INTERVAL - 550
    vote = propose(c, c.members[0], "set_param", {"name": "gate_s", "value": 300}, t)
    c.run_block([vote], t)
    c.run_block([yes(c, c.members[1], vote, t + 1), yes(c, c.members[2], vote, t + 1)], t + 1)
    assert c.ledgers[0].chain_state["params"]["gate_s"] == 300
    t = INTERVAL - 500
    late = [
        order(c, 2, "sell", 700, 90_000, t, interval=INTERVAL),
        order(c, 3, "buy", 700, 200_000, t, interval=INTERVAL),
    ]
    block = c.run_block(late, t)
    outcomes = [r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"]
    c.run_block([], INTERVAL - 300)  # the new gate
    t = INTERVAL + 905
    readings = []
    for m in range(4):  # each meter delivered what its order said (meters 0 and 2 export)
        energy = 1000 if m < 2 else 700
        exported = energy if m % 2 == 0 else 0
        readings += [
            reading(c, m, INTERVAL - 900, 0, 0, t),
            reading(c, m, INTERVAL, energy - exported, exported, t),
        ]
    c.run_block(readings, t)
    c.run_block([], INTERVAL + 4 * 900)
    return outcomes, c


def test_rules_4_an_interval_clears_once_whatever_a_later_gate_vote_says(tmp_path: Path) -> None:
    outcomes, c = _gate_lowered_after_clearing(tmp_path, rules=4)
    assert outcomes == ["interval_closed", "interval_closed"]
    (trade,) = _results(c, "trade")
    (settlement,) = _results(c, "settlement")
    assert (settlement["seller"], settlement["settled_wh"]) == (trade["seller"], 1000)
    assert sum(c.ledgers[0].state["app"]["balances"].values()) == 0


def test_rules_3_keep_the_second_clearing_as_it_was(tmp_path: Path) -> None:
    outcomes, c = _gate_lowered_after_clearing(tmp_path, rules=3)
    assert outcomes == ["ok", "ok"]
    assert len(_results(c, "trade")) == 2
    assert len(_results(c, "settlement")) == 1  # the first clearing's trade never settles


@pytest.mark.parametrize("name", ["feed_in_price", "retail_price", "community_price"])
def test_rules_4_limit_prices_stay_within_what_an_order_carries(name: str) -> None:
    params = {"feed_in_price": 1, "retail_price": MAX_PRICE, "community_price": 1, name: MAX_PRICE + 1}
    if name == "feed_in_price":
        params["retail_price"] = MAX_PRICE + 1
    with pytest.raises(ValueError, match=f"{name} must be at most {MAX_PRICE} "):
        check_params(params, bounded=True, rules=4)
    check_params(params, bounded=True, rules=3)  # as before: up to MAX_PRICE_PER_KWH
    fees = {"grid_fee_per_kwh": MAX_PRICE_PER_KWH, "levies_per_kwh": MAX_PRICE_PER_KWH}
    check_params(fees, bounded=True, rules=4)  # fees and levies are no order limits


def test_rules_4_the_correction_window_covers_the_settlement() -> None:
    for window in (0, 1, 3):
        with pytest.raises(ValueError, match=r"at least settle_after_intervals \+ 2 \(4\)"):
            check_params({"correction_window_intervals": window}, rules=4)
        check_params({"correction_window_intervals": window}, rules=3)
    check_params({"correction_window_intervals": 4}, rules=4)
    with pytest.raises(ValueError, match=r"\+ 2 \(7\)"):
        check_params({"correction_window_intervals": 6, "settle_after_intervals": 5}, rules=4)


def test_rules_4_a_vote_for_a_window_that_settles_nothing_is_refused(tmp_path: Path) -> None:
    chain = {"max_open_proposals": 32, "rules": 4}
    c = make_community(validators=1, members=2, app="market", app_params=PARAMS, chain_options=chain, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    vote = propose(c, c.members[0], "set_param", {"name": "correction_window_intervals", "value": 0}, T0 + 1)
    block = c.run_block([vote], T0 + 1)
    (result,) = [r for r in block.results if r["kind"] == "tx"]
    assert (result["status"], result["reason"]) == ("rejected", "bad_value")
