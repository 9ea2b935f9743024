"""Prices a vote may set: found in a QA pass, `set_param retail_price = 2**53 - 1` passed by a
members' majority, after which a household's money on the dashboard's JSON API went beyond the
ledger's integers (±(2**53 - 1)). With the bounds (genesis chain.max_open_proposals, every
genesis peerwatt writes) a price is at most MAX_PRICE_PER_KWH; older ledgers re-execute as they
did."""

from __future__ import annotations

import pytest

from chain.engine import genesis_state
from chain.store import StoreError
from market.app import MarketApp
from market.params import MAX_PRICE_PER_KWH, PRICE_PARAMS, check_params
from tests.support.localnet import make_community

T0 = 1_764_000_000


def _vote_price(tmp_path, name: str, value: int, **chain_options) -> list[str]:
    """Propose ``name = value`` and let both members vote yes: the outcome of each transaction."""
    c = make_community(validators=1, members=2, app="market", time=T0, chain_options=chain_options)
    c.open_ledgers(tmp_path, MarketApp)
    m0, m1 = c.members
    propose = m0.sign(
        c.community,
        "propose",
        {"action": "set_param", "args": {"name": name, "value": value}, "deadline": T0 + 3600},
        created=T0 + 1,
    )
    block = c.run_block([propose], T0 + 1)
    outcomes = [r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"]
    if outcomes != ["ok"]:
        return outcomes
    pid = next(iter(c.ledgers[0].chain_state["proposals"]))
    votes = [m.sign(c.community, "vote", {"proposal": pid, "vote": "yes"}, created=T0 + 2) for m in (m0, m1)]
    c.run_block(votes, T0 + 2)
    return ["ok", str(c.ledgers[0].chain_state["params"][name])]


@pytest.mark.parametrize("name", ["retail_price", "grid_fee_per_kwh", "levies_per_kwh"])
def test_with_the_bounds_a_price_beyond_the_cap_cannot_be_voted(tmp_path, name):
    assert _vote_price(tmp_path / "over", name, 2**53 - 1, max_open_proposals=32) == ["bad_value"]
    assert _vote_price(tmp_path / "cap", name, MAX_PRICE_PER_KWH, max_open_proposals=32) == [
        "ok",
        str(MAX_PRICE_PER_KWH),
    ]


def test_older_ledgers_take_the_vote_as_they_did(tmp_path):
    assert _vote_price(tmp_path, "retail_price", 2**53 - 1) == ["ok", str(2**53 - 1)]


def test_the_cap_holds_for_a_bounded_genesis_and_every_price():
    for name in PRICE_PARAMS:
        params = {"feed_in_price": 1, "retail_price": MAX_PRICE_PER_KWH, name: MAX_PRICE_PER_KWH + 1}
        with pytest.raises(ValueError, match=f"{name} must be at most"):
            check_params(params, bounded=True)
        if name != "feed_in_price":  # (which may not exceed the retail price anyway)
            check_params(params)  # unbounded: as before
    c = make_community(
        app="market",
        app_params={"retail_price": MAX_PRICE_PER_KWH + 1},
        chain_options={"max_open_proposals": 32},
    )
    with pytest.raises(StoreError, match="retail_price must be at most"):
        genesis_state(c.genesis, MarketApp())
