"""Dates the payment commands take are dates that can be true: a payment is marked on a day from the
document's issue date up to today, a mandate was signed by today, and the bank is asked to collect
or execute from today up to 30 days ahead. Each refusal is one line, and nothing is recorded.

Found in a QA pass: `statements mark-paid --on`, `statements pay --on` and `bank-details
--mandate-date` took 2030-01-01 and 2020-01-01, and a recorded payment can never be corrected."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from peerwatt.payments import bank_details, paid
from tests.peerwatt.test_payments import give_everyone_bank_details, issued  # noqa: F401 (fixture)
from tests.peerwatt.test_statements_month import Month, build_month
from tests.support.cli import peerwatt

TODAY = date.today()
MODULE_S = 120  # the tests below take a few seconds; the commands they run read today's date again


@pytest.fixture(scope="module", autouse=True)
def same_day_throughout() -> None:
    """Run the module within one calendar day: a run that started a minute before midnight would
    compare the commands' "today" with yesterday's date (it waits for midnight to pass instead)."""
    global TODAY
    now = datetime.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    if (midnight - now).total_seconds() < MODULE_S:
        time.sleep((midnight - now).total_seconds() + 1)
    TODAY = date.today()


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


def one_line(res) -> str:
    assert res.returncode == 2, res.stdout
    (line,) = res.stderr.splitlines()
    return line


def test_mark_paid_refuses_a_date_in_the_future_or_before_the_issue_date(issued) -> None:  # noqa: F811
    billing, docs = issued
    number = docs[0]["number"]
    args = ["statements", "mark-paid", "--billing", str(billing)]
    future = (TODAY + timedelta(days=1)).isoformat()
    assert one_line(peerwatt(*args, "--on", future, number)) == (
        f"error: --on {future} is in the future (today is {TODAY.isoformat()}): mark a document paid once "
        "the bank statement shows it; nothing recorded"
    )
    assert one_line(peerwatt(*args, "--on", "2020-01-01", number)) == (
        f"error: --on 2020-01-01 is before {number} was issued (2026-07-01): it cannot have been paid then; "
        "nothing recorded"
    )
    assert paid(billing) == {}
    # the issue date itself and today are taken
    res = peerwatt(*args, "--on", "2026-07-01", number)
    assert res.returncode == 0, res.stderr
    res = peerwatt(*args, "--on", TODAY.isoformat(), docs[1]["number"])
    assert res.returncode == 0, res.stderr
    assert set(paid(billing)) == {number, docs[1]["number"]}


def test_a_mandate_signed_in_the_future_is_refused(issued) -> None:  # noqa: F811
    billing, docs = issued
    future = (TODAY + timedelta(days=1)).isoformat()
    res = peerwatt(
        "statements", "bank-details", "--billing", str(billing), "--member", docs[0]["member"],
        "--name", "Anna Huber", "--iban", "AT611904300234573201",
        "--mandate-id", "OAK-0001", "--mandate-date", future,
    )  # fmt: skip
    assert one_line(res) == (
        f"error: mandate date {future} is in the future (today is {TODAY.isoformat()}): give the date the "
        "mandate was signed; nothing stored"
    )
    assert bank_details(billing) == {}


def test_pay_takes_a_collection_date_from_today_to_30_days_ahead(issued, tmp_path: Path) -> None:  # noqa: F811
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    args = [
        "statements",
        "pay",
        "--billing",
        str(billing),
        "--period",
        "2026-06",
        "--out",
        str(tmp_path / "p"),
    ]
    past = (TODAY - timedelta(days=1)).isoformat()
    assert one_line(peerwatt(*args, "--on", past)) == (
        f"error: --on {past} is in the past (today is {TODAY.isoformat()}): give the date the bank is to "
        "collect or execute on, today or later"
    )
    far = (TODAY + timedelta(days=31)).isoformat()
    assert one_line(peerwatt(*args, "--on", far)) == (
        f"error: --on {far} is more than 30 days ahead (today is {TODAY.isoformat()}): a typo? give a date "
        "up to 30 days from today (docs/billing.md)"
    )
    assert one_line(peerwatt(*args, "--on", "2030-01-01")).startswith("error: --on 2030-01-01 is more than")
    assert not (tmp_path / "p").exists()
    last = (TODAY + timedelta(days=30)).isoformat()
    res = peerwatt(*args, "--on", last)
    assert res.returncode == 0, res.stderr
    xml = b"".join(p.read_bytes() for p in (tmp_path / "p").iterdir())
    assert last.encode() in xml
