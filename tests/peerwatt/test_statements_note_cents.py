"""A credit or debit note's PDF and CSV show changes that add up to the amount paid.

Found in a QA pass: the PDF of a note printed `grid_fees 0.01, levies 0.00, p2p_cost 0.08, total
0.10` and then `To be paid to you: EUR 0.09` (what the SEPA file paid): each change was rounded on
its own, the amount due is the difference of the two documents' shown totals."""

from __future__ import annotations

import csv
import io
import re

from pypdf import PdfReader

from market.billing import VatSetting, correction_note, member_statement, with_number
from peerwatt.statements import render_csv, render_pdf
from tests.market.test_billing import DAY, T, view


def bob(value: int, fee: int, levies: int, vat: VatSetting) -> dict:
    settled = dict(view().settlements[0], value=value, grid_fee=fee, levies=levies)
    balance = {"interval": T + 2 * DAY, "account": "bob", "delta": -(value + fee + levies), "height": 5}
    v = view(settlements=[settled], balances=[balance])
    return member_statement(v, "bob", period="2026-06", start=T, end=T + 30 * DAY, vat=vat)


def cents(text: str) -> int:
    return round(float(text.replace(",", "")) * 100)


def printed_changes(pdf: bytes) -> tuple[list[int], int, str]:
    """The changes of a note's PDF (in cents), its Total row and its total sentence."""
    lines = PdfReader(io.BytesIO(pdf)).pages[0].extract_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Line ")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith(("To pay", "To be paid", "Nothing")))
    rows = [line.rsplit(" ", 1) for line in lines[first:end]]
    changes = [cents(amount) for label, amount in rows if label.lower() != "total"]
    (total,) = [cents(amount) for label, amount in rows if label.lower() == "total"]
    return changes, total, lines[end]


def test_the_changes_printed_add_up_to_what_is_paid() -> None:
    for vat in (VatSetting(False, 0, "VAT not charged."), VatSetting(True, 2000, "VAT no. X")):
        original = with_number(bob(200_000, 40_000, 10_000, vat), "c-2026-06-0001", "2026-07-01")
        # the changes of the QA pass: 0.0790 + 0.0132 + 0.0033, rounded on their own 0.08 + 0.01 + 0.00
        note = correction_note(
            original, bob(121_040, 26_840, 6_710, vat), number="c-2026-06-0002", issued_at="2026-07-05"
        )
        assert note is not None and note["kind"] == "credit_note"
        changes, total, sentence = printed_changes(render_pdf(note))
        assert total == sum(changes) == note["shown_total"] // 10_000, (changes, total, note["shown_total"])
        assert sentence == f"To be paid to you: EUR {total // 100}.{total % 100:02d}"
        assert re.search(r"^Levies on energy bought 0\.00 ct/kWh", render_pdf_text(note), re.M)
        rows = list(csv.DictReader(io.StringIO(render_csv(note))))
        shown = {r["code"]: int(r["shown"]) for r in rows if r["section"] == "correction"}
        assert sum(v for code, v in shown.items() if code != "total") == shown["total"] == note["shown_total"]


def render_pdf_text(note: dict) -> str:
    return PdfReader(io.BytesIO(render_pdf(note))).pages[0].extract_text()
