"""`statements pay` on a billing register an older peerwatt made payment files for, before the
register recorded which documents each file holds (table `payment_files`, b9924c8).

Found in a QA pass upgrading a real billing folder: peerwatt 3aef05c ran `statements pay` for
2026-06 (3 direct debits, 3 credit transfers) and `mark-paid` for two of its statements; after the
update, `statements pay` wrote a pain.008 and a pain.001 holding exactly the old file's unpaid
documents, without a word (docs/billing.md promises a later `pay` holds only what no earlier file
holds): a treasurer who uploaded both would have collected from and paid every household twice.
The current version cannot know what the old file held, so the documents the register held when
it began recording payment files, and not marked paid, are refused until the treasurer marks them
paid or gives `--again`."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date, timedelta
from pathlib import Path

from peerwatt.payments import PAIN_001, PAIN_008
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import IBANS
from tests.peerwatt.test_payments_runs import in_files, recorded
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)

ON = (date.today() + timedelta(days=5)).isoformat()
TODAY = date.today().isoformat()

# the payment tables of peerwatt 3aef05c (peerwatt/payments.py), as in the QA pass's register
# (`sqlite3 issued.sqlite .schema`): bank details and payments, no record of the payment files
OLD_PAYMENT_TABLES = """
CREATE TABLE bank_details (
    member TEXT PRIMARY KEY, name TEXT NOT NULL, iban TEXT NOT NULL, bic TEXT,
    mandate_id TEXT, mandate_date TEXT, updated_at TEXT NOT NULL);
CREATE TABLE payments (
    number TEXT PRIMARY KEY REFERENCES documents (number), paid_on TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, recorded_at TEXT NOT NULL);
CREATE TRIGGER payments_never_change BEFORE UPDATE ON payments
    BEGIN SELECT RAISE(ABORT, 'a recorded payment never changes'); END;
CREATE TRIGGER payments_never_deleted BEFORE DELETE ON payments
    BEGIN SELECT RAISE(ABORT, 'a recorded payment is never deleted'); END;
"""


def older_version_paid(billing: Path, docs: list[dict], paid: int = 2) -> list[str]:
    """What peerwatt 3aef05c left in the register after `bank-details` for every household, `pay`
    (whose files it did not record) and `mark-paid` of the first ``paid`` documents with something
    to pay. The numbers with something to pay, not marked paid."""
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'payment%'").fetchone()
        conn.executescript(OLD_PAYMENT_TABLES)
        for i, doc in enumerate(docs):
            conn.execute(
                "INSERT INTO bank_details VALUES (?, ?, ?, NULL, ?, '2026-05-20', '2026-07-01')",
                (doc["member"], f"Household {i}", IBANS[i], f"OAK-{i:04d}"),
            )
        due = [d for d in docs if d["shown"]["total"] // 10_000]
        for d in due[:paid]:
            conn.execute(
                "INSERT INTO payments VALUES (?, '2026-07-09', ?, '2026-07-09')",
                (d["number"], d["shown"]["total"] // 10_000),
            )
        conn.commit()
    finally:
        conn.close()
    return [d["number"] for d in due[paid:]]


def pay(billing: Path, out: Path, *extra: str):
    args = ["--billing", str(billing), "--period", "2026-06", "--out", str(out), "--on", ON]
    return peerwatt("statements", "pay", *args, *extra)


def dump(billing: Path) -> dict[str, list]:
    """The register's documents, runs, bank details and payments."""
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()  # noqa: S608
            for t in ("documents", "runs", "bank_details", "payments")
        }
    finally:
        conn.close()


def refused_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if "issued before this register recorded" in x]
    return line


def named(line: str) -> list[str]:
    """The numbers a line names in its parentheses, 'A to B' (a run of consecutive ones) expanded."""
    (numbers,) = re.findall(r"\((oak-street-[^)]*)\)", line)
    out = []
    for part in numbers.split(", "):
        first, _, last = part.partition(" to ")
        prefix, _, seq = first.rpartition("-")
        end = int(last.rpartition("-")[2]) if last else int(seq)
        out += [f"{prefix}-{n:0{len(seq)}d}" for n in range(int(seq), end + 1)]
    return out


