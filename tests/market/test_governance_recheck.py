"""A proposal is checked again when it passes (ledger rules 2, docs/ledger.md "Rules").

Found in a QA pass: each proposal was checked only when it opened. Two ``set_param`` votes, each
fine alone (feed-in 0.25 and retail 0.20 per kWh), both passed and left a market whose every order
was refused as ``price_out_of_range`` (no alarm; a third, unrelated change was then refused naming
feed-in). And an ``enroll_meter`` proposal left open for a key passed after another proposal had
enrolled that key and it had been revoked: the revoked meter traded again, with another owner (its
settlements credited to them). On a ledger with rules 2 such a proposal closes as rejected, with
the reason; a ledger without the field re-executes as it always did."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.envelope import Envelope, Rejected
from chain.keys import generate_private_key
from market.app import MarketApp
from market.params import check_params
from tests.support.localnet import LocalCommunity, Party, make_community

T0 = 1_764_000_000
APP = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}


def community(tmp_path: Path, rules: int | None = 2) -> LocalCommunity:
    chain = {"max_open_proposals": 32} | ({"rules": rules} if rules is not None else {})
    c = make_community(validators=4, members=4, app="market", app_params=APP, chain_options=chain, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    return c


def propose(c: LocalCommunity, who: Party, action: str, args: dict, t: int) -> Envelope:
    body = {"action": action, "args": args, "deadline": t + 86_400}
    return who.sign(c.community, "propose", body, created=t)


def yes(c: LocalCommunity, who: Party, proposal: Envelope, t: int) -> Envelope:
    return who.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)


def gov_results(c: LocalCommunity, block) -> dict[str, dict]:
    return {r["proposal"]: r for r in c.ledgers[0].store.results(block.height) if r.get("kind") == "gov"}


def enrol(c: LocalCommunity, who: Party, key: Party, owner: Party, serial: str, t: int) -> Envelope:
    args = {"key": key.sec1_hex, "serial": serial, "owner": owner.id, "capacity_w": 5_000}
    return propose(c, who, "enroll_meter", args, t)


def order(c: LocalCommunity, meter: Party, price: int, t: int) -> Envelope:
    body = {"side": "sell", "interval": T0 + 1800, "energy_wh": 100, "limit_price": price}
    return meter.sign(c.community, "order", body, created=t)


def test_two_price_changes_that_together_break_the_market(tmp_path: Path) -> None:
    c, t = community(tmp_path), T0 + 10
    m = c.members
    feed_in = propose(c, m[0], "set_param", {"name": "feed_in_price", "value": 250_000}, t)
    retail = propose(c, m[1], "set_param", {"name": "retail_price", "value": 200_000}, t)
    c.run_block([feed_in, retail], t)  # both open: each fine on its own
    block = c.run_block([yes(c, m[1], feed_in, t), yes(c, m[2], feed_in, t), yes(c, m[0], retail, t),
                         yes(c, m[2], retail, t)], t + 5)  # fmt: skip
    results = gov_results(c, block)
    assert results[feed_in.tx_hash.hex()]["outcome"] == "passed"
    second = results[retail.tx_hash.hex()]
    assert second["outcome"] == "rejected" and (second["yes"], second["no"]) == (3, 0)
    assert second["reason"] == (
        "no longer applies: parameter change refused: feed_in_price must be positive and at most retail_price"
    )
    params = c.ledgers[0].chain_state["params"]
    assert (params["feed_in_price"], params["retail_price"]) == (250_000, 300_000)
    check_params(params, True)  # the market in force is one the rules allow
    assert c.ledgers[0].intake(order(c, c.meters[0], 280_000, t + 10).to_bytes(), t + 10).type == "order"


def test_a_ledger_without_rules_re_executes_as_before(tmp_path: Path) -> None:
    """Its blocks must verify as they were made: the change applies to new ledgers only."""
    c, t = community(tmp_path, rules=None), T0 + 10
    m = c.members
    feed_in = propose(c, m[0], "set_param", {"name": "feed_in_price", "value": 250_000}, t)
    retail = propose(c, m[1], "set_param", {"name": "retail_price", "value": 200_000}, t)
    c.run_block([feed_in, retail], t)
    block = c.run_block([yes(c, m[1], feed_in, t), yes(c, m[2], feed_in, t), yes(c, m[0], retail, t),
                         yes(c, m[2], retail, t)], t + 5)  # fmt: skip
    assert {r["outcome"] for r in gov_results(c, block).values()} == {"passed"}
    with pytest.raises(Rejected, match="price_out_of_range"):
        c.ledgers[0].intake(order(c, c.meters[0], 220_000, t + 10).to_bytes(), t + 10)


def test_a_stale_enrolment_does_not_bring_back_a_revoked_meter(tmp_path: Path) -> None:
    c, t = community(tmp_path), T0 + 10
    v, m = c.validators, c.members
    key = Party(generate_private_key())
    first, stale = enrol(c, v[0], key, m[0], "SN-X", t), enrol(c, v[1], key, m[1], "SN-Y", t)
    c.run_block([first, stale], t)
    c.run_block([yes(c, v[1], first, t), yes(c, v[2], first, t)], t + 5)  # enrolled for member 0
    revoke = propose(c, v[0], "revoke_meter", {"meter": key.id}, t + 10)
    c.run_block([revoke, yes(c, v[1], revoke, t + 10), yes(c, v[2], revoke, t + 10)], t + 10)
    block = c.run_block([yes(c, v[0], stale, t + 15), yes(c, v[2], stale, t + 15)], t + 15)
    result = gov_results(c, block)[stale.tx_hash.hex()]
    assert result["outcome"] == "rejected"
    assert result["reason"] == "no longer applies: this meter key is already enrolled or was revoked"
    chain = c.ledgers[0].chain_state
    assert chain["meters"][key.id]["active"] is False and chain["meters"][key.id]["owner"] == m[0].id
    with pytest.raises(Rejected, match="revoked"):
        c.ledgers[0].intake(order(c, key, 100_000, t + 20).to_bytes(), t + 20)


def test_a_second_enrolment_of_a_key_does_not_hand_it_to_another_owner(tmp_path: Path) -> None:
    c, t = community(tmp_path), T0 + 10
    v, m = c.validators, c.members
    key = Party(generate_private_key())
    first, second = enrol(c, v[0], key, m[0], "SN-X", t), enrol(c, v[1], key, m[1], "SN-Y", t)
    c.run_block([first, second], t)
    block = c.run_block([yes(c, v[1], first, t), yes(c, v[2], first, t), yes(c, v[0], second, t),
                         yes(c, v[2], second, t)], t + 5)  # fmt: skip
    results = gov_results(c, block)
    assert results[first.tx_hash.hex()]["outcome"] == "passed"
    assert results[second.tx_hash.hex()]["outcome"] == "rejected"
    assert c.ledgers[0].chain_state["meters"][key.id]["owner"] == m[0].id


def test_a_stale_validator_removal_cannot_remove_the_sequencer(tmp_path: Path) -> None:
    """Opened while validator 2 was not the sequencer; by its last vote it was: removing it would
    leave the chain without anyone to cut blocks."""
    c, t = community(tmp_path), T0 + 10
    v = c.validators
    remove = propose(c, v[0], "remove_validator", {"validator": v[2].id}, t)
    handover = propose(c, v[1], "set_sequencer", {"sequencer": v[2].id}, t)
    c.run_block([remove, handover], t)
    c.run_block([yes(c, v[2], handover, t), yes(c, v[3], handover, t)], t + 5)
    assert c.ledgers[0].chain_state["sequencer"] == v[2].id
    block = c.ledgers[2].propose([yes(c, v[1], remove, t + 10), yes(c, v[3], remove, t + 10)], t + 10)
    seals = [ledger.seal(block, v[i].key, now=t + 10) for i, ledger in enumerate(c.ledgers)]
    for ledger in c.ledgers:
        ledger.commit(block, seals)
    result = gov_results(c, block)[remove.tx_hash.hex()]
    assert result["outcome"] == "rejected"
    assert result["reason"] == "no longer applies: change the sequencer before removing it"
    assert v[2].id in c.ledgers[0].chain_state["validators"]
