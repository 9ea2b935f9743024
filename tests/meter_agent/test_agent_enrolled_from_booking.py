"""A reading the ledger proves booked shows the meter enrolled (found in a QA pass that followed
the docs with a 60 s interval: after admission at block 16 `peerwatt agent status` showed
`enrolled: unknown` for minutes. The agent learnt its enrolment only from a receipt of one of its
orders (its outcome at gate closure) or trades, and it placed none: all below min_order_wh. The
ledger booked its readings from the enrolling block on, and the validators' inclusion proofs now
prove each transaction's result (`ok`, or `rejected` with the reason) against the sealed
`result_root`, so an `ok` reading or order is proof the ledger took it, which it does only from
an enrolled meter: chain/execute.py check_rules).

(When this lands, tests/meter_agent/test_agent.py's
test_unconfirmed_messages_are_resent_until_the_ledger_confirms_them must expect `enrolled` True
after its proof of booked messages, not "unknown": that assertion dates from proofs without
results.)"""

from __future__ import annotations

import json
import logging

from chain.envelope import parse_envelope
from market.app import MarketApp
from peerwatt.bus import Topics
from peerwatt.node.ledger_api import block_inclusions
from tests.meter_agent.test_agent_no_order_reason import MORNING, _orders, _world


def test_a_booked_reading_shows_the_enrolment(tmp_path, caplog):
    """No order placed (all below min_order_wh), but its reading is booked: it is enrolled."""
    c, agent, now, seen, node = _world(tmp_path)
    (ledger,) = c.open_ledgers(tmp_path / "ledgers", MarketApp)
    try:
        for _ in range(170):  # across the interval's end at MORNING + 900: its reading is signed
            now[0] += 5
            agent.poll()
        readings = [p for t, p in seen if "/readings/" in t]
        assert readings and _orders(seen) == []
        assert agent.status()["enrolled"] == "unknown"
        envs = [parse_envelope(p, community=c.community, now=None) for p in readings]
        block = c.run_block(envs, now[0])
        results = ledger.store.results(block.height)
        assert [r["status"] for r in results if r.get("kind") == "tx"] == ["ok"] * len(envs)
        seals = [json.loads(bytes(env)) for _, env in ledger.store.seal_rows(block.height)]
        header = ledger.store.header(block.height)
        ((_, proof),) = block_inclusions(block, c.genesis.doc["meters"], header, seals, results)
        with caplog.at_level(logging.INFO, logger="peerwatt.agent"):
            node.publish(Topics.receipts(c.community, c.meters[0].id), json.dumps(proof).encode())
        assert agent.status()["enrolled"] is True
        assert f"meter {c.meters[0].id} is enrolled (the ledger booked its reading" in caplog.text
    finally:
        agent.stop()
        agent.outbox.close()
        ledger.close()


def test_a_rejected_message_in_a_block_does_not_show_enrolment(tmp_path):
    """In a block but rejected (a reading too early, here): nothing about enrolment."""
    c, agent, now, seen, node = _world(tmp_path)
    (ledger,) = c.open_ledgers(tmp_path / "ledgers", MarketApp)
    try:
        for _ in range(170):
            now[0] += 5
            agent.poll()
        readings = [p for t, p in seen if "/readings/" in t]
        envs = [parse_envelope(p, community=c.community, now=None) for p in readings]
        block = c.run_block(envs, MORNING + 700)  # a block whose time is before the interval's end
        results = ledger.store.results(block.height)
        assert {r["status"] for r in results if r.get("kind") == "tx"} == {"rejected"}
        seals = [json.loads(bytes(env)) for _, env in ledger.store.seal_rows(block.height)]
        header = ledger.store.header(block.height)
        ((_, proof),) = block_inclusions(block, c.genesis.doc["meters"], header, seals, results)
        node.publish(Topics.receipts(c.community, c.meters[0].id), json.dumps(proof).encode())
        assert agent.status()["enrolled"] == "unknown"
    finally:
        agent.stop()
        agent.outbox.close()
        ledger.close()
