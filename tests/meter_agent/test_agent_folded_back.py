"""Back to an older agent and forward again: what the older one added to a folded trade's row counts.

Found in a QA pass: one state file fed by this agent (every settled trade folded), then by the
agent of 377075d (before ac928bc folded trades) for a while, then by this one again, ended 212 Wh
and 20,140 micro-units too high, exactly the two negative adjustments the older agent received.
The older agent reads every row of the trades group as a trade kept whole, so for a receipt of a
folded trade it writes into that row at the top level (``row["adjustments"]``, ``side``, ``status``
..., beside ``interval`` and ``folded``), while this agent read only ``row["folded"]``. Now the
agent, when it loads its state, merges such keys into the folded trade's record and the folded
totals (each adjustment once: a key of the older form, height:index, at a height is the same
adjustment as any other key at that height, for a block adjusts a trade at most once; a settlement
is counted already, for a trade is folded only once settled and the ledger settles it once; the
newest status wins) and writes the row back in its own form with the folded totals.

The older agents are driven by writing the rows they write into the state file: the lines of
their ``_on_receipt`` (377075d keys an adjustment by its block's height and its result's leaf
hash; 3aef05c by its block's height and the index its receipt claims)."""

from __future__ import annotations

import json

import pytest

from chain.block import result_leaves
from meter_agent import agent as agent_module
from meter_agent.outbox import Outbox
from tests.meter_agent.test_agent_light_client import _other_places
from tests.meter_agent.test_agent_receipts_status import _agent, _receipts
from tests.meter_agent.test_agent_settled_totals import market  # noqa: F401 (fixture: a trade left unsettled)
from tests.meter_agent.test_agent_totals_folded import (
    ROUND_S,
    _ledger_totals,
    long_market,  # noqa: F401 (fixture)
)
from tests.support.market_ledger import I1, SETTLED_AT, T0, reading, reading_values

OLDER = ("377075d", "3aef05c")


def _older_agent_receives(path, meter: str, receipts: list[dict], version: str) -> None:
    """What the agent of ``version`` writes into the state file at ``path`` for each of
    ``receipts`` (verified: they are genuine): every row of the trades group is a trade to it."""
    outbox = Outbox(path)
    trades = outbox.load_entries("trades")
    last = outbox.load("last_receipt")
    for receipt in receipts:
        result, header = receipt["result"], receipt["header"]
        kind = result["kind"]
        trade_id = result.get("trade") or f"{result['sell_order'][:24]}:{result['buy_order'][:24]}"
        entry = trades.setdefault(trade_id, {"interval": result.get("interval")})
        entry["side"] = "sell" if result["seller"] == meter else "buy"
        entry["height"] = header["height"]
        if kind == "trade":
            entry.update(
                energy_wh=result["energy_wh"],
                value=result["value"],
                fees=result["grid_fee"] + result["levies"],
                status=entry.get("status", "traded"),
            )
        elif kind == "settlement":
            if version == "377075d" and "energy_wh" not in entry:
                entry["energy_wh"] = result["energy_wh"]
            entry.update(
                settled_wh=result["settled_wh"],
                settled_value=result["value"],
                settled_fees=result["grid_fee"] + result["levies"],
            )
        else:
            kept = entry.setdefault("adjustments", {})
            if version == "377075d":
                height = str(entry["height"])
                for key in [
                    k for k in kept if k.partition(":")[0] == height and k.partition(":")[2].isdigit()
                ]:
                    del kept[key]
                key = f"{height}:{result_leaves([result])[0].hex()}"
            else:
                key = f"{entry['height']}:{receipt['index']}"
            kept[key] = [
                result["delta_wh"],
                result["delta_value"],
                result["delta_grid_fee"] + result["delta_levies"],
            ]
        if kind != "trade" and entry["height"] >= entry.get("status_height", -1):
            entry.update(status=result["status"], flag=result.get("flag"), status_height=entry["height"])
        if last is None or header["height"] >= last["height"]:
            last = {"height": header["height"], "time": header["time"], "kind": kind}
        outbox.save_entries("trades", {trade_id: entry}, [], values={"last_receipt": last})
    outbox.close()


