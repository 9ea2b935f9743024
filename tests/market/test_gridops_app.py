"""The grid operator's validated data on the market ledger (docs/market.md, "The grid operator's
data"): who may sign it, what a re-import does, how quality flags count, and that a correction
re-settles exactly the intervals it changes, as adjustments, never as an edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.envelope import Rejected
from chain.genesis import genesis_from_dict
from chain.verify import verify_store
from market.app import MarketApp
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, PARAMS, T0, order, reading

I2 = I1 + 900
START = {m: (10_000 + 1000 * m, 20_000 + 1000 * m) for m in range(4)}
# what each meter measured in I1 and I2 (import, export): exactly what it traded
USE = {0: (0, 1000), 1: (0, 0), 2: (800, 0), 3: (200, 0)}
IMPORTED = T0 + 3700  # the grid operator's data arrives after both intervals settled


def community(tmp_path: Path, source: str, **extra) -> LocalCommunity:
    """Four meters (0, 1 sell; 2, 3 buy), validator 0 named the community's grid data operator."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    d = c.genesis.doc
    c.genesis = genesis_from_dict(
        {
            "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
            "chain": {"sequencer": d["chain"]["sequencer"]},
            "app": {
                **PARAMS,
                "settlement_source": source,
                "gridops_operators": [c.validators[0].id],
                **extra,
            },
            "validators": list(d["validators"].values()),
            "members": list(d["members"].values()),
            "meters": list(d["meters"].values()),
        }
    )
    c.open_ledgers(tmp_path, MarketApp)
    return c


def results(c: LocalCommunity, kind: str, since: int = 1) -> list[dict]:
    store = c.ledgers[0].store
    return [r for h in range(since, store.height() + 1) for r in store.results(h) if r["kind"] == kind]


def trade_two_intervals(c: LocalCommunity, readings: bool = True) -> None:
    """I1 and I2 each clear 1000 Wh at 95k: meter 0 sells 800 to meter 2 and 200 to meter 3."""
    t = T0 + 10
    orders = []
    for interval in (I1, I2):
        orders += [
            order(c, 0, "sell", 1000, 90_000, t, interval),
            order(c, 1, "sell", 500, 120_000, t, interval),
            order(c, 2, "buy", 800, 200_000, t, interval),
            order(c, 3, "buy", 600, 100_000, t, interval),
        ]
    c.run_block(orders, t)
    c.run_block([], I1 - 300)
    c.run_block([], I2 - 300)
    if readings:
        t = I2 + 905
        envs = []
        for m in range(4):
            imp, exp = START[m]
            for k, interval in enumerate((I1 - 900, I1, I2)):
                envs.append(reading(c, m, interval, imp + k * USE[m][0], exp + k * USE[m][1], t))
        c.run_block(envs, t)


def rows(data: dict[int, tuple[int, int]], quality: str = "measured") -> list[dict]:
    return [
        {"interval": i, "import_wh": imp, "export_wh": exp, "quality": quality}
        for i, (imp, exp) in sorted(data.items())
    ]


def gridops(
    c: LocalCommunity,
    meter: int,
    data: dict,
    quality: str = "measured",
    signer=None,
    t: int = IMPORTED,
    extra_rows: list | None = None,
):
    body = {
        "meter": c.meters[meter].id,
        "metering_point": f"AT003000000000000000000000000{meter:04d}",
        "rows": rows(data, quality) + (extra_rows or []),
    }
    return (signer or c.validators[0]).sign(c.community, "gridops", body, created=t)


