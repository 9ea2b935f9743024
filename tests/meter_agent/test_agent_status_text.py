"""`peerwatt agent status` (text) tells a household what happened: the agent's alarms (the newest
ones it keeps in its status) and when the status was written, so a stale one is recognisable
(found in a QA pass: an ALARM, e.g. about the clock, appeared only with --json though docs/agent.md
says alarms are raised in 'log and status', and 'broker connected (at last heartbeat): False'
said nothing about when that heartbeat was)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from meter_agent.outbox import Outbox
from tests.support.cli import peerwatt

CLOCK_ALARM = (
    "ALARM: the ledger refused 2 message(s) [reading] as reading_too_early: this device's clock is "
    "ahead of the ledger's; they stay in the outbox and are sent again"
)


def agent_with_status(folder: Path, heartbeat_s: int = 60, **status) -> Path:
    """An agent.toml and the state its agent left: a status as its heartbeat saves it."""
    config = folder / "agent.toml"
    config.write_text(
        f'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f"heartbeat_s = {heartbeat_s}\n"
        '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    (folder / "state").mkdir()
    saved = {
        "state": "online",
        "meter": "a" * 32,
        "meter_ok": True,
        "fault": None,
        "broker_connected": True,
        "orders": [],
        "totals": {"sold_wh": 0, "bought_wh": 0, "earnings": 0},
        "alarms": [],
        "state_error": None,
        "enrolled": True,
        "last_receipt": None,
        "config_height": 0,
        **status,
    }
    outbox = Outbox(folder / "state" / "agent.sqlite")
    outbox.save("status", saved)
    outbox.close()
    return config


def status_text(config: Path) -> str:
    r = peerwatt("agent", "status", "-c", str(config), timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def test_the_alarms_are_in_the_text_output(tmp_path):
    alarms = [f"ALARM: a receipt does not verify: seal {n}" for n in range(4)] + [CLOCK_ALARM]
    out = status_text(agent_with_status(tmp_path, time=int(time.time()), alarms=alarms))
    for alarm in alarms:
        assert alarm in out, out
    assert out.index(alarms[0]) < out.index(CLOCK_ALARM), "oldest first, the newest last"
    assert "5 alarm" in out and "newest" in out, out


def test_no_alarm_says_so(tmp_path):
    out = status_text(agent_with_status(tmp_path, time=int(time.time())))
    assert "alarms: none" in out and "ALARM" not in out, out


def test_the_status_says_when_it_was_written(tmp_path):
    written = int(time.time()) - 30
    out = status_text(agent_with_status(tmp_path, time=written, broker_connected=False))
    shown = datetime.fromtimestamp(written).astimezone().isoformat(sep=" ", timespec="seconds")
    assert f"status written {shown}" in out, out
    assert "broker connected at that time: False" in out, out
    assert "stale" not in out, out


@pytest.mark.parametrize("age_s, said", [(3 * 3600, "3 h ago"), (2 * 86400, "2 days ago")])
def test_a_stale_status_is_recognisable(tmp_path, age_s, said):
    """Older than three heartbeats (as the dashboard says 'offline'): the agent is not running, or
    cannot write its state; the text says so."""
    out = status_text(agent_with_status(tmp_path, time=int(time.time()) - age_s, broker_connected=True))
    first = out.splitlines()[0]
    assert said in first and "stale" in first and "is the agent running?" in first, out


def test_a_state_error_is_shown(tmp_path):
    error = "cannot write agent state /var/lib/peerwatt/state/agent.sqlite: disk full"
    out = status_text(agent_with_status(tmp_path, time=int(time.time()), state_error=error))
    assert error in out, out


def test_json_is_unchanged(tmp_path):
    config = agent_with_status(tmp_path, time=123, alarms=[CLOCK_ALARM])
    r = peerwatt("agent", "status", "-c", str(config), "--json", timeout=60)
    info = json.loads(r.stdout)
    assert info["alarms"] == [CLOCK_ALARM] and info["time"] == 123


def test_messages_the_ledger_has_not_confirmed_are_counted_and_an_old_one_is_named(tmp_path):
    """Found in a QA pass: with the chain stalled for 73 s (two of four validators down) the text
    said 'outbox depth: 0' and nothing else: the messages the broker had taken and the ledger had
    not booked were invisible. Now counted as the state stands, with the oldest one's age, and one
    older than 5 minutes says the ledger has confirmed none of them (an update QA pass: with
    validators of an older version, which book messages but send no proven results, it said the
    ledger was booking none and asked only whether the validators ran)."""
    import sqlite3

    config = agent_with_status(tmp_path)
    assert "awaiting the ledger" not in status_text(config)
    outbox = Outbox(tmp_path / "state" / "agent.sqlite")
    seq, _topic, _payload = outbox.add(lambda seq: ("peerwatt/oak/readings/m", b"{}"))
    outbox.ack(seq)  # the broker took it; the ledger has not confirmed it
    outbox.add(lambda seq: ("peerwatt/oak/orders/m", b"{}"))  # not even sent yet
    outbox.close()
    text = status_text(config)
    assert "awaiting the ledger: 2 message(s), the oldest signed" in text, text
    assert "confirmed none" not in text
    with sqlite3.connect(tmp_path / "state" / "agent.sqlite") as db:
        db.execute("UPDATE sent SET created = ?", (time.time() - 600,))
    text = status_text(config)
    assert "the oldest signed 10 min ago: the ledger has confirmed none of them" in text, text
    assert "2026-12-07 or later" in text and "Updating peerwatt" in text, text
