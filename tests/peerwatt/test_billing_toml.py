"""billing.toml is read strictly: an unknown key or table, or a currency that is not an ISO 4217
code, is refused in one line naming the key and the file, before anything is issued (found in a
QA pass: `currancy = "USD"` issued statements in EUR, `[vat] rate = 5`, `[sepa] ibann`, an
`[extra]` table and `currency = "EURO"` or `"eur"` were taken; issued statements never change)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peerwatt.statements import BillingError, load_config, read_billing_toml
from tests.support.cli import peerwatt
from tests.support.market_ledger import closed_market_data

VAT_OFF = '[vat]\ncharged = false\nnote = "VAT not charged: small business."\n'
SEPA = '[sepa]\nname = "Oak Street"\niban = "AT483200000012345864"\nbic = "BKAUATWW"\n'
SEPA += 'creditor_id = "AT61ZZZ01234567890"\n'
GRIDOPS = '[gridops.metering_points]\n"AT0010000000000000001000000000001" = "' + "a" * 32 + '"\n'


def refused(billing: Path, text: str, *said: str) -> None:
    (billing / "billing.toml").write_text(text)
    with pytest.raises(BillingError) as info:
        load_config(billing)
    message = str(info.value)
    assert "\n" not in message and str(billing / "billing.toml") in message, message
    for part in said:
        assert part in message, message


@pytest.mark.parametrize(
    "text, said",
    [
        ('currancy = "USD"\n' + VAT_OFF, ["unknown key", "currancy"]),
        (
            'currency = "EUR"\n[vat]\ncharged = true\nrate_percent = "20"\nrate = 5\nnote = "x"\n',
            ["rate", "[vat]"],
        ),
        ('currency = "EUR"\n' + VAT_OFF + '[sepa]\nname = "Oak"\nibann = "AT48"\n', ["ibann", "[sepa]"]),
        ('currency = "EUR"\n' + VAT_OFF + "[extra]\nx = 1\n", ["unknown", "extra"]),
        ('currency = "EUR"\n' + VAT_OFF + "[gridops]\npoints = {}\n", ["points", "[gridops]"]),
    ],
)
def test_an_unknown_key_or_table_is_named(tmp_path, text, said):
    refused(tmp_path, text, *said)


@pytest.mark.parametrize("currency", ["EURO", "eur", "Eur", "E1R", "€", "", "EU"])
def test_a_currency_must_be_an_iso_4217_code(tmp_path, currency):
    refused(tmp_path, f'currency = "{currency}"\n' + VAT_OFF, "currency", "ISO 4217")


def test_every_known_key_still_loads(tmp_path):
    (tmp_path / "billing.toml").write_text('currency = "CHF"\n' + VAT_OFF + SEPA + GRIDOPS)
    assert load_config(tmp_path).currency == "CHF"
    assert read_billing_toml(tmp_path / "billing.toml")["sepa"]["iban"].startswith("AT48")
    (tmp_path / "billing.toml").write_text(
        '[vat]\ncharged = true\nrate_percent = "7.7"\nnote = "VAT no. CHE-123"\n'
    )
    config = load_config(tmp_path)
    assert config.currency == "EUR" and config.vat.rate_bp == 770


def test_the_readers_of_sepa_and_gridops_refuse_an_unknown_key_too(tmp_path):
    """`statements pay` and `gridops import` read billing.toml with read_billing_toml."""
    (tmp_path / "billing.toml").write_text(
        'currency = "EUR"\n' + VAT_OFF + '[sepa]\nname = "O"\nibann = "x"\n'
    )
    with pytest.raises(BillingError, match="ibann"):
        read_billing_toml(tmp_path / "billing.toml")


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return closed_market_data(tmp_path_factory.mktemp("market"))


def test_statements_with_a_misspelt_currency_issue_nothing(tmp_path, market):
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_text('currancy = "USD"\n' + VAT_OFF)
    r = peerwatt(
        "statements", "--data", str(market), "--period", "2025-10", "--out", str(tmp_path / "s"),
        "--billing", str(billing),
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "currancy" in r.stderr and str(billing / "billing.toml") in r.stderr, r.stderr
    assert os.listdir(billing) == ["billing.toml"] and not (tmp_path / "s").exists()
