"""The agent as a light client of the ledger: what it believes of the messages validators send on
its receipts topic (any validator may write there), found in a QA pass of the agent as a light
client. Receipts come from a real market ledger through the node's own builders."""

from __future__ import annotations

import json

from peerwatt.bus import MemoryBus, Topics
from tests.meter_agent.test_agent import run, setup  # noqa: F401 (fixture)
from tests.meter_agent.test_agent_receipts_status import _agent, _receipts, market  # noqa: F401 (fixture)


def test_an_alarm_names_a_missing_field_in_words(market, tmp_path):  # noqa: F811 (fixture)
    """Found in a QA pass: an inclusion message without ``txs`` raised the alarm "an inclusion
    proof does not verify: 'txs'" (a KeyError's text)."""
    c = market
    agent, node, topic = _agent(c, tmp_path)
    node.publish(topic, json.dumps({"type": "included", "meter": agent.meter_id}).encode())
    (receipt,) = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "trade"][:1]
    node.publish(topic, json.dumps({k: v for k, v in receipt.items() if k != "seals"}).encode())
    assert agent.alarms == [
        "ALARM: an inclusion proof does not verify: the field 'txs' is missing",
        "ALARM: a receipt does not verify: malformed or forged receipt: the field 'seals' is missing",
    ]


def test_a_proof_without_results_makes_the_agent_forget_nothing(setup, tmp_path):  # noqa: F811 (fixture)
    """Found in a QA pass: an inclusion message carried results for the rejected transactions only,
    and the agent took a transaction without one for booked; so one validator (any may write to
    receipts topics) that dropped the result of a reading the ledger booked as reading_too_early
    made the agent forget it for good. Every transaction now comes with its proven result, and one
    without (that validator, or a node older than the agent) is kept, with one alarm."""
    from market.app import MarketApp
    from peerwatt.node.ledger_api import block_inclusions

    c, meter, sim, make_agent, seen = setup
    agent = make_agent()
    agent.start()
    run(agent, sim, 20)
    sent = {json.loads(p)["seq"]: p for t, p in seen if "/readings/" in t or "/orders/" in t}
    (ledger,) = c.open_ledgers(tmp_path / "ledgers", MarketApp)
    now = int(sim.clock.now())
    booked = [ledger.intake(sent[seq], now) for seq in sorted(sent)]
    (last,) = [env for env in booked if env.type == "reading"]
    block = c.run_block(booked, last.body["interval"] + c.genesis.doc["app"]["interval_s"] - 61)
    seals = [json.loads(bytes(env)) for _, env in ledger.store.seal_rows(block.height)]
    header = ledger.store.header(block.height)
    ((_, message),) = block_inclusions(block, c.genesis.doc["meters"], header, seals)
    assert len(booked) >= 2 and {tx["seq"]: tx["result"].get("reason") for tx in message["txs"]} == {
        env.seq: "reading_too_early" if env is last else None for env in booked
    }  # the orders booked ok, the reading not yet
    stripped = json.loads(json.dumps(message))
    for tx in stripped["txs"]:
        for field in ("result", "result_index", "result_proof"):
            del tx[field]
    del stripped["result_tree_size"]
    validator = MemoryBus(agent.bus.broker, "validator-x")
    validator.start()
    topic = Topics.receipts(c.community, meter.id)
    for _ in range(2):
        validator.publish(topic, json.dumps(stripped).encode())
    assert {s for s, _t, _p in agent.outbox.messages(sorted(sent))} == set(sent)  # nothing forgotten
    (alarm,) = agent.alarms  # said once
    assert f"in block {block.height} without their results" in alarm and "stay in the outbox" in alarm
    validator.publish(topic, json.dumps(message).encode())  # the proof with the results
    kept = {s for s, _t, _p in agent.outbox.messages(sorted(sent))}
    assert kept == {last.seq}  # until signed again
    run(agent, sim, 1)
    again = [p for t, p in seen if "/readings/" in t and json.loads(p)["seq"] not in sent]
    assert last.body in [json.loads(p)["body"] for p in again]


