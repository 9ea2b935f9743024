"""A credit or debit note's shown changes add up to its shown total, the amount paid.

Found in a QA pass: a note's PDF rounded each change on its own, printing `grid_fees 0.01, levies
0.00, p2p_cost 0.08, total 0.10` above `To be paid to you: EUR 0.09` (what the SEPA file paid);
docs/billing.md promises whole cents rounded so that what is shown adds up."""

from __future__ import annotations

import random

from market.billing import VatSetting, correction_note, member_statement, note_shown, with_number
from tests.market.test_billing import DAY, T, view


def bob(value: int, fee: int, levies: int, vat: VatSetting) -> dict:
    settled = dict(view().settlements[0], value=value, grid_fee=fee, levies=levies)
    balance = {"interval": T + 2 * DAY, "account": "bob", "delta": -(value + fee + levies), "height": 5}
    v = view(settlements=[settled], balances=[balance])
    return member_statement(v, "bob", period="2026-06", start=T, end=T + 30 * DAY, vat=vat)


def test_a_notes_shown_changes_are_those_of_the_figures_shown_and_add_up() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(400):
        vat = rng.choice([VatSetting(False, 0, "n"), VatSetting(True, 2000, "v"), VatSetting(True, 770, "v")])
        figures = [rng.randint(0, 400_000) for _ in range(3)]
        original = with_number(bob(*figures, vat), "c-2026-06-0001", "2026-07-01")
        changed = [max(0, f + rng.randint(-60_000, 60_000)) for f in figures]
        note = correction_note(original, bob(*changed, vat), number="c-2026-06-0002", issued_at="2026-07-05")
        if note is None:
            continue
        checked += 1
        changes = note_shown(note)
        assert changes["total"] == note["shown_total"]
        assert sum(v for code, v in changes.items() if code != "total") == note["shown_total"]
        assert all(v % 10_000 == 0 for v in changes.values())
        # each change is the corrected figure shown less the one the statement showed
        before, after = original["shown"], note["corrected"]["shown"]
        for code, change in changes.items():
            if code == "vat":
                assert change == after["vat"] - before["vat"]
            elif code != "total":
                assert change == after["lines"].get(code, 0) - before["lines"].get(code, 0), code
    assert checked > 300
