"""`peerwatt agent status` with no saved status, or one an older agent saved: every figure the
status lacks is shown as the state file holds it now, labelled `(now, not in the saved status)`,
never as a fact of the status (docs/agent.md).

Found in a QA pass: an agent that received receipts but never polled (so saved no status) showed
`P2P settled: sold 0 Wh, bought 0 Wh, earnings 0.00`, `last receipt: None`, `enrolled: unknown`
and `broker connected at that time: None`, while its state file held 95,152 Wh of folded trades,
its last receipt and enrolled true. The totals now come from the state file's trades and folded
totals through the agent's own code (meter_agent.agent.load_trades and totals_of)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from meter_agent import agent as agent_module
from meter_agent.outbox import Outbox
from tests.meter_agent.test_agent_receipts_status import (
    _agent,
    _receipts,
    market,  # noqa: F401 (fixture)
)
from tests.meter_agent.test_agent_status_text import status_text
from tests.support.cli import peerwatt

NOW = "(now, not in the saved status)"


def _config(folder: Path) -> Path:
    config = folder / "agent.toml"
    config.write_text(
        'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        "heartbeat_s = 60\n"
        '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    return config


def _received(c, folder: Path, monkeypatch) -> dict:
    """Meter 0's agent, its state in ``folder``/state, gets its receipts (one settled trade
    folded, one kept whole) and never polls: no status saved. What it holds."""
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 1)
    agent, node, topic = _agent(c, folder / "state", 0)
    receipts = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] in agent_module.RECEIPT_KINDS]
    for receipt in receipts:
        node.publish(topic, json.dumps(receipt).encode())
    assert len(agent.trades) == 1 and agent._folded["sold_wh"] > 0  # from both
    held = {"totals": agent.totals(), "last_receipt": agent.last_receipt, "enrolled": agent.enrolled}
    assert held["totals"]["sold_wh"] > 0 and held["last_receipt"] is not None and held["enrolled"] is True
    agent.stop()
    return held


def _status(folder: Path, **status) -> None:
    outbox = Outbox(folder / "state" / "agent.sqlite")
    outbox.save("status", status)
    outbox.close()


def test_no_saved_status_shows_the_state_file_s_figures_labelled(request, tmp_path, monkeypatch):
    c = request.getfixturevalue("market")
    held = _received(c, tmp_path, monkeypatch)
    r = peerwatt("agent", "status", "-c", str(_config(tmp_path)), timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = r.stdout
    totals = held["totals"]
    earnings = f"{totals['earnings'] / 1e6:.2f}"
    assert f"P2P settled {NOW}: sold {totals['sold_wh']} Wh, bought 0 Wh, earnings {earnings}" in out, out
    assert f"last receipt {NOW}: {dict(sorted(held['last_receipt'].items()))}" in out, out
    assert f"enrolled {NOW}: True" in out, out
    assert "at that time" not in out and "broker connected: not in the saved status" in out, out
    assert f"orders {NOW}: " in out, out
    for line in out.splitlines()[1:]:  # after 'no status saved yet: ...', each line says it is now
        assert NOW in line or line.startswith(("as of now", "broker connected")), (line, out)

    r = peerwatt("agent", "status", "-c", str(_config(tmp_path)), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    now = json.loads(r.stdout)["now"]
    assert now["totals"] == totals and now["last_receipt"] == held["last_receipt"] and now["enrolled"] is True


def test_an_older_agent_s_status_keeps_its_figures_and_labels_the_rest(request, tmp_path, monkeypatch):
    """A status without a time, totals, last receipt or enrolled (an older agent's): what it holds
    is shown as saved, the connection without 'at that time' (when is unknown)."""
    c = request.getfixturevalue("market")
    held = _received(c, tmp_path, monkeypatch)
    _status(tmp_path, meter="a" * 32, meter_ok=True, fault=None, broker_connected=True, alarms=[], orders={})
    out = peerwatt("agent", "status", "-c", str(_config(tmp_path)), timeout=60).stdout
    assert "status written: unknown" in out, out
    assert "broker connected (in the saved status, written at a time unknown): True" in out, out
    assert "at that time" not in out, out
    assert "orders: {}" in out, out
    assert f"P2P settled {NOW}: sold {held['totals']['sold_wh']} Wh" in out, out
    assert f"enrolled {NOW}: True" in out and f"last receipt {NOW}: " in out, out


@pytest.mark.parametrize("connected", [True, False])
def test_a_saved_status_is_shown_as_saved(request, tmp_path, monkeypatch, connected):
    """The status's own figures win over the state file's newer ones, unlabelled."""
    c = request.getfixturevalue("market")
    _received(c, tmp_path, monkeypatch)
    saved = {"sold_wh": 7, "bought_wh": 0, "earnings": 1_000_000}
    _status(
        tmp_path, meter="a" * 32, meter_ok=True, fault=None, time=int(time.time()) - 30,
        broker_connected=connected, alarms=[], orders={}, totals=saved, enrolled="unknown", last_receipt=None,
        config_height=0,
    )  # fmt: skip
    out = peerwatt("agent", "status", "-c", str(_config(tmp_path)), timeout=60).stdout
    assert NOW not in out.replace(f"last reading {NOW}", "").replace(f"outbox depth {NOW}", "").replace(
        f"last seq {NOW}", ""
    ), out
    assert "P2P settled: sold 7 Wh, bought 0 Wh, earnings 1.00" in out, out
    assert "enrolled: unknown  last receipt: None" in out, out
    assert f"broker connected at that time: {connected}" in out, out


def test_a_status_the_agent_saved_labels_nothing(request, tmp_path, monkeypatch):
    """A status the agent saves (its heartbeat) holds every figure: no line is labelled, and
    its totals are the agent's."""
    c = request.getfixturevalue("market")
    monkeypatch.setattr(agent_module, "MAX_RECEIPTS", 1)
    agent, node, topic = _agent(c, tmp_path / "state", 0)
    for receipt in _receipts(c, c.meters[0].id):
        node.publish(topic, json.dumps(receipt).encode())
    agent._heartbeat(int(time.time()))
    totals = agent.totals()
    agent.stop()
    out = status_text(_config(tmp_path))
    assert NOW not in out and "broker connected at that time: " in out, out
    assert f"P2P settled: sold {totals['sold_wh']} Wh" in out, out
