"""A name no SEPA file can carry is refused when it is stored, and a payment sepaxml cannot write
is named in one line, with nothing written.

Found in a QA pass: `bank-details --name $'Ana\\x0bMaria\\x01'` and `--name '🙂🙂'` were stored, and
every later `pay` of the community failed: a traceback (ExpatError from sepaxml's pretty print)
and a 15-line schema dump with exit 2, neither naming the household."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from peerwatt.payments import PAIN_001, PAIN_008, bank_details
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import SEPA_TOML, give_everyone_bank_details, schema
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)


def one_line(res, code: int = 2) -> str:
    assert res.returncode == code, res.stdout + res.stderr
    (line,) = res.stderr.splitlines()
    return line


def pay(billing: Path, out: Path):
    return peerwatt("statements", "pay", "--billing", str(billing), "--period", "2026-06", "--out", str(out))


def store(billing: Path, member: str, column: str, value: str) -> None:
    """Bank details as a version that did not check them (or another tool) left them."""
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        conn.execute(f"UPDATE bank_details SET {column} = ? WHERE member = ?", (value, member))
        conn.commit()
    finally:
        conn.close()


def test_bank_details_refuse_a_name_no_sepa_file_can_carry(issued: tuple[Path, list[dict]]) -> None:
    billing, docs = issued
    member = docs[0]["member"]

    def run(name: str):
        return peerwatt(
            "statements", "bank-details", "--billing", str(billing), "--member", member,
            "--name", name, "--iban", "AT611904300234573201",
        )  # fmt: skip

    for name, why in (
        ("Ana\x0bMaria\x01", "it holds a control character (U+000B)"),
        ("Ana\tMaria", "it holds a control character (U+0009)"),
        ("🙂🙂", "written in Latin letters, as a SEPA file holds it, it is empty"),
        ("\u200b\u200b", "written in Latin letters, as a SEPA file holds it, it is empty"),
    ):
        assert one_line(run(name)) == (
            f"error: account holder's name {name!r} cannot go into a SEPA file: {why}; give the name as "
            "the bank has it; nothing stored"
        )
    assert bank_details(billing) == {}
    res = run("Zoë Łukasiewicz-Müller")
    assert res.returncode == 0, res.stderr
    assert bank_details(billing)[member].name == "Zoë Łukasiewicz-Müller"


def test_pay_leaves_out_a_household_whose_stored_name_cannot_go_into_a_file(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    payer = next(d for d in docs if d["shown"]["total"] < 0)
    store(billing, payer["member"], "name", "Ana\x0bMaria\x01")
    out = tmp_path / "sepa"
    res = pay(billing, out)
    assert res.returncode == 0, res.stderr
    (warning,) = res.stderr.splitlines()
    assert warning.startswith(f"warning: {payer['member_name']} ({payer['member']}) left out, its account ")
    assert payer["number"] in warning and "control character (U+000B)" in warning
    debit = (out / f"oak-street-2026-06-{PAIN_008}.xml").read_bytes()
    schema(PAIN_008).validate(debit.decode())
    assert payer["number"].encode() not in debit
    assert (out / f"oak-street-2026-06-{PAIN_001}.xml").exists()


def test_a_payment_sepaxml_cannot_write_is_named_and_nothing_is_written(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    payer = [d for d in docs if d["shown"]["total"] < 0][1]
    store(billing, payer["member"], "mandate_id", "M" * 40)  # (a mandate id is at most 35)
    out = tmp_path / "sepa"
    line = one_line(pay(billing, out))
    assert line.startswith(
        f"error: cannot write the SEPA file of direct debits: the payment of {payer['number']} to or from "
        f"{payer['member_name']} ({payer['member']}) does not validate: "
    )
    assert "MndtId" in line and line.endswith(
        "no file written: check its bank details (peerwatt statements bank-details)"
    )
    assert not out.exists()
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM payment_files").fetchone() == (0,)
    finally:
        conn.close()


def test_the_communitys_own_name_is_checked_too(issued: tuple[Path, list[dict]], tmp_path: Path) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    toml = billing / "billing.toml"
    toml.write_text(SEPA_TOML.replace('name = "Oak Street Energiegemeinschaft"', 'name = "Oak\\u0007Street"'))
    assert one_line(pay(billing, tmp_path / "sepa")) == (
        f"error: {toml}: [sepa] name 'Oak\\x07Street' cannot go into a SEPA file: it holds a control "
        "character (U+0007)"
    )
    assert not (tmp_path / "sepa").exists()
