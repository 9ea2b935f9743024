"""Only what a SEPA payment file can hold goes into one: an IBAN of a country of the SEPA scheme,
and the community's creditor identifier in its form, with its check digits.

Found in a QA pass: IBANs of Saudi Arabia and Brazil were stored (a SEPA credit transfer to them is
refused by the bank), and `[sepa] creditor_id = "hello world <x>"` went into the pain.008 as the
creditor's id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peerwatt.payments import PAIN_008, bank_details
from peerwatt.statements import BillingError
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import SEPA_TOML, give_everyone_bank_details
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)

OUTSIDE = ["SA0380000000608010167519", "BR1800360305000010009795493C1"]  # valid, not SEPA


def one_line(res) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.splitlines()
    return line


def pay(billing: Path, out: Path):
    return peerwatt("statements", "pay", "--billing", str(billing), "--period", "2026-06", "--out", str(out))


def test_an_iban_outside_the_sepa_scheme_is_refused(issued: tuple[Path, list[dict]]) -> None:
    billing, docs = issued
    for iban in OUTSIDE:
        res = peerwatt(
            "statements", "bank-details", "--billing", str(billing), "--member", docs[0]["member"],
            "--name", "Anna Huber", "--iban", iban,
        )  # fmt: skip
        assert one_line(res) == (
            f"error: IBAN {iban!r} is of {iban[:2]}, a country outside the SEPA scheme: a SEPA payment file "
            "cannot pay to or collect from it"
        )
    assert bank_details(billing) == {}
    # Switzerland and the United Kingdom are outside the EU, in the SEPA scheme
    for iban in ("CH9300762011623852957", "GB33BUKB20201555555555"):
        res = peerwatt(
            "statements", "bank-details", "--billing", str(billing), "--member", docs[0]["member"],
            "--name", "Anna Huber", "--iban", iban,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert bank_details(billing)[docs[0]["member"]].iban == iban


def test_a_stored_iban_outside_the_sepa_scheme_is_left_out(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    """Stored by a version that did not check it: the household is named and left out."""
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    payee = next(d for d in docs if d["shown"]["total"] > 0)
    conn = sqlite3.connect(billing / "issued.sqlite")
    conn.execute("UPDATE bank_details SET iban = ? WHERE member = ?", (OUTSIDE[0], payee["member"]))
    conn.commit()
    conn.close()
    out = tmp_path / "sepa"
    res = pay(billing, out)
    assert res.returncode == 0, res.stderr
    (warning,) = res.stderr.splitlines()
    assert warning.startswith(f"warning: {payee['member_name']} ({payee['member']}) left out, its IBAN ")
    assert "outside the SEPA scheme" in warning and payee["number"] in warning
    files = b"".join(p.read_bytes() for p in out.iterdir())
    assert OUTSIDE[0].encode() not in files and payee["number"].encode() not in files


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("hello world <x>", "'hello world <x>' is not a SEPA creditor identifier (2 letters of the country"),
        ("AT62ZZZ01234567890", "'AT62ZZZ01234567890': its check digits are 62, and 01234567890AT00 gives 61"),
        ("US98ZZZ09999999999", "'US98ZZZ09999999999': US is not a country of the SEPA scheme"),
        ("DE98ZZZ", "'DE98ZZZ' is not a SEPA creditor identifier"),
    ],
)
def test_a_creditor_id_not_of_the_sepa_form_is_refused(
    given: str, why: str, issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    toml = billing / "billing.toml"
    toml.write_text(SEPA_TOML.replace('creditor_id = "AT61ZZZ01234567890"', f'creditor_id = "{given}"'))
    line = one_line(pay(billing, tmp_path / "sepa"))
    assert line.startswith(f"error: {toml}: [sepa] creditor_id: {why}"), line
    assert not (tmp_path / "sepa").exists()


def test_a_creditor_id_is_taken_in_any_spacing_and_case(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    toml = billing / "billing.toml"
    toml.write_text(
        SEPA_TOML.replace('creditor_id = "AT61ZZZ01234567890"', 'creditor_id = "de98 zzz 09999999999"')
    )
    from peerwatt.payments import check_creditor_id

    res = pay(billing, tmp_path / "sepa")
    assert res.returncode == 0, res.stderr
    debit = (tmp_path / "sepa" / f"oak-street-2026-06-{PAIN_008}.xml").read_bytes()
    assert b"<Id>DE98ZZZ09999999999</Id>" in debit
    assert check_creditor_id("DE98ZZZ09999999999") == "DE98ZZZ09999999999"
    with pytest.raises(BillingError, match="check digits are 97"):
        check_creditor_id("DE97ZZZ09999999999")


def test_the_communitys_own_iban_must_be_in_the_sepa_scheme(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    toml = billing / "billing.toml"
    toml.write_text(SEPA_TOML.replace("AT483200000012345864", OUTSIDE[0]))
    assert one_line(pay(billing, tmp_path / "sepa")).startswith(
        f"error: {toml}: [sepa] iban: IBAN {OUTSIDE[0]!r} is of SA, a country outside the SEPA scheme"
    )