def _round_one(c, meter: str) -> tuple[list[dict], list[dict], int]:
    """The receipts of round 1 (two intervals; the first one's two trades corrected down, then
    back up), its adjustments, and its first interval."""
    first = T0 + 1800 + ROUND_S
    receipts = [
        r
        for r in _receipts(c, meter)
        if r["result"]["kind"] in agent_module.RECEIPT_KINDS
        and r["result"]["interval"] in (first, first + 3600)
    ]
    adjustments = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    assert len(adjustments) == 4 and {r["result"]["interval"] for r in adjustments} == {first}
    return receipts, adjustments, first


def _rows_in_own_form(path) -> None:
    outbox = Outbox(path)
    rows = outbox.load_entries("trades")
    outbox.close()
    assert all(set(row) == {"interval", "folded"} for row in rows.values() if "folded" in row), rows


@pytest.mark.parametrize("version", OLDER)
def test_adjustments_an_older_agent_wrote_into_a_folded_trade_count_once(
    request, tmp_path, monkeypatch, version
):
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 2)
    c = request.getfixturevalue("long_market")
    meter = c.meters[0].id
    receipts, adjustments, first = _round_one(c, meter)
    plain = [r for r in receipts if r not in adjustments]
    down, up = adjustments[:2], adjustments[2:]
    agent, node, topic = _agent(c, tmp_path, 0)
    for receipt in plain:
        node.publish(topic, json.dumps(receipt).encode())
    assert all(t["interval"] == first + 3600 for t in agent.trades.values())  # the first's folded
    agent.stop()

    # back: the older agent gets the corrections down, the same re-sent under other indexes (to
    # 3aef05c another key each), and the folded trades' trade and settlement receipts again
    copies = [dict(r, index=j, tree_size=m) for r in down for j, m in _other_places(r)]
    assert copies
    again = [r for r in plain if r["result"]["interval"] == first]
    _older_agent_receives(tmp_path / "agent.sqlite", meter, down + copies + again, version)

    # forward: the adjustments count once, the settlements not again
    expected = _ledger_totals(plain + down, meter)
    agent, node, topic = _agent(c, tmp_path, 0)
    lowered = agent.totals()
    assert {k: lowered[k] for k in expected} == expected
    assert lowered["sold_wh"] < _ledger_totals(plain, meter)["sold_wh"]
    _rows_in_own_form(tmp_path / "agent.sqlite")  # merged, and written back once
    for receipt in down + copies + again:
        node.publish(topic, json.dumps(receipt).encode())
    assert agent.totals() == lowered and not agent.alarms
    agent.stop()
    agent, node, topic = _agent(c, tmp_path, 0)
    assert agent.totals() == lowered  # a restart merges nothing twice
    for receipt in up:
        node.publish(topic, json.dumps(receipt).encode())
    totals = agent.totals()
    assert {k: totals[k] for k in expected} == _ledger_totals(receipts, meter)


