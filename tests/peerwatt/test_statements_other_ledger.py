"""A billing folder whose register was issued from another ledger (the same community id, another
chain) is refused in one line by the runs that issue, and nothing is issued.

Found in a QA pass: `statements --corrections --billing DIR` with DIR's register issued from another
ledger exited 0 and issued a note reversing every household's statement (and late statements for
this ledger's households); `statements verify` refuses such a statement ("another chain or a forged
statement")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chain.store import Store
from tests.peerwatt.test_statements_month import DAY, JULY, Month, build_month, issue
from tests.support.cli import peerwatt

AUGUST = JULY + 31 * DAY


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Month, Month]:
    """Two simulated Junes of the community oak-street, each its own chain; the second one's
    ledger goes on to August (July has ended on it)."""
    first = build_month(tmp_path_factory.mktemp("first"))
    other = build_month(tmp_path_factory.mktemp("other"))
    other.c.run_block([], AUGUST + 60)
    return first, other


def issue_june(month: Month, billing: Path) -> list[dict]:
    store = Store.open(month.node, readonly=True)
    try:
        return issue(store, month, billing)
    finally:
        store.close()


def numbers(billing: Path) -> list[str]:
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        return [n for (n,) in conn.execute("SELECT number FROM documents ORDER BY number")]
    finally:
        conn.close()


def test_corrections_from_another_ledger_are_refused(ledgers, tmp_path: Path) -> None:
    first, other = ledgers
    billing = tmp_path / "billing"
    june = issue_june(first, billing)
    assert june[0]["community"] == "oak-street"
    before = numbers(billing)
    out = tmp_path / "out"
    args = ["statements", "--data", str(other.node), "--period", "2026-06", "--out", str(out)]
    res = peerwatt(*args, "--corrections", "--billing", str(billing), "--issued-on", "2026-07-05")
    assert res.returncode == 2, res.stdout
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: {billing / 'issued.sqlite'} holds documents of another ledger: ")
    assert "another chain or a forged statement" in line and "nothing issued" in line
    assert numbers(billing) == before
    assert not out.exists()
    # the ledger it was issued from still takes its corrections
    res = peerwatt(
        "statements", "--data", str(first.node), "--period", "2026-06", "--out", str(out),
        "--corrections", "--billing", str(billing), "--issued-on", "2026-07-05",
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith("issued "), res.stderr


def test_a_month_end_run_on_another_ledger_is_refused(ledgers, tmp_path: Path) -> None:
    """July's month-end on the other ledger would issue July's statements into a register of the
    first ledger's June, and notes for June from the other ledger's figures."""
    first, other = ledgers
    billing = tmp_path / "billing"
    issue_june(first, billing)
    before = numbers(billing)
    out = tmp_path / "out"
    args = ["statements", "--data", str(other.node), "--period", "2026-07", "--out", str(out)]
    res = peerwatt(*args, "--billing", str(billing), "--issued-on", "2026-08-01")
    assert res.returncode == 2, res.stdout
    (line,) = res.stderr.splitlines()
    assert "holds documents of another ledger" in line
    assert numbers(billing) == before
    assert not out.exists()


def test_a_register_ahead_of_the_store_is_refused(ledgers, tmp_path: Path) -> None:
    """A register whose documents name a block this store does not have yet (a node behind)."""
    first, _other = ledgers
    billing = tmp_path / "billing"
    issue_june(first, billing)
    conn = sqlite3.connect(billing / "issued.sqlite")
    conn.execute("DROP TRIGGER documents_never_change")
    conn.execute("UPDATE documents SET height = 999999")
    conn.commit()
    conn.close()
    res = peerwatt(
        "statements", "--data", str(first.node), "--period", "2026-06", "--out", str(tmp_path / "out"),
        "--corrections", "--billing", str(billing), "--issued-on", "2026-07-05",
    )  # fmt: skip
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert "computed from block 999999, and this store's last block is" in line


def test_corrections_from_an_earlier_height_are_refused(ledgers, tmp_path: Path) -> None:
    """--height before the statements' own height would issue notes taking back what they billed
    (the same ledger, its figures as they were before)."""
    first, _other = ledgers
    billing = tmp_path / "billing"
    june = issue_june(first, billing)
    before = numbers(billing)
    height = june[0]["ledger"]["height"]
    res = peerwatt(
        "statements", "--data", str(first.node), "--period", "2026-06", "--out", str(tmp_path / "out"),
        "--corrections", "--billing", str(billing), "--height", str(height - 5),
    )  # fmt: skip
    assert res.returncode == 2, res.stdout
    assert res.stderr == (
        f"error: the register's documents for 2026-06 were computed up to ledger height {height}: "
        f"corrections from height {height - 5}, before it, are not issued (give --height {height} or "
        "later, or leave it out for the last block)\n"
    )
    assert numbers(billing) == before
