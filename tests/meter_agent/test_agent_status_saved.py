"""`peerwatt agent status` shows the status the agent saved, as it was then: its last reading,
outbox depth and seq are the saved status's, not newer ones from the state file (found in a QA
pass: one printout said `status written ... (57 s ago)` and `no offers: the last reading was not
signed ...`, and in the same printout a `last reading` signed after that status was written).
What it shows as the state file holds it now is labelled so: `as of now, awaiting the ledger`,
and with --json under `now`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from meter_agent.outbox import Outbox
from tests.support.cli import peerwatt

SAVED_INTERVAL = 1796652750
NEWER_INTERVAL = 1796652780
WITHHELD = "the meter's counters read import_wh 0 (not available) at its end"


def _reading(interval: int) -> dict:
    """A reading as the state file holds it (keys sorted, as printed)."""
    return {"export_wh": 2000, "import_wh": 1000, "interval": interval, "profile": "sdm630", "serial": "SN1"}


def _agent(folder: Path, **status) -> Path:
    """An agent.toml and its state: a status saved 57 s ago, and newer data the agent wrote since
    (a reading signed, a message in the outbox)."""
    config = folder / "agent.toml"
    config.write_text(
        'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        "heartbeat_s = 60\n"
        '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    (folder / "state").mkdir()
    outbox = Outbox(folder / "state" / "agent.sqlite")
    if status:
        written = int(time.time()) - 57
        outbox.save("status", {"meter": "a" * 32, "meter_ok": True, "fault": None, "time": written,
                               "broker_connected": True, "alarms": [], **status})  # fmt: skip
    outbox.add(lambda seq: ("peerwatt/oak/readings/" + "a" * 32, b"{}"))  # signed after the status
    outbox.save("last_reading", _reading(NEWER_INTERVAL))
    outbox.close()
    return config


def _saved_status(folder: Path) -> Path:
    return _agent(
        folder, last_reading=_reading(SAVED_INTERVAL), readings_withheld=WITHHELD, outbox=0, seq=100
    )


def test_the_text_shows_the_saved_status_and_labels_what_is_newer(tmp_path):
    r = peerwatt("agent", "status", "-c", str(_saved_status(tmp_path)), timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = r.stdout
    assert f"no offers: the last reading was not signed: {WITHHELD}" in out, out
    assert f"last reading: {_reading(SAVED_INTERVAL)}" in out, out
    assert str(NEWER_INTERVAL) not in out, out
    assert "outbox depth: 0  last seq: 100  broker connected at that time: True" in out, out
    assert "as of now, awaiting the ledger: 1 message(s), the oldest signed" in out, out


def test_json_is_the_saved_status_with_the_state_file_now_apart(tmp_path):
    r = peerwatt("agent", "status", "-c", str(_saved_status(tmp_path)), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["last_reading"]["interval"] == SAVED_INTERVAL and info["readings_withheld"] == WITHHELD
    assert info["outbox"] == 0 and info["seq"] == 100
    now = info["now"]
    assert now["last_reading"]["interval"] == NEWER_INTERVAL and now["outbox"] == 1 and now["seq"] > 100
    assert now["awaiting_confirmation"] == 0


def test_what_the_saved_status_lacks_is_shown_as_it_is_now_labelled(tmp_path):
    """A status saved by an older agent (without these keys), or none saved yet."""
    for folder, status in ((tmp_path / "older", {"outbox": 0}), (tmp_path / "none", {})):
        folder.mkdir()
        r = peerwatt("agent", "status", "-c", str(_agent(folder, **status)), timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        out = r.stdout
        assert f"last reading (now, not in the saved status): {_reading(NEWER_INTERVAL)}" in out, out
        assert "last seq (now, not in the saved status): " in out, out
        assert ("outbox depth: 0" in out) is bool(status), out
