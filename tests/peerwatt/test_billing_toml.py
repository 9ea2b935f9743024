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


# -- the VAT rate is bounded, the currency an active ISO 4217 code (found in a QA pass: a 1000 % VAT
# rate issued statements with 50.71 VAT on 0.51 net, and the made-up currency "ERU" passed the
# [A-Z]{3} check; issued statements never change, so such a typo was permanent)

VAT_ON = '[vat]\ncharged = true\nrate_percent = "{rate}"\nnote = "VAT no. ATU12345678"\n'


@pytest.mark.parametrize("rate", ["1000", "100", "30.01", "77", "200.5"])
def test_a_vat_rate_above_the_bound_is_refused(tmp_path, rate):
    refused(tmp_path, 'currency = "EUR"\n' + VAT_ON.format(rate=rate), "vat.rate_percent", rate, "30")


@pytest.mark.parametrize("rate", ["\u00b2", "\u0662\u0660", "2\u00b2", "-5", "+20", " 20", "20.5.", ".5"])
def test_a_vat_rate_in_other_digits_or_signs_is_refused(tmp_path, rate):
    """str.isdigit took '²' (int() then raised ValueError: a traceback) and Arabic-Indic '٢٠' (20)."""
    refused(tmp_path, 'currency = "EUR"\n' + VAT_ON.format(rate=rate), "vat.rate_percent")


@pytest.mark.parametrize("rate, bp", [("0", 0), ("7.7", 770), ("25.5", 2550), ("27", 2700), ("30", 3000)])
def test_a_vat_rate_within_the_bound_loads(tmp_path, rate, bp):
    (tmp_path / "billing.toml").write_text('currency = "EUR"\n' + VAT_ON.format(rate=rate))
    assert load_config(tmp_path).vat.rate_bp == bp


@pytest.mark.parametrize(
    "currency",
    [
        "ERU", "EUE", "ABC", "QQQ",  # no such code
        "HRK", "DEM", "ANG",  # withdrawn (Croatia's kuna 2023, the Mark 2002, the Antillean guilder 2025)
        "XXX", "XTS",  # ISO 4217's "no currency" and "testing" codes
        "XAU", "XDR", "CHW",  # gold, the IMF's SDR, a fund code: no money a household pays in
    ],
)  # fmt: skip
def test_a_currency_must_be_an_active_iso_4217_code(tmp_path, currency):
    refused(tmp_path, f'currency = "{currency}"\n' + VAT_OFF, "currency", currency, "ISO 4217")


def test_a_misspelt_currency_is_told_the_codes_it_is_close_to(tmp_path):
    refused(tmp_path, 'currency = "ERU"\n' + VAT_OFF, '"EUR"')


@pytest.mark.parametrize("currency", ["EUR", "CHF", "GBP", "USD", "SEK", "DKK", "PLN", "CZK", "XOF", "XCG"])
def test_an_active_currency_loads(tmp_path, currency):
    (tmp_path / "billing.toml").write_text(f'currency = "{currency}"\n' + VAT_OFF)
    assert load_config(tmp_path).currency == currency


def test_the_currency_codes_are_package_data():
    """The list is a data file in the package (loaded when billing.toml is read), shipped by
    pyproject.toml's package data."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = root / "peerwatt" / "data" / "iso4217.txt"
    assert data.is_file()
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(data.relative_to(root / "peerwatt").match(glob) for glob in package_data["peerwatt"])


@pytest.mark.parametrize(
    "setting, said",
    [
        ('currency = "EUR"\n' + VAT_ON.format(rate="1000"), "vat.rate_percent '1000'"),
        ('currency = "ERU"\n' + VAT_OFF, "currency 'ERU'"),
    ],
)
def test_statements_with_a_wrong_vat_rate_or_currency_issue_nothing(tmp_path, market, setting, said):
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_text(setting)
    r = peerwatt(
        "statements", "--data", str(market), "--period", "2025-10", "--out", str(tmp_path / "s"),
        "--billing", str(billing),
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert said in r.stderr and str(billing / "billing.toml") in r.stderr, r.stderr
    assert os.listdir(billing) == ["billing.toml"] and not (tmp_path / "s").exists()
