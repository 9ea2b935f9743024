"""The agent as a light client of the ledger: what it believes of the messages validators send on
its receipts topic (any validator may write there), found in a QA pass of the agent as a light
client. Receipts come from a real market ledger through the node's own builders."""

from __future__ import annotations

import json

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
