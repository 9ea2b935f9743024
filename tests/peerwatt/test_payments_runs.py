"""`statements pay` records which documents each SEPA file holds (table `payment_files` of
issued.sqlite), and a later run leaves those out unless asked `--again`.

Found in a QA pass: docs/billing.md said to record a household's missing bank details and run
`pay` again, and the second run put every unpaid document of the month into its files once more
(an operator who uploaded both would have collected and paid every household twice); the second
run also wrote over the first run's files with a new message id, and a run's files and what was
recorded could disagree."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from peerwatt import payments
from peerwatt.payments import PAIN_001, PAIN_008, mark_paid
from peerwatt.statements import BillingError
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import amounts, give_everyone_bank_details
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)

ON = (date.today() + timedelta(days=5)).isoformat()


def pay(billing: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--billing", str(billing), "--period", "2026-06", "--out", str(out), "--on", ON]
    return peerwatt("statements", "pay", *args, *extra)


def in_files(out: Path) -> dict[str, list[str]]:
    """File name -> the document numbers (end-to-end ids) it holds."""
    return {
        p.name: sorted(amounts(p.read_bytes(), "p8" if PAIN_008 in p.name else "p1"))
        for p in sorted(out.iterdir())
    }


def recorded(billing: Path) -> list[tuple[str, str, str, str]]:
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        return conn.execute(
            "SELECT number, file, msg_id, requested_on FROM payment_files ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()


def test_a_second_run_holds_only_what_no_earlier_file_holds(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    payer = next(d for d in docs if d["shown"]["total"] < 0)
    give_everyone_bank_details(billing, docs, skip=payer["member"])
    out = tmp_path / "sepa"
    first = pay(billing, out)
    assert first.returncode == 0, first.stderr
    assert payer["number"] in first.stderr  # left out, no bank details
    first_files = {p.name: p.read_bytes() for p in out.iterdir()}
    first_numbers = {n for ns in in_files(out).values() for n in ns}
    assert payer["number"] not in first_numbers and first_numbers
    # every document in the first files is recorded with its file and the file's message id
    rows = recorded(billing)
    assert sorted(r[0] for r in rows) == sorted(first_numbers)
    for number, file, msg_id, requested_on in rows:
        assert Path(file).parent == out.resolve() and requested_on == ON
        assert number in in_files(out)[Path(file).name]
        assert f"<MsgId>{msg_id}</MsgId>".encode() in Path(file).read_bytes()

    # the household's bank details are recorded, and `pay` is run again, as docs/billing.md says
    give_everyone_bank_details(billing, docs)
    second = pay(billing, out)
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    now = in_files(out)
    new = {name: numbers for name, numbers in now.items() if name not in first_files}
    assert new == {f"oak-street-2026-06-{PAIN_008}-2.xml": [payer["number"]]}  # only what no file held
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.name in first_files}
    assert kept == first_files  # untouched
    (line,) = [x for x in second.stdout.splitlines() if x.startswith("left out ")]
    assert line.startswith(
        f"left out {len(first_numbers)} statement(s) and note(s) an earlier payment file holds, "
        "not yet marked paid ("
    )
    assert str(out.resolve() / f"oak-street-2026-06-{PAIN_008}.xml") in line and "--again" in line
    assert sorted(r[0] for r in recorded(billing)) == sorted(first_numbers | {payer["number"]})

    # a third run has nothing new: it writes nothing, and says so
    third = pay(billing, out)
    assert third.returncode == 0, third.stderr
    assert "no new payment file for 2026-06" in third.stdout
    assert set(in_files(out)) == set(now)

    # --again: every unpaid document, in new files, and said so; a paid one is not in them
    paid_one = sorted(first_numbers)[0]
    mark_paid(billing, [paid_one], on=date.today().isoformat(), now=date.today().isoformat())
    again = pay(billing, out, "--again")
    assert again.returncode == 0, again.stderr
    assert any(x.startswith("--again: ") and "instead of" in x for x in again.stdout.splitlines())
    newest = {name: ns for name, ns in in_files(out).items() if name not in now}
    assert set(newest) == {f"oak-street-2026-06-{PAIN_008}-3.xml", f"oak-street-2026-06-{PAIN_001}-2.xml"}
    expected = {d["number"] for d in docs if d["shown"]["total"]} - {paid_one}
    assert sorted(n for ns in newest.values() for n in ns) == sorted(expected)


def test_pay_never_writes_over_a_file_in_out(issued: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """A file of the name in --out (an earlier run's, perhaps not yet uploaded) stays as it is; the
    new file gets the next free name."""
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    out = tmp_path / "sepa"
    out.mkdir()
    there = out / f"oak-street-2026-06-{PAIN_008}.xml"
    there.write_bytes(b"an earlier file")
    res = pay(billing, out)
    assert res.returncode == 0, res.stderr
    assert there.read_bytes() == b"an earlier file"
    assert (out / f"oak-street-2026-06-{PAIN_008}-2.xml").exists()
    assert f"wrote {out / f'oak-street-2026-06-{PAIN_008}-2.xml'}: " in res.stdout


def test_a_run_that_cannot_write_its_files_records_nothing(
    issued: tuple[Path, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    out = tmp_path / "sepa"
    real, calls = payments._write_new, []

    def second_fails(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(payments, "_write_new", second_fails)
    with pytest.raises(OSError, match="No space left"):
        payments.pay(billing, "2026-06", on=date.today(), out_dir=out, now="2026-07-07T10:00:00")
    assert len(calls) == 2
    assert recorded(billing) == [] and list(out.iterdir()) == []  # the first file was removed again
    monkeypatch.setattr(payments, "_write_new", real)
    run, written = payments.pay(billing, "2026-06", on=date.today(), out_dir=out, now="2026-07-07T10:01:00")
    assert len(written) == 2 and not run.earlier  # nothing was taken for paid by the failed run


def test_a_run_whose_record_cannot_be_kept_leaves_no_file(
    issued: tuple[Path, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    out = tmp_path / "sepa"

    def disk_fails(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(payments, "_record", disk_fails)
    with pytest.raises(BillingError, match="^cannot use the register .*disk I/O error"):
        payments.pay(billing, "2026-06", on=date.today(), out_dir=out, now="2026-07-07T10:00:00")
    assert list(out.iterdir()) == []
    assert recorded(billing) == []


def test_two_runs_at_once_never_put_a_document_in_both(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    """Both wait for the register's write lock (held here), then one makes the files and the
    other finds their documents in them."""
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    holder = sqlite3.connect(billing / "issued.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peerwatt.cli",
                "statements",
                "pay",
                "--billing",
                str(billing),
                "--period",
                "2026-06",
                "--out",
                str(out),
                "--on",
                ON,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for out in outs
    ]
    time.sleep(3)  # both are waiting for the lock by now
    holder.execute("COMMIT")
    holder.close()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    numbers = [n for out in outs if out.exists() for ns in in_files(out).values() for n in ns]
    assert sorted(numbers) == sorted(d["number"] for d in docs if d["shown"]["total"])  # each once
    assert sorted(r[0] for r in recorded(billing)) == sorted(numbers)
    assert sum("no new payment file" in stdout for stdout, _ in results) == 1