@pytest.mark.parametrize("record_form", ["leaf", "index"])
@pytest.mark.parametrize("version", OLDER)
def test_an_adjustment_the_record_counts_in_either_form_is_not_counted_again(
    request, tmp_path, monkeypatch, version, record_form
):
    """The record counted the first correction (under height:leaf hash, or height:index as an
    agent updated from 3aef05c folded it); the older agent gets it again and the second one."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 2)
    c = request.getfixturevalue("long_market")
    meter = c.meters[0].id
    receipts, adjustments, _first = _round_one(c, meter)
    plain = [r for r in receipts if r not in adjustments]
    down = adjustments[:2]
    agent, node, topic = _agent(c, tmp_path, 0)
    for receipt in [*plain, down[0]]:
        node.publish(topic, json.dumps(receipt).encode())
    agent.stop()
    path = tmp_path / "agent.sqlite"
    if record_form == "index":
        outbox = Outbox(path)
        trade = down[0]["result"]["trade"]
        row = outbox.load_entries("trades")[trade]
        [key] = row["folded"]["adjustments"]
        row["folded"]["adjustments"] = [f"{key.partition(':')[0]}:{down[0]['index']}"]
        outbox.save_entries("trades", {trade: row})
        outbox.close()
    _older_agent_receives(path, meter, down, version)
    agent, node, topic = _agent(c, tmp_path, 0)
    totals = agent.totals()
    expected = _ledger_totals(plain + down, meter)
    assert {k: totals[k] for k in expected} == expected
    for receipt in down:
        node.publish(topic, json.dumps(receipt).encode())
    assert agent.totals() == totals


@pytest.mark.parametrize("version", OLDER)
def test_a_folded_trade_s_status_follows_what_the_older_agent_received(
    request, tmp_path, monkeypatch, version
):
    """Meter 3's trade, folded when the ledger left it unsettled (missing_reading); the older
    agent gets its late reading's adjustment (settled), then the seller's correction's (unsettled
    again, counter_backwards)."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 0)  # every settled trade is folded at once
    c = request.getfixturevalue("market")
    t = SETTLED_AT + 60
    start_imp, start_exp, end_imp, end_exp = reading_values(3)
    c.run_block([reading(c, 3, I1 - 900, start_imp, start_exp, t), reading(c, 3, I1, end_imp, end_exp, t)], t)
    start_imp, start_exp, end_imp, end_exp = reading_values(0)
    c.run_block([reading(c, 0, I1, end_imp, start_exp - 1, t + 60)], t + 60)  # export went backwards
    meter = c.meters[3].id
    receipts = [r for r in _receipts(c, meter) if r["result"]["kind"] in agent_module.RECEIPT_KINDS]
    settled, unsettled_again = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    agent, node, topic = _agent(c, tmp_path, 3)
    for receipt in receipts:
        if receipt["result"]["kind"] != "adjustment":
            node.publish(topic, json.dumps(receipt).encode())
    assert agent.trades == {}  # folded, left unsettled
    agent.stop()
    seen = []
    for receipt in (settled, unsettled_again):
        _older_agent_receives(tmp_path / "agent.sqlite", meter, [receipt], version)
        agent, node, topic = _agent(c, tmp_path, 3)
        totals = agent.totals()
        seen.append((totals["bought_wh"], totals["bought_unsettled_wh"], totals["unsettled_flags"]))
        agent.stop()
    assert seen == [(200, 0, []), (0, 200, ["counter_backwards"])]
    assert totals["earnings"] == 0 and totals["bought_pending_wh"] == 0
    _rows_in_own_form(tmp_path / "agent.sqlite")


def test_a_merge_the_state_file_did_not_take_is_written_with_the_next_receipt(request, tmp_path, monkeypatch):
    """The state file refuses the merged rows at start (disk full); the next receipt's write takes
    them with the folded totals, so a restart after it counts the older agent's adjustments once,
    not again from rows still in its form beside totals that count them."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 2)
    c = request.getfixturevalue("long_market")
    meter = c.meters[0].id
    receipts, adjustments, first = _round_one(c, meter)
    plain = [r for r in receipts if r not in adjustments]
    down = adjustments[:2]
    agent, node, topic = _agent(c, tmp_path, 0)
    for receipt in plain:
        node.publish(topic, json.dumps(receipt).encode())
    agent.stop()
    _older_agent_receives(tmp_path / "agent.sqlite", meter, down, "377075d")
    save_entries, refused = Outbox.save_entries, []

    def full_once(self, *args, **kwargs):
        if not refused:
            refused.append(args)
            raise agent_module.OutboxError("cannot write agent state (disk full)")
        return save_entries(self, *args, **kwargs)

    monkeypatch.setattr(Outbox, "save_entries", full_once)
    agent, node, topic = _agent(c, tmp_path, 0)
    assert refused  # the merge, refused
    expected = _ledger_totals(plain + down, meter)
    node.publish(topic, json.dumps(plain[-1]).encode())  # a receipt sent again: written
    assert {k: agent.totals()[k] for k in expected} == expected
    agent.stop()  # no poll since
    agent, node, topic = _agent(c, tmp_path, 0)
    totals = agent.totals()
    assert {k: totals[k] for k in expected} == expected
    _rows_in_own_form(tmp_path / "agent.sqlite")
