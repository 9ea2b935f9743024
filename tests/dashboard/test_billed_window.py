"""The household page counts a meter's metered energy inside its billed window, as its statement and
`peerwatt report` do (docs/billing.md: "Energy its meter measured outside these dates is never
counted").

Found in a QA pass of the simulated June (tests/peerwatt/test_statements_month.py): the household
that joined had 64,256 / 306 Wh import/export on its statement and 67,590 / 340 Wh on the
dashboard (money table, energy tiles, history). Its meter was enrolled at 23:30 on June 11, and
the readings of June 10 and 11 were accepted later (inside the correction window), so the page
also counted the daily interval of June 11, which began before the enrolment.
"""

from __future__ import annotations

import pytest

from chain.store import Store
from market.billing import VatSetting, member_statement
from peerwatt.reports import build_report
from peerwatt.statements import ledger_view
from tests.dashboard.conftest import login, synced_app
from tests.peerwatt.test_statements_month import JULY, Month, build_month, day, metered

PASSWORD = "window-pass-1234"


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("dashboard-window"))


@pytest.fixture(scope="module")
def admin(month: Month, tmp_path_factory: pytest.TempPathFactory):
    app = synced_app(month.node, tmp_path_factory.mktemp("instance"))
    app.extensions["peerwatt"].accounts.add_user("admin", PASSWORD, role="admin")
    client = app.test_client()
    assert login(client, "admin", PASSWORD).status_code == 302
    return client


def summary(admin, meter: str, view: str, date: str) -> dict:
    r = admin.get(f"/api/v1/households/{meter}?view={view}&date={date}")
    assert r.status_code == 200
    return r.get_json()


def newcomer_meter(month: Month) -> str:
    store = Store.open(month.node, readonly=True)
    try:
        view = ledger_view(store)
    finally:
        store.close()
    return next(m.meter for m in view.meters.values() if m.owner == month.newcomer.id)


def test_the_newcomers_june_counts_from_its_enrolment(month: Month, admin) -> None:
    meter = newcomer_meter(month)
    j = summary(admin, meter, "month", "2026-06-01")
    expected = metered(month, 4, 12, 30)  # June 12 to 30
    assert expected == (64_256, 306)
    m = j["statement"]["metered"]
    assert (m["import_wh"], m["export_wh"]) == expected
    s = j["statement"]["statement"]
    assert (s["import_wh"], s["export_wh"]) == expected
    flows = j["period"]["flows"]
    assert (flows["import_wh"], flows["export_wh"]) == expected
    h = j["history"]
    assert (sum(h["import_wh"]), sum(h["export_wh"])) == expected
    assert h["import_wh"][h["labels"].index("11")] == 0  # the day of its enrolment: nothing billed
    # the day of its enrolment, 23:30: the interval of that day began before it
    day_view = summary(admin, meter, "day", "2026-06-11")
    assert day_view["statement"]["metered"]["import_wh"] == 0
    assert day_view["period"]["flows"]["import_wh"] == 0
    assert sum(day_view["history"]["import_wh"]) == 0


def test_dashboard_report_and_statements_agree_for_every_household(month: Month, admin) -> None:
    store = Store.open(month.node, readonly=True)
    try:
        view = ledger_view(store)
        report = build_report(store, start=day(1), end=JULY)["households"].set_index("meter")
    finally:
        store.close()
    vat = VatSetting(charged=False, note="n")
    for info in view.meters.values():
        st = member_statement(view, info.owner, period="2026-06", start=day(1), end=JULY, vat=vat)
        j = summary(admin, info.meter, "month", "2026-06-01")
        s, row = j["statement"]["statement"], report.loc[info.meter]
        assert (s["import_wh"], s["export_wh"]) == (st["energy"]["import_wh"], st["energy"]["export_wh"])
        assert (s["import_wh"], s["export_wh"]) == (row["import_wh"], row["export_wh"])
        for figure in ("residual_import_wh", "baseline_cost", "actual_cost", "savings"):
            assert s[figure] == st["savings"][figure] == row[figure], (info.meter, figure)
        flows = j["period"]["flows"]
        assert (flows["import_wh"], flows["export_wh"]) == (s["import_wh"], s["export_wh"])


def test_the_leavers_days_end_at_its_revocation(month: Month, admin) -> None:
    leaver = month.c.meters[2].id
    j = summary(admin, leaver, "month", "2026-06-01")
    assert (j["statement"]["metered"]["import_wh"], j["statement"]["metered"]["export_wh"]) == metered(
        month, 2, 1, 19
    )
