"""The month-end run issues the month's statements and, with them, the correction notes of the two
months before (the simulated June of test_statements_month.py, continued to August 1): what changed
for June after its statements shows up with July's, numbered in June's sequence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain.store import Store
from peerwatt.statements import earlier_periods, issue_corrections, verify_document
from tests.peerwatt.test_statements_month import DAY, JULY, Month, build_month, issue
from tests.support.cli import peerwatt

AUGUST = JULY + 31 * DAY


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    m = build_month(tmp_path_factory.mktemp("next-month"))
    m.c.run_block([], AUGUST + 60)  # July has ended on the ledger
    return m


def test_earlier_periods():
    assert earlier_periods("2026-07") == ["2026-05", "2026-06"]
    assert earlier_periods("2027-01") == ["2026-11", "2026-12"]
    assert earlier_periods("2026-02", 1) == ["2026-01"]


def issue_june(month: Month, billing: Path) -> list[dict]:
    """June's statements issued into ``billing`` from the month's ledger (store closed after)."""
    store = Store.open(month.node, readonly=True)
    try:
        return issue(store, month, billing)
    finally:
        store.close()


def test_july_run_brings_junes_corrections(month: Month, tmp_path: Path) -> None:
    billing = month.node / "billing"
    june = issue_june(month, billing)
    out = tmp_path / "2026-07"
    run = peerwatt(
        "statements",
        "--data",
        str(month.node),
        "--period",
        "2026-07",
        "--out",
        str(out),
        "--issued-on",
        "2026-08-01",
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("issued 4 statements: oak-street-2026-07-0001 to oak-street-2026-07-0004")
    # June's figures changed after July 1 (a reading corrected, June 30 settled late): notes for June
    first_note = f"oak-street-2026-06-{len(june) + 1:04d}"
    assert lines[1].startswith("issued ") and f"for 2026-06: {first_note} to " in lines[1]
    assert (out / f"{first_note}.pdf").exists() and (out / "oak-street-2026-06.csv").exists()
    assert (out / "oak-street-2026-07.csv").exists()
    store = Store.open(month.node, readonly=True)
    try:
        # nothing left to correct for June, and each note verifies
        assert issue_corrections(store, billing, "2026-06", issued_at="2026-08-02") == []
        note = json.loads((out / f"{first_note}.json").read_text())
        assert note["references"].startswith("oak-street-2026-06-") and verify_document(store, note) == []
    finally:
        store.close()
    again = peerwatt("statements", "--data", str(month.node), "--period", "2026-07", "--out", str(out))
    assert again.returncode != 0 and "statements for 2026-07 were issued on 2026-08-01" in again.stderr


def test_a_month_end_run_that_fails_halfway_issues_nothing(month: Month, tmp_path: Path) -> None:
    """Found in a QA pass: when a June correction note could not be written, July's statements
    were already issued (never again), and June's notes were left for a run nobody was told of."""
    billing = tmp_path / "billing"
    june = issue_june(month, billing)
    out = tmp_path / "2026-07"
    first_note = f"oak-street-2026-06-{len(june) + 1:04d}"
    (out / f"{first_note}.pdf").mkdir(parents=True)  # that file cannot be written
    args = ["statements", "--data", str(month.node), "--period", "2026-07", "--billing", str(billing)]
    args += ["--issued-on", "2026-08-01", "--out", str(out)]
    failed = peerwatt(*args)
    assert failed.returncode == 2 and "cannot write the statements" in failed.stderr
    (out / f"{first_note}.pdf").rmdir()
    retry = peerwatt(*args)
    assert retry.returncode == 0, retry.stderr
    lines = retry.stdout.strip().splitlines()
    assert lines[0].startswith("issued 4 statements: oak-street-2026-07-0001 to oak-street-2026-07-0004")
    assert f"for 2026-06: {first_note} to " in lines[1]
    summary = (out / "oak-street-2026-07.csv").read_text().splitlines()
    assert len(summary) == 1 + 4  # one row per statement, none twice after the failed run
