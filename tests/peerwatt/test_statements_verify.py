"""`peerwatt statements verify` says what it checked: every figure the ledger determines, the VAT
and total computed at the stated rate, and, with `--billing DIR` (the issuer's folder), the issuer's
settings and numbering against its register; without it, it names them as not checked.

Found in a QA pass: a statement forged with VAT 25 % instead of the issuer's 20 % (so a larger total
to pay), in USD instead of EUR, or under another number verified with "every figure matches the
ledger", exit 0: the VAT setting, the currency and the number were taken from the document itself,
and none of them is on the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.canonical import dumps_checked, loads_strict
from chain.store import Store
from market.billing import FORMAT, VatSetting, member_statement, with_number
from peerwatt.statements import (
    issue_corrections,
    issue_period,
    ledger_view,
    period_bounds,
    render_pdf,
    write_files,
)
from tests.peerwatt.test_statements_month import Month, build_month
from tests.support.cli import peerwatt

VAT_20 = 'currency = "EUR"\n[vat]\ncharged = true\nrate_percent = "20"\nnote = "VAT no. ATU12345678"\n'


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


@pytest.fixture(scope="module")
def issued(month: Month, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """June's statements (VAT 20 %) and, later, its correction notes: the billing folder, the
    folder of their files, the documents."""
    base = tmp_path_factory.mktemp("issued")
    billing, out = base / "billing", base / "out"
    billing.mkdir()
    (billing / "billing.toml").write_text(VAT_20)
    store = Store.open(month.node, readonly=True)
    try:
        docs = issue_period(store, billing, "2026-06", issued_at="2026-07-01", height=month.issue_height)
        docs += issue_corrections(store, billing, "2026-06", issued_at="2026-07-05")
    finally:
        store.close()
    assert {d["kind"] for d in docs} >= {"statement", "debit_note"}
    write_files(docs, out)
    return billing, out, docs


def verify(month: Month, path: Path, *extra: str):
    return peerwatt("statements", "verify", "--data", str(month.node), str(path), *extra)


def forge(
    month: Month, doc: dict, *, vat: VatSetting, currency: str, number: str, layout: int = FORMAT
) -> dict:
    """What the QA pass did: the member's statement computed from the same ledger at the same
    height, with another VAT setting, currency or number (so consistent in itself); or in another
    JSON layout."""
    store = Store.open(month.node, readonly=True)
    try:
        view = ledger_view(store, doc["ledger"]["height"])
    finally:
        store.close()
    start, end = period_bounds(doc["period"], view.timezone)
    figures = member_statement(
        view,
        doc["member"],
        period=doc["period"],
        start=start,
        end=end,
        vat=vat,
        currency=currency,
        layout=layout,
    )
    return with_number(figures, number, doc["issued_at"])


def write(tmp_path: Path, doc: dict, name: str) -> Path:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(render_pdf(doc))
    return path


def test_a_genuine_statement_says_what_was_and_was_not_checked(month: Month, issued, tmp_path: Path) -> None:
    billing, out, docs = issued
    note = next(d for d in docs if d["kind"] != "statement")
    for doc, suffix in ((docs[0], ".pdf"), (docs[0], ".json"), (note, ".pdf")):
        res = verify(month, out / f"{doc['number']}{suffix}")
        assert res.returncode == 0, res.stderr
        assert "every figure matches" not in res.stdout
        first, second = res.stdout.splitlines()
        height = (doc if doc["kind"] == "statement" else doc["corrected"])["ledger"]["height"]
        assert first.startswith(f"{doc['number']}: matches the ledger at height {height} (block ")
        assert "in every figure the ledger determines" in first
        assert second == (
            "not checked, not on the ledger: VAT 20.00 % and currency EUR are the issuer's settings, "
            f"the number {doc['number']} and issue date {doc['issued_at']} its numbering; "
            "--billing DIR (the issuer's billing folder) checks them against its register"
        )
        res = verify(month, out / f"{doc['number']}{suffix}", "--billing", str(billing))
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[1] == (
            f"checked against the issuer's register {billing / 'issued.sqlite'}: issued as "
            f"{doc['number']} on {doc['issued_at']} with VAT 20.00 % and currency EUR, "
            "identical in every field"
        )


def test_a_statement_forged_with_another_vat_rate(month: Month, issued, tmp_path: Path) -> None:
    billing, _out, docs = issued
    doc = docs[0]
    forged = forge(month, doc, vat=VatSetting(True, 2500, "VAT 25 %"), currency="EUR", number=doc["number"])
    assert forged["total"] != doc["total"] and forged["net"] == doc["net"]
    path = write(tmp_path, forged, "forged-vat")
    # without the issuer's folder: the ledger cannot tell; the output says the rate was not checked
    res = verify(month, path)
    assert res.returncode == 0, res.stderr
    assert "every figure matches" not in res.stdout
    assert (
        "not checked, not on the ledger: VAT 25.00 % and currency EUR are the issuer's settings" in res.stdout
    )
    # with it: refused, naming what differs from what was issued
    res = verify(month, path, "--billing", str(billing))
    assert res.returncode == 1, res.stdout
    lines = res.stderr.splitlines()
    assert "vat.rate_bp: the document says 2500, the issuer's register holds 2000" in lines
    assert f"total: the document says {forged['total']}, the issuer's register holds {doc['total']}" in lines
    assert lines[-1] == f"error: {path}: {len(lines) - 1} figure(s) differ from the issuer's register"


def test_another_currency_or_number_is_named_unchecked_and_caught_by_the_register(
    month: Month, issued, tmp_path: Path
) -> None:
    billing, _out, docs = issued
    doc = docs[0]
    vat = VatSetting.from_json(doc["vat"])
    usd = write(tmp_path, forge(month, doc, vat=vat, currency="USD", number=doc["number"]), "usd")
    res = verify(month, usd)
    assert res.returncode == 0 and "VAT 20.00 % and currency USD are the issuer's settings" in res.stdout
    res = verify(month, usd, "--billing", str(billing))
    assert (
        res.returncode == 1
        and "currency: the document says 'USD', the issuer's register holds 'EUR'" in res.stderr
    )
    never = doc["number"][:-4] + "0999"
    other = write(tmp_path, forge(month, doc, vat=vat, currency="EUR", number=never), "never-issued")
    res = verify(month, other)
    assert res.returncode == 0 and f"the number {never} and issue date" in res.stdout
    res = verify(month, other, "--billing", str(billing))
    assert res.returncode == 1
    assert (
        f"number: the issuer's register {billing / 'issued.sqlite'} holds no document {never}" in res.stderr
    )
    assert res.stderr.splitlines()[-1] == f"error: {other}: 1 figure(s) differ from the issuer's register"


def test_what_the_ledger_determines_is_checked_without_the_register(
    month: Month, issued, tmp_path: Path
) -> None:
    _billing, _out, docs = issued
    doc = docs[0]
    # a VAT amount that is not the stated rate of the net: caught from the ledger alone
    wrong = loads_strict(dumps_checked(doc))
    wrong["vat"]["amount"] += 50_000
    wrong["total"] += 50_000
    res = verify(month, write(tmp_path, wrong, "vat-amount"))
    assert res.returncode == 1
    assert (
        f"vat.amount: the document says {wrong['vat']['amount']}, the ledger gives {doc['vat']['amount']}"
        in (res.stderr)
    )
    assert res.stderr.splitlines()[-1].endswith("figure(s) differ from the ledger")
    # a number of another community or month: the ledger's community and the period say what it must be
    moved = forge(
        month, doc, vat=VatSetting.from_json(doc["vat"]), currency="EUR", number="elm-street-2026-06-0001"
    )
    res = verify(month, write(tmp_path, moved, "moved"))
    assert res.returncode == 1
    assert (
        "number: the document says 'elm-street-2026-06-0001', the ledger's community and the period give "
        "oak-street-2026-06-NNNN" in res.stderr
    )


def test_a_billing_folder_without_a_register_is_one_line(month: Month, issued, tmp_path: Path) -> None:
    _billing, out, docs = issued
    res = verify(month, out / f"{docs[0]['number']}.pdf", "--billing", str(tmp_path / "nothing"))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {tmp_path / 'nothing'} has no issued.sqlite: "
        "give the billing folder the statement was issued from\n"
    )
    assert not (tmp_path / "nothing").exists()


def test_a_statement_of_the_first_format_still_verifies(month: Month, issued, tmp_path: Path) -> None:
    """Format 2 added the intervals left out without their readings; a statement issued in format 1
    (before) is re-derived in its own layout, and one of a format this version does not know is one
    line naming it."""
    _billing, _out, docs = issued
    doc = docs[0]
    vat = VatSetting.from_json(doc["vat"])
    first = forge(month, doc, vat=vat, currency=doc["currency"], number=doc["number"], layout=1)
    assert first["format"] == 1 and doc["format"] == 2
    path = tmp_path / "first.json"
    path.write_bytes(dumps_checked(first))
    res = verify(month, path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{doc['number']}: matches the ledger at height")
    path.write_bytes(dumps_checked({**doc, "format": 3}))
    res = verify(month, path)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"error: {path} is not a peerwatt statement or note: format is 3: this version of peerwatt "
        "re-derives formats 1, 2 (a newer document needs a newer peerwatt)"
    ]
