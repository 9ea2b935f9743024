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
