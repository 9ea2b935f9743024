"""`statements verify` checks every field of a credit or debit note the ledger determines, and names
each that differs, as it does for a statement.

Found in a QA pass: a correction note whose total, member or member_name, kind (debit_note made a
credit_note), references, replaces_figures_of, community, currency, period, format, top-level
ledger or previous_ledger.block_time were edited verified with "matches the ledger ... in every
figure" (exit 0); only --billing caught it. The note's total is what the documents show as the
amount. And a format-2 statement re-labelled as format 1 (its missing_reading flags and note
dropped) verified without a word about what it leaves out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chain.canonical import dumps_checked, loads_strict
from chain.store import Store
from market.billing import VatSetting
from peerwatt.statements import issue_corrections, issue_period, verify_document
from tests.peerwatt.test_statements_month import Month, build_month, day
from tests.peerwatt.test_statements_verify import forge
from tests.support.cli import peerwatt


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


@pytest.fixture(scope="module")
def note(month: Month, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The debit note of the household whose June 30 export was corrected after its statement."""
    billing = tmp_path_factory.mktemp("issued") / "billing"
    store = Store.open(month.node, readonly=True)
    try:
        issue_period(store, billing, "2026-06", issued_at="2026-07-01", height=month.issue_height)
        notes = issue_corrections(store, billing, "2026-06", issued_at="2026-07-05")
    finally:
        store.close()
    return next(n for n in notes if n["kind"] == "debit_note" and n["total"] < 0)


@pytest.fixture(scope="module")
def store(month: Month):
    s = Store.open(month.node, readonly=True)
    yield s
    s.close()


def edited(doc: dict, path: str, value: Any) -> dict:
    out = loads_strict(dumps_checked(doc))
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    target[last] = value
    return out


def test_a_genuine_note_verifies(store: Store, note: dict) -> None:
    assert verify_document(store, note) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("total", 5_000_000),
        ("member", "0" * 32),
        ("member_name", "someone else"),
        ("kind", "credit_note"),
        ("community", "elm-street"),
        ("currency", "USD"),
        ("period", "2026-05"),
        ("format", 1),
        ("ledger.height", 3),
        ("ledger.block_hash", "00" * 32),
        ("ledger.block_time", 1),
        ("previous_ledger.block_time", 1),
    ],
)
def test_each_edited_field_of_a_note_is_named(store: Store, note: dict, path: str, value: Any) -> None:
    forged = edited(note, path, value)
    problems = verify_document(store, forged)
    assert any(p.startswith(f"{path}: the document says {value!r}, the ledger gives ") for p in problems), (
        problems
    )


def test_a_notes_numbers_follow_the_numbering_rule(store: Store, note: dict) -> None:
    number, references = note["number"], note["references"]
    assert note["replaces_figures_of"] == references  # the statement's figures: the first note
    # another community's number; one after the note's own; the note replacing its own figures
    problems = verify_document(store, edited(note, "references", "elm-street-2026-06-0001"))
    assert problems == [
        "references: the document says 'elm-street-2026-06-0001', the ledger's community and the "
        "period give oak-street-2026-06-NNNN"
    ]
    later = number[:-4] + "0999"
    problems = verify_document(store, edited(note, "references", later))
    assert len(problems) == 1 and problems[0].startswith(
        f"replaces_figures_of: the document says {references!r}"
    )
    problems = verify_document(store, edited(note, "replaces_figures_of", number))
    assert len(problems) == 1 and problems[0].startswith(f"replaces_figures_of: the document says {number!r}")


def test_the_cli_refuses_an_edited_note_total(month: Month, note: dict, tmp_path: Path) -> None:
    forged = edited(note, "total", -note["total"])
    path = tmp_path / "forged.json"
    path.write_bytes(dumps_checked(forged))
    res = peerwatt("statements", "verify", "--data", str(month.node), str(path))
    assert res.returncode == 1, res.stdout
    assert f"total: the document says {-note['total']}, the ledger gives {note['total']}" in res.stderr
    assert res.stdout == ""


def test_a_statement_relabelled_as_format_1_says_what_it_leaves_out(tmp_path: Path) -> None:
    """Format 1 is what an older peerwatt issued, and the ledger cannot tell which version issued a
    statement: it still verifies (its money is the same), and verify says what format 2 names."""
    month = build_month(tmp_path / "month", lost=((3, day(15)),))
    billing = tmp_path / "billing"
    store = Store.open(month.node, readonly=True)
    try:
        docs = issue_period(store, billing, "2026-06", issued_at="2026-07-01", height=month.issue_height)
    finally:
        store.close()
    (doc,) = [d for d in docs if d["flags"]]
    relabelled = forge(
        month,
        doc,
        vat=VatSetting(False, 0, doc["vat"]["note"]),
        currency="EUR",
        number=doc["number"],
        layout=1,
    )
    assert relabelled["flags"] == [] and relabelled["total"] == doc["total"]
    path = tmp_path / "relabelled.json"
    path.write_bytes(dumps_checked(relabelled))
    res = peerwatt("statements", "verify", "--data", str(month.node), str(path))
    assert res.returncode == 0, res.stderr
    meter = doc["meters"][0]
    assert (
        "format 1 does not show intervals left out: at its height the ledger gives 2 interval(s) of meter "
        f"{meter['name'] or meter['meter'][:8]} not billed, without their data or with readings that "
        "cannot be true (format 2 names them)"
    ) in res.stdout.splitlines()
    res = peerwatt("statements", "verify", "--data", str(month.node), str(path), "--billing", str(billing))
    assert res.returncode == 1 and "format: the document says 1, the issuer's register holds 2" in res.stderr
