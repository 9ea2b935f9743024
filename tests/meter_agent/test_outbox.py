"""The agent's outbox: what a confirmation costs on an SD card, and writes that fail cleanly."""

from __future__ import annotations

import pytest

from meter_agent.outbox import Outbox, OutboxError


def _fill(outbox: Outbox, n: int) -> list[int]:
    seqs = []
    for i in range(n):
        seq, _, _ = outbox.add(lambda seq, i=i: (f"t/{i}", b"payload"))
        outbox.ack(seq)
        seqs.append(seq)
    return seqs


def test_confirming_many_messages_is_one_transaction(tmp_path):
    outbox = Outbox(tmp_path / "agent.sqlite", first_seq=1)
    seqs = _fill(outbox, 50)
    statements: list[str] = []
    outbox._conn.set_trace_callback(statements.append)
    outbox.confirm(seqs)
    outbox._conn.set_trace_callback(None)
    commits = [s for s in statements if s.startswith("COMMIT")]
    deletes = [s for s in statements if s.startswith("DELETE")]
    assert len(commits) == 1 and statements[0].startswith("BEGIN")  # not one fsync per row
    assert len(deletes) == 2 * len(seqs)
    assert outbox.awaiting_confirmation() == 0 and outbox.depth() == 0


def test_a_refused_write_is_an_outbox_error_and_the_state_stays_usable(tmp_path):
    outbox = Outbox(tmp_path / "agent.sqlite", first_seq=1)
    seqs = _fill(outbox, 3)
    outbox._conn.execute("PRAGMA query_only = 1")  # the state folder became read-only
    with pytest.raises(OutboxError):
        outbox.confirm(seqs)
    with pytest.raises(OutboxError):
        outbox.due_for_resend(0.0)
    outbox._conn.execute("PRAGMA query_only = 0")
    outbox.confirm(seqs)  # no transaction was left open
    assert outbox.awaiting_confirmation() == 0


def test_saving_one_entry_of_a_group_writes_that_entry_only(tmp_path):
    """A receipt updates one trade of up to 500 kept: the write holds that trade's bytes, not the
    whole dict's (on an SD card, every receipt rewrote ~100 KB before)."""
    outbox = Outbox(tmp_path / "agent.sqlite", first_seq=1)
    trades = {f"t{i:03d}": {"interval": 900 * i, "energy_wh": i, "side": "sell"} for i in range(500)}
    outbox.save_entries("trades", trades)
    statements: list[str] = []
    outbox._conn.set_trace_callback(statements.append)
    changed = {"t499": {"interval": 449_100, "settled_wh": 3}}
    outbox.save_entries("trades", changed, ["t000"], values={"last_receipt": {"h": 9}})
    outbox._conn.set_trace_callback(None)
    assert sum(len(s) for s in statements) < 1_000
    assert [s.split()[0] for s in statements].count("COMMIT") == 1
    outbox.close()
    again = Outbox(tmp_path / "agent.sqlite")
    kept = again.load_entries("trades")
    assert len(kept) == 499 and "t000" not in kept
    assert kept["t499"] == {"interval": 449_100, "settled_wh": 3} and kept["t001"] == trades["t001"]
    assert again.load("last_receipt") == {"h": 9}


def test_a_group_kept_whole_by_an_older_agent_is_converted_once(tmp_path):
    """State files written before entries kept the trades as one value: they load unchanged."""
    old = Outbox(tmp_path / "agent.sqlite", first_seq=1)
    trades = {"a:b": {"interval": 900, "energy_wh": 5, "side": "buy"}, "c:d": {"interval": 1800}}
    old.save("trades", trades)
    old.close()
    outbox = Outbox(tmp_path / "agent.sqlite")
    assert outbox.load_entries("trades") == trades
    assert outbox.load("trades") is None  # moved to rows, not kept twice
    outbox.save_entries("trades", {"e:f": {"interval": 2700}})
    assert outbox.load_entries("trades") == {**trades, "e:f": {"interval": 2700}}
    assert outbox.load_entries("nothing") == {}


def test_the_agent_state_is_readable_by_its_owner_only(tmp_path, caplog):
    """Found in a QA pass: state/agent.sqlite (the household's readings, orders and trades) was
    made 0644 under the usual umask, readable by every user of the machine (docs/privacy.md). A new
    one is 0600 with its WAL companions; one found wider is narrowed, with a log line."""
    import stat

    outbox = Outbox(tmp_path / "state" / "agent.sqlite")
    outbox.save("meter", "m")
    for name in ("agent.sqlite", "agent.sqlite-wal", "agent.sqlite-shm"):
        path = tmp_path / "state" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    outbox.close()
    (tmp_path / "state" / "agent.sqlite").chmod(0o644)
    Outbox(tmp_path / "state" / "agent.sqlite").close()
    assert stat.S_IMODE((tmp_path / "state" / "agent.sqlite").stat().st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_an_in_memory_state_makes_no_file(tmp_path, monkeypatch):
    """`peerwatt simulate` keeps its agents' state in memory (":memory:"): making the state file
    owner-only once created an empty file named ':memory:' in the current folder."""
    monkeypatch.chdir(tmp_path)
    outbox = Outbox(":memory:", first_seq=1)
    outbox.save("meter", "m")
    outbox.close()
    assert list(tmp_path.iterdir()) == []


def test_a_group_an_older_agent_kept_whole_after_the_conversion_is_merged(tmp_path):
    """Found in a QA pass of updates: an agent taken back to an older version kept the trades it
    saw as one value again; updated once more, the agent read only its rows and those trades
    vanished from its status. They are merged in, over the rows (the newer), once."""
    outbox = Outbox(tmp_path / "agent.sqlite", first_seq=1)
    outbox.save_entries("trades", {"a:b": {"interval": 900, "status": "traded"}, "c:d": {"interval": 1800}})
    older = {"a:b": {"interval": 900, "status": "settled"}, "e:f": {"interval": 2700}}
    outbox.save("trades", older)  # what the older version keeps
    outbox.close()
    again = Outbox(tmp_path / "agent.sqlite")
    merged = {
        "a:b": {"interval": 900, "status": "settled"},
        "c:d": {"interval": 1800},
        "e:f": {"interval": 2700},
    }
    assert again.load_entries("trades") == merged
    assert again.load("trades") is None
    assert again.load_entries("trades") == merged  # (once: nothing left to merge)
