"""What the files around the statements say about correction notes and the grid operator's data.

Found in a QA pass: the summary CSV's `provisional` of a note held the corrected figures' whole
provisional part (not the note's change of it, as its total is the change of the total); the SEPA
remittance text of a note said "energy community statement 2026-06" as a statement's does; under
settlement_source "gridops" the PDF said "the grid operator's validated data for 0 intervals, the
meter's own readings for the others" (readings are never used there) and nothing said the data
was still due; and a credit note of 0.00 was issued under "gridops" for a household whose money
and billed energy had not changed (a trade cleared before it left went from "cleared, not yet
settled" to "not settled" when the grid operator's window ended)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader

from chain.canonical import loads_strict
from chain.store import Store
from peerwatt.gridops import assign_meters, bodies, parse_csv, sign_bodies
from peerwatt.payments import payment_run
from peerwatt.statements import ledger_view
from tests.peerwatt.test_payments import SEPA_TOML, give_everyone_bank_details
from tests.peerwatt.test_statements_gridops import ARRIVES, _newcomer_meter, june_file, point
from tests.peerwatt.test_statements_month import DAY, Month, build_month
from tests.support.cli import peerwatt


def run(month: Month, billing: Path, out: Path, *extra: str) -> list[dict]:
    """`peerwatt statements` for June; the documents it wrote (by their JSON files)."""
    before = set(out.glob("*.json")) if out.exists() else set()
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--out", str(out)]
    res = peerwatt(*args, "--billing", str(billing), *extra)
    assert res.returncode == 0, res.stderr
    return [loads_strict(p.read_bytes()) for p in sorted(set(out.glob("*.json")) - before)]


def summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "oak-street-2026-06.csv").open(newline="") as f:
        return {row["number"]: row for row in csv.DictReader(f)}


def pdf_text(path: Path) -> str:
    return " ".join(" ".join(p.extract_text() for p in PdfReader(path).pages).split())


@pytest.fixture(scope="module")
def corrected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict], list[dict]]:
    """June's statements and their correction notes issued by the CLI into one --out folder: the
    billing folder, --out, the statements by member, the notes."""
    base = tmp_path_factory.mktemp("corrected")
    month = build_month(base / "month")
    billing, out = base / "billing", base / "out"
    billing.mkdir()
    (billing / "billing.toml").write_text(SEPA_TOML)
    statements = {d["member"]: d for d in run(month, billing, out, "--height", str(month.issue_height))}
    notes = run(month, billing, out, "--corrections", "--issued-on", "2026-07-02")
    assert notes
    return billing, out, statements, notes


def test_a_notes_summary_row_gives_its_change_of_the_provisional_part(corrected) -> None:
    _billing, out, statements, notes = corrected
    rows = summary(out)
    for note in notes:
        replaced = statements[note["member"]]
        row = rows[note["number"]]
        assert int(row["total"]) == note["total"]
        assert int(row["provisional"]) == note["corrected"]["provisional"] - replaced["provisional"]
        # the household's rows add up to its figures now, in the total and the provisional part
        assert (
            int(rows[replaced["number"]]["provisional"]) + int(row["provisional"])
            == (note["corrected"]["provisional"])
        )
    assert any(statements[n["member"]]["provisional"] for n in notes)  # (else nothing was tested)


def test_a_notes_remittance_text_says_what_it_is(corrected) -> None:
    billing, _out, statements, notes = corrected
    give_everyone_bank_details(billing, list(statements.values()))
    files = payment_run(billing, "2026-06", on=date(2026, 7, 8)).files
    xml = b"".join(files.values()).decode()
    paid = [n for n in notes if n["shown_total"]]
    assert paid
    for note in paid:
        kind = note["kind"].replace("_", " ")
        said = (
            f"{note['number']} correction note ({kind}) to statement {note['references']}, energy community"
        )
        assert said in xml
    for doc in statements.values():
        assert f"{doc['number']} energy community statement 2026-06" in xml or doc["shown"]["total"] == 0


def import_june_data(month: Month) -> None:
    """The grid operator's data for June arrives on July 3 (every household's but the leaver's
    June 20: it left)."""
    c = month.c
    store = Store.open(month.node, readonly=True)
    try:
        data, _ = june_file(month, store)
        view = ledger_view(store)
    finally:
        store.close()
    meters = {
        point(m): meter for m, meter in enumerate([*[p.id for p in c.meters], _newcomer_meter(month, view)])
    }
    by_meter = assign_meters(parse_csv(data, "june.csv", DAY), meters, set(view.meters), "june.csv")
    c.run_block(sign_bodies(c.validators[0].key, c.community, bodies(by_meter, {}), 1000, ARRIVES), ARRIVES)


def test_under_gridops_the_pdf_says_the_data_is_still_due(tmp_path: Path) -> None:
    month = build_month(tmp_path / "month", "gridops")
    billing, out = tmp_path / "billing", tmp_path / "out"
    statements = run(month, billing, out, "--height", str(month.issue_height), "--issued-on", "2026-07-01")
    seller = next(d for d in statements if d["member"] == month.c.members[0].id)
    text = pdf_text(out / f"{seller['number']}.pdf")
    assert "the meter's own readings for the others" not in text
    assert (
        "metered energy: the community settles on the grid operator's validated data only, and none of it "
        "is in for this meter yet: its energy and trades are not billed here; the data is still due"
    ) in text
    # once it is in, the note's figures say where they came from
    import_june_data(month)
    notes = run(month, billing, out, "--corrections", "--issued-on", "2026-07-03")
    assert any(n["member"] == seller["member"] and n["total"] > 0 for n in notes)


def test_no_note_is_issued_that_bills_nothing(tmp_path: Path) -> None:
    month = build_month(tmp_path / "month", "gridops")
    c = month.c
    billing, out = tmp_path / "billing", tmp_path / "out"
    run(month, billing, out, "--height", str(month.issue_height), "--issued-on", "2026-07-01")
    import_june_data(month)
    assert run(month, billing, out, "--corrections", "--issued-on", "2026-07-03")
    # the grid operator's window ends: June 20's trades settle, the leaver's (cleared before it
    # left, no data after) stays unsettled: its money and billed energy do not change
    c.run_block([], ARRIVES + 45 * DAY)
    later = run(month, billing, out, "--corrections", "--issued-on", "2026-08-20")
    assert later
    assert c.members[2].id not in {n["member"] for n in later}
    for n in later:
        assert any(n["deltas"].values()), n["number"]
    store = Store.open(month.node, readonly=True)
    try:
        view = ledger_view(store)
    finally:
        store.close()
    assert any(s["status"] != "settled" for s in view.settlements if s["buyer"] == c.meters[2].id)
