"""The operator's statements page in the dashboard (issue 20 item 1): the simulated June's statements
and a correction note, issued into the node's billing folder, listed with their totals, ledger
heights and payments; for admins only."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.store import Store
from dashboard.app import create_app
from peerwatt.payments import mark_paid
from peerwatt.statements import issue_corrections
from tests.dashboard.conftest import TEST_PASSWORD_METHOD, login
from tests.peerwatt.test_statements_month import Month, build_month, issue

PASSWORDS = {"admin": "admin-pass-1234", "villa": "villa-pass-1234"}


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("dashboard-month"))


def test_the_operator_sees_the_issued_statements(month: Month, tmp_path: Path) -> None:
    billing = month.node / "billing"
    store = Store.open(month.node, readonly=True)
    try:
        statements = issue(store, month, billing)
        notes = issue_corrections(store, billing, "2026-06", issued_at="2026-07-04")
    finally:
        store.close()
    assert notes  # the reading corrected after July 1
    first = statements[0]
    mark_paid(billing, [first["number"]], on="2026-07-09", now="2026-07-10")
    app = create_app(
        month.node,
        instance_dir=tmp_path / "instance",
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )
    accounts = app.extensions["peerwatt"].accounts
    accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    accounts.add_user("villa", PASSWORDS["villa"], role="household", meters=[month.c.meters[0].id])

    admin = app.test_client()
    assert login(admin, "admin", PASSWORDS["admin"]).status_code == 302
    data = admin.get("/api/v1/statements").get_json()
    listed = {d["number"]: d for d in data["statements"]}
    assert set(listed) == {d["number"] for d in statements + notes}
    for doc in statements:
        row = listed[doc["number"]]
        assert (row["kind"], row["member"], row["total"]) == ("statement", doc["member"], doc["total"])
        assert row["shown_total"] == doc["shown"]["total"] and row["height"] == month.issue_height
    for note in notes:
        assert listed[note["number"]]["references"] == note["references"]
    assert listed[first["number"]]["paid_on"] == "2026-07-09"
    (june,) = data["periods"]
    assert june["documents"] == len(statements) + len(notes)
    assert june["collect"] - june["pay_out"] == -sum(d["shown_total"] for d in listed.values())
    assert 'href="/statements"' in admin.get("/").get_data(as_text=True)  # in the admin's menu
    page = admin.get("/statements?period=2026-06").get_data(as_text=True)
    assert first["number"] in page and "paid 2026-07-09" in page and "corrects " in page
    assert "No statements issued for 2026-05 yet." in admin.get("/statements?period=2026-05").get_data(
        as_text=True
    )
    assert admin.get("/statements?period=June").status_code == 400

    household = app.test_client()
    assert login(household, "villa", PASSWORDS["villa"]).status_code == 302
    assert household.get("/statements").status_code == 403
    assert 'href="/statements"' not in household.get("/").get_data(as_text=True)
    assert household.get("/api/v1/statements").status_code == 403
    assert app.test_client().get("/statements").status_code in (302, 401)
