"""An account holder's name with a control or formatting character, or longer than a SEPA file
holds, is refused in one line naming the rule, and nothing is stored; one rule for a household's
name (`statements bank-details --name`) and the community's (`[sepa] name`).

Found in a QA pass: `bank-details --name` stored a name holding a right-to-left override (U+202E)
and printed it raw, and a 200-character name was stored and cut to 70 in the SEPA file's <Nm> in
silence."""

from __future__ import annotations

from pathlib import Path

from peerwatt.payments import PAIN_001, PAIN_008, bank_details
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import SEPA_TOML, give_everyone_bank_details
from tests.peerwatt.test_payments_names import one_line, pay, store
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)


def details(billing: Path, member: str, name: str):
    return peerwatt(
        "statements", "bank-details", "--billing", str(billing), "--member", member,
        "--name", name, "--iban", "AT611904300234573201",
    )  # fmt: skip


def test_a_name_with_a_formatting_character_or_too_long_is_refused(issued: tuple[Path, list[dict]]) -> None:
    billing, docs = issued
    member = docs[0]["member"]
    hidden = "a name may hold no control or formatting character, nor a line or paragraph separator"
    for name, why in (
        ("\u202eLIAM\u202c Huber", f"it holds a formatting character (U+202E), invisible, {hidden}"),
        ("Anna\u200dHuber", f"it holds a formatting character (U+200D), invisible, {hidden}"),
        ("Anna\u2028Huber", f"it holds a line separator (U+2028), invisible, {hidden}"),
        ("Anna\u2029Huber", f"it holds a paragraph separator (U+2029), invisible, {hidden}"),
        ("A" * 200, "written in Latin letters, as a SEPA file holds it, it is 200 characters long"),
        ("ß" * 36, "written in Latin letters, as a SEPA file holds it, it is 72 characters long"),
    ):
        line = one_line(details(billing, member, name))
        assert line.startswith("error: account holder's name "), line
        assert why.replace(", invisible,", ", invisible, which can make a name read as another:") in line or (
            why in line and "a SEPA file holds at most 70 (the bank would get it cut)" in line
        ), line
        assert line.endswith("; give the name as the bank has it; nothing stored")
        assert line.isprintable() and len(line) < 400, line  # escaped, and the name shown cut
    assert bank_details(billing) == {}
    for name in ("A" * 70, "Zoë Łukasiewicz-Müller", 'Ann & "Bob" <x>'):
        res = details(billing, member, name)
        assert res.returncode == 0, res.stderr
        assert bank_details(billing)[member].name == name


def test_pay_leaves_out_a_stored_name_the_rule_refuses(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    """Stored by an older version: named in the warning, escaped, and left out of the file."""
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    payer = next(d for d in docs if d["shown"]["total"] < 0)
    store(billing, payer["member"], "name", "\u202eLIAM\u202c Huber")
    out = tmp_path / "sepa"
    res = pay(billing, out)
    assert res.returncode == 0, res.stderr
    (warning,) = res.stderr.splitlines()
    assert "'\\u202eLIAM\\u202c Huber' cannot go into a SEPA file: it holds a formatting character" in warning
    assert warning.isprintable()
    assert payer["number"].encode() not in (out / f"oak-street-2026-06-{PAIN_008}.xml").read_bytes()
    assert (out / f"oak-street-2026-06-{PAIN_001}.xml").exists()


def test_the_communitys_own_name_is_held_to_the_same_rule(
    issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    toml = billing / "billing.toml"
    toml.write_text(SEPA_TOML.replace('"Oak Street Energiegemeinschaft"', '"' + "Oak Street " * 8 + '"'))
    line = one_line(pay(billing, tmp_path / "sepa"))
    assert line.startswith(f"error: {toml}: [sepa] name 'Oak Street Oak Street Oak Street Oak Str'... cannot")
    assert line.endswith(
        "it is 87 characters long, and a SEPA file holds at most 70 (the bank would get it cut)"
    )
    assert not (tmp_path / "sepa").exists()