def statuses(block) -> list[str]:
    return [r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"]


def balances(c: LocalCommunity) -> dict[str, int]:
    return dict(c.ledgers[0].state["app"]["balances"])


def test_a_correction_resettles_exactly_the_intervals_it_changes(tmp_path):
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    settled = results(c, "settlement")
    assert len(settled) == 4 and all(s["status"] == "settled" and s["source"] == "meter" for s in settled)
    before = balances(c)
    height = c.ledgers[0].store.height()
    # the grid operator confirms I2 for everyone, and I1 for everyone but the seller, who exported
    # 700 Wh in I1 (not the 1000 its meter said)
    txs = [gridops(c, m, {I1: USE[m], I2: USE[m]}) for m in (1, 2, 3)]
    txs.append(gridops(c, 0, {I1: (0, 700), I2: USE[0]}))
    block = c.run_block(txs, IMPORTED)
    assert statuses(block) == ["ok"] * 4
    adjustments = results(c, "adjustment", since=height + 1)
    assert {a["interval"] for a in adjustments} == {I1}  # I2 unchanged: nothing for it
    assert all(a["reason"] == "gridops_data" and a["source"] == "gridops" for a in adjustments)
    # 700 Wh shared pro rata over the seller's trades of 800 and 200 Wh: 560 and 140
    assert sorted(a["delta_wh"] for a in adjustments) == [-240, -60]
    moved = results(c, "balance", since=height + 1)
    assert {b["interval"] for b in moved} == {I1} and sum(b["delta"] for b in moved) == 0
    after = balances(c)
    assert sum(after.values()) == 0
    seller = c.genesis.doc["meters"][c.meters[0].id]["owner"]
    assert after[seller] - before[seller] == -300 * 95  # 300 Wh less sold at 0.095 / kWh
    # the earlier settlement results are untouched: only new results were added
    assert results(c, "settlement") == settled
    assert verify_store(c.ledgers[0].store, MarketApp()).blocks == c.ledgers[0].height


def test_a_reimport_is_refused_and_changes_nothing(tmp_path):
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    data = {I1: USE[0], I2: USE[0]}
    assert statuses(c.run_block([gridops(c, 0, data)], IMPORTED)) == ["ok"]
    state = c.ledgers[0].state["app"]
    again = gridops(c, 0, data, t=IMPORTED + 60)
    with pytest.raises(Rejected, match="duplicate_import"):
        c.ledgers[0].intake(again.to_bytes(), IMPORTED + 60)
    block = c.run_block([again], IMPORTED + 60)
    assert statuses(block) == ["duplicate_import"]
    assert c.ledgers[0].state["app"]["gridops"] == state["gridops"]
    # the same signed envelope a second time is a replay
    block = c.run_block([again], IMPORTED + 120)
    assert statuses(block) == ["replay"]


def test_only_the_named_operator_may_sign(tmp_path):
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    member = gridops(c, 0, {I1: (0, 1)}, signer=c.members[0])
    meter = gridops(c, 0, {I1: (0, 1)}, signer=c.meters[0])
    with pytest.raises(Rejected, match="not_gridops_operator"):
        c.ledgers[0].intake(member.to_bytes(), IMPORTED)
    with pytest.raises(Rejected, match="not_operator"):
        c.ledgers[0].intake(meter.to_bytes(), IMPORTED)
    block = c.run_block([member, meter], IMPORTED)
    assert statuses(block) == ["not_gridops_operator", "not_operator"]
    assert "gridops" not in c.ledgers[0].state["app"]


def test_refused_where_the_community_settles_on_meters(tmp_path):
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    trade_two_intervals(c)
    block = c.run_block([gridops(c, 0, {I1: USE[0]})], IMPORTED)
    assert statuses(block) == ["gridops_not_used"]
    assert "source" not in results(c, "settlement")[0]  # meter-only settlements keep their form


def test_quality_flags(tmp_path):
    """Each quality settles; an estimate never replaces a measured or replaced value, the others
    replace anything."""
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    block = c.run_block([gridops(c, 0, {I1: (0, 900)}, "estimated")], IMPORTED)
    assert [a["delta_wh"] for a in results(c, "adjustment")] == [-80, -20]  # estimates settle
    assert c.ledgers[0].state["app"]["gridops"][c.meters[0].id][str(I1)] == [0, 900, "estimated"]
    # a replaced (substitute) value replaces the estimate
    c.run_block([gridops(c, 0, {I1: (0, 800)}, "replaced", t=IMPORTED + 60)], IMPORTED + 60)
    assert [a["delta_wh"] for a in results(c, "adjustment")][2:] == [-80, -20]
    # a later estimate does not replace it: recorded as ignored, nothing re-settled
    height = c.ledgers[0].store.height()
    block = c.run_block(
        [gridops(c, 0, {I1: (0, 1000), I2: USE[0]}, "estimated", t=IMPORTED + 120)], IMPORTED + 120
    )
    assert statuses(block) == ["ok"]
    (note,) = [r for r in block.results if r["kind"] == "gridops"]
    assert note["ignored_estimates"] == [I1] and note["recorded"] == 1
    assert results(c, "adjustment", since=height + 1) == []  # I2's estimate equals the readings
    # a measured value replaces a replaced one
    c.run_block([gridops(c, 0, {I1: (0, 1000)}, "measured", t=IMPORTED + 180)], IMPORTED + 180)
    assert [a["delta_wh"] for a in results(c, "adjustment", since=height + 1)] == [160, 40]
    assert sum(balances(c).values()) == 0


def test_gridops_source_waits_for_the_data(tmp_path):
    """Settling on the grid operator's data alone: no readings needed, nothing settles before the
    data is in, and a meter whose data never comes leaves its trades unsettled at the deadline."""
    c = community(tmp_path, "gridops", gridops_window_s=4 * 3600)
    trade_two_intervals(c, readings=False)
    c.run_block([], I2 + 3 * 900)  # past the meter deadline: still waiting
    assert results(c, "settlement") == []
    c.run_block([gridops(c, m, {I1: USE[m]}) for m in range(4)], IMPORTED)
    settled = results(c, "settlement")
    assert {s["interval"] for s in settled} == {I1}
    assert all(s["status"] == "settled" and s["source"] == "gridops" for s in settled)
    assert sum(s["settled_wh"] for s in settled) == 1000
    # I2's data for meter 3 never comes: at the deadline its trade is unsettled and flagged
    c.run_block([gridops(c, m, {I2: USE[m]}, t=IMPORTED + 60) for m in (0, 1, 2)], IMPORTED + 60)
    deadline = I2 + 900 + 4 * 3600
    assert c.ledgers[0].next_block_due() == deadline
    c.run_block([], deadline)
    late = [s for s in results(c, "settlement") if s["interval"] == I2]
    flags = {s["buyer"]: (s["status"], s["flag"]) for s in late}
    assert flags[c.meters[3].id] == ("unsettled", "missing_gridops")
    assert flags[c.meters[2].id] == ("settled", None)
    # too late now: the window has passed
    block = c.run_block([gridops(c, 3, {I2: USE[3]}, t=deadline + 60)], deadline + 60)
    assert statuses(block) == ["gridops_too_old"]
    assert sum(balances(c).values()) == 0


def test_rows_are_checked(tmp_path):
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    ledger = c.ledgers[0]
    for data, reason in (
        ({I1 + 1: (0, 1)}, "interval_not_aligned"),
        ({I2 + 3 * 900: (0, 1)}, "interval_not_ended"),
    ):
        with pytest.raises(Rejected, match=reason):
            ledger.intake(gridops(c, 0, data).to_bytes(), IMPORTED)
    twice = gridops(c, 0, {I1: (0, 1)}, extra_rows=rows({I1: (0, 2)}))
    with pytest.raises(Rejected, match="duplicate_interval"):
        ledger.intake(twice.to_bytes(), IMPORTED)
    with pytest.raises(Rejected, match="unknown_meter"):
        body = {"meter": "0" * 32, "metering_point": "AT1", "rows": rows({I1: (0, 1)})}
        ledger.intake(
            c.validators[0].sign(c.community, "gridops", body, created=IMPORTED).to_bytes(), IMPORTED
        )


def test_the_operators_change_by_a_vote(tmp_path):
    """A set_param vote from the command line carries a string: comma-separated key ids."""
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    t = IMPORTED - 60
    value = f"{c.members[1].id}, {c.members[2].id}"
    body = {
        "action": "set_param",
        "args": {"name": "gridops_operators", "value": value},
        "deadline": t + 3600,
    }
    proposal = c.members[0].sign(c.community, "propose", body, created=t)
    votes = [
        m.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for m in c.members[1:3]
    ]
    c.run_block([proposal, *votes], t)
    assert c.ledgers[0].state["chain"]["params"]["gridops_operators"] == value
    old = gridops(c, 0, {I1: (0, 700)})
    new = gridops(c, 0, {I1: (0, 700)}, signer=c.members[2])
    assert statuses(c.run_block([old, new], IMPORTED)) == ["not_gridops_operator", "ok"]
    with pytest.raises(Rejected, match="bad_value"):
        bad = dict(body, args={"name": "gridops_operators", "value": "not-a-key"})
        c.ledgers[0].intake(
            c.members[0].sign(c.community, "propose", bad, created=IMPORTED).to_bytes(), IMPORTED
        )


def test_partial_data_after_the_readings_are_gone(tmp_path):
    """Days later the readings are pruned from the state (outside the correction window): the grid
    operator's data for the seller alone re-settles on it and on what the buyers' readings gave."""
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    later = I2 + 3 * 86_400
    c.run_block([], later)
    assert not any(str(I1) in r for r in c.ledgers[0].state["app"]["readings"].values())
    height = c.ledgers[0].store.height()
    block = c.run_block([gridops(c, 0, {I1: (0, 700)}, t=later + 60)], later + 60)
    assert statuses(block) == ["ok"]
    adjustments = results(c, "adjustment", since=height + 1)
    assert [(a["status"], a["source"], a["delta_wh"]) for a in adjustments] == [
        ("settled", "mixed", -240),
        ("settled", "mixed", -60),
    ]


def test_the_data_is_forgotten_after_the_window_also_when_the_source_goes_back(tmp_path):
    c = community(tmp_path, "meter_then_gridops", gridops_window_s=7200)
    trade_two_intervals(c)
    c.run_block([gridops(c, 0, {I1: USE[0], I2: USE[0]})], IMPORTED)
    t = IMPORTED + 60
    body = {
        "action": "set_param",
        "args": {"name": "settlement_source", "value": "meter"},
        "deadline": t + 3600,
    }
    proposal = c.members[0].sign(c.community, "propose", body, created=t)
    votes = [
        m.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for m in c.members[1:3]
    ]
    c.run_block([proposal, *votes], t)
    state = c.ledgers[0].state
    assert state["chain"]["params"]["settlement_source"] == "meter"
    assert set(state["app"]["gridops"][c.meters[0].id]) == {str(I1), str(I2)}
    c.run_block([], I2 + 7200 + 900)  # I1 is out of the window, I2 just in
    assert set(c.ledgers[0].state["app"]["gridops"][c.meters[0].id]) == {str(I2)}
    c.run_block([], I2 + 900 + 7200 + 900)
    assert c.ledgers[0].state["app"]["gridops"] == {}
    refused = c.run_block([gridops(c, 1, {I2: USE[1]}, t=I2 + 5 * 900)], I2 + 5 * 900 + 10)
    assert statuses(refused) == ["gridops_not_used"]