def test_pay_refuses_what_an_older_version_may_have_put_in_a_file(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    unpaid = older_version_paid(billing, docs)
    assert len(unpaid) >= 2
    before = dump(billing)
    out = tmp_path / "sepa"
    first = pay(billing, out)
    # the old code wrote both files with every unpaid document, exit 0, and said nothing of it
    assert first.returncode == 1, first.stdout + first.stderr
    assert not out.exists() or not list(out.iterdir())
    line = refused_line(first.stderr)
    assert line.startswith(f"left out {len(unpaid)} statement(s) and note(s) issued before this register ")
    assert named(line) == unpaid
    assert "older peerwatt" in line and "mark-paid" in line and "--again" in line
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no payment file for 2026-06: ")
    assert "older peerwatt" in last
    assert "bank details" not in last  # (everyone has them)
    # nothing changed by the refusal: no file recorded, no document, payment or bank detail
    assert recorded(billing) == []
    assert dump(billing) == before

    # the next run gives the same answer: the moment the register began recording is kept in it
    second = pay(billing, out)
    assert second.returncode == 1
    assert refused_line(second.stderr) == line
    assert not out.exists() or not list(out.iterdir())


def test_mark_paid_or_again_after_an_older_version(issued: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """What the refusal says to do works: marked paid, a document is not named again; --again puts
    the rest into new files (said so), recorded, so a later run leaves them out as in an earlier
    file."""
    billing, docs = issued
    unpaid = older_version_paid(billing, docs)
    out = tmp_path / "sepa"
    assert pay(billing, out).returncode == 1
    booked = unpaid[0]
    marked = peerwatt("statements", "mark-paid", "--billing", str(billing), "--on", TODAY, booked)
    assert marked.returncode == 0, marked.stderr
    rest = unpaid[1:]
    after = pay(billing, out)
    assert after.returncode == 1
    line = refused_line(after.stderr)
    assert named(line) == rest
    assert line.startswith(f"left out {len(rest)} statement(s)")

    again = pay(billing, out, "--again")
    assert again.returncode == 0, again.stderr
    assert "issued before this register recorded" not in again.stderr
    (said,) = [x for x in again.stdout.splitlines() if x.startswith("--again: ")]
    assert "older peerwatt" in said and named(said) == rest
    assert sorted(n for ns in in_files(out).values() for n in ns) == sorted(rest)
    assert sorted(r[0] for r in recorded(billing)) == sorted(rest)

    later = pay(billing, out)
    assert later.returncode == 0, later.stderr
    assert "no new payment file for 2026-06" in later.stdout
    assert "issued before this register recorded" not in later.stdout + later.stderr


def test_documents_issued_after_the_update_are_paid_as_before(
    month: test_payments.Month, issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    """The first command of this version on the register, here `statements --corrections`, fixes
    the moment: its correction notes are paid as ever, the statements issued before are refused."""
    billing, docs = issued
    unpaid = older_version_paid(billing, docs)
    notes_out = tmp_path / "notes"
    args = ["statements", "--data", str(month.node), "--billing", str(billing), "--period", "2026-06"]
    run = peerwatt(*args, "--out", str(notes_out), "--corrections", "--issued-on", "2026-07-03")
    assert run.returncode == 0, run.stderr
    found = re.search(r"issued (\d+) correction notes and late statements: (\S+) to (\S+)", run.stdout)
    assert found, run.stdout
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        notes = {
            number: json.loads(doc)["shown_total"] // 10_000
            for number, doc in conn.execute(
                "SELECT number, doc FROM documents WHERE issued_at = '2026-07-03' ORDER BY seq"
            )
        }
    finally:
        conn.close()
    assert len(notes) == int(found.group(1)) and found.group(2) in notes

    out = tmp_path / "sepa"
    paid = pay(billing, out)
    assert paid.returncode == 0, paid.stderr
    line = refused_line(paid.stderr)
    assert named(line) == unpaid
    held = sorted(n for ns in in_files(out).values() for n in ns)
    assert held and held == sorted(n for n, cents in notes.items() if cents)
    assert {Path(f).name for _n, f, _m, _o in recorded(billing)} <= {
        f"oak-street-2026-06-{PAIN_008}.xml",
        f"oak-street-2026-06-{PAIN_001}.xml",
    }