def _other_places(receipt: dict) -> list[tuple[int, int]]:
    """(index, tree_size) pairs other than the receipt's own at which its result's audit path
    also verifies against its header's result_root (RFC 6962 paths carry no tree size)."""
    from chain.block import result_leaves
    from chain.merkle import proof_from_hex, verify_inclusion

    leaf = result_leaves([receipt["result"]])[0]
    proof, root = proof_from_hex(receipt["proof"]), bytes.fromhex(receipt["header"]["result_root"])
    n = receipt["tree_size"]
    return [
        (j, m)
        for m in range(1, 2 * n + 2)
        for j in range(m)
        if (j, m) != (receipt["index"], n) and verify_inclusion(leaf, j, m, proof, root)
    ]


def test_a_genuine_receipt_re_sent_under_another_index_counts_once(tmp_path):
    """Found in a QA pass: the agent kept adjustments by (height, index), and a genuine adjustment
    receipt re-sent with another (index, tree_size) at which its audit path also verifies counted
    twice in the totals. Adjustments are now kept by their content; trades and settlements are
    kept by trade, their figures replaced, so a re-indexed copy of any receipt changes nothing,
    after a restart either."""
    from tests.support.market_ledger import (
        I1,
        SETTLED_AT,
        build_market,
        order,
        reading,
        reading_values,
    )

    c = build_market(tmp_path / "ledgers")
    _start_imp, _start_exp, end_imp, end_exp = reading_values(0)
    t = SETTLED_AT + 60
    later = SETTLED_AT + 900 * 8 - SETTLED_AT % 900
    others = [order(c, 3, "buy", 100 + k, 150_000, t, interval=later) for k in range(5)]
    c.run_block([*others, reading(c, 0, I1, end_imp, end_exp - 500, t)], t)  # a correction: adjustments
    receipts = _receipts(c, c.meters[0].id)
    copies = [dict(r, index=j, tree_size=m) for r in receipts for j, m in _other_places(r)]
    assert {r["result"]["kind"] for r in copies} >= {"adjustment"}  # the block's shape allows it
    agent, node, topic = _agent(c, tmp_path)
    for r in receipts:
        node.publish(topic, json.dumps(r).encode())
    honest = agent.totals()
    for r in copies:
        node.publish(topic, json.dumps(r).encode())
    assert agent.totals() == honest and not agent.alarms
    agent.stop()
    again, node, topic = _agent(c, tmp_path)
    for r in receipts + copies:
        node.publish(topic, json.dumps(r).encode())
    assert again.totals() == honest
    for ledger in c.ledgers:
        ledger.close()


def test_adjustments_kept_by_an_older_agent_count_once(tmp_path):
    """An older agent kept adjustments as height:index; the same receipt heard again after the
    update replaces that entry rather than adding a second one."""
    from tests.support.market_ledger import I1, SETTLED_AT, build_market, reading, reading_values

    c = build_market(tmp_path / "ledgers")
    _start_imp, _start_exp, end_imp, end_exp = reading_values(0)
    c.run_block([reading(c, 0, I1, end_imp, end_exp - 500, SETTLED_AT + 60)], SETTLED_AT + 60)
    receipts = _receipts(c, c.meters[0].id)
    agent, node, topic = _agent(c, tmp_path)
    for r in receipts:
        node.publish(topic, json.dumps(r).encode())
    honest = agent.totals()
    adjustments = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    assert adjustments
    for r in adjustments:  # as an older agent kept them
        kept = agent.trades[r["result"]["trade"]]["adjustments"]
        (key,) = [k for k in kept if k.startswith(f"{r['header']['height']}:")]
        kept[f"{r['header']['height']}:{r['index']}"] = kept.pop(key)
    for r in adjustments:
        node.publish(topic, json.dumps(r).encode())
    assert agent.totals() == honest
    for ledger in c.ledgers:
        ledger.close()
