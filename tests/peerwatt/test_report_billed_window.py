"""`peerwatt report` counts a meter's metered energy inside its billed window, as its statement does
(docs/billing.md: "Energy its meter measured outside these dates is never counted").

Found in a QA pass of the simulated June (tests/peerwatt/test_statements_month.py): the household
that joined had 64,256 / 306 Wh import/export on its statement and 67,590 / 340 Wh in the report.
Its meter was enrolled at 23:30 on June 11, and the readings of June 10 and 11 were accepted
later (inside the correction window), so the report also counted the daily interval of June 11,
which began before the enrolment.
"""

from __future__ import annotations

import pytest

from chain.store import Store
from market.billing import VatSetting, member_statement
from peerwatt.reports import build_report, metered_intervals
from peerwatt.statements import ledger_view
from tests.peerwatt.test_statements_month import JOIN, JULY, Month, build_month, day, metered

S = 900


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("report-window"))


@pytest.fixture
def store(month: Month):
    s = Store.open(month.node, readonly=True)
    yield s
    s.close()


def test_the_report_counts_a_newcomer_from_its_enrolment(month: Month, store: Store) -> None:
    view = ledger_view(store)
    newcomer = next(m for m in view.meters.values() if m.owner == month.newcomer.id)
    assert newcomer.enrolled_at == JOIN and {day(10), day(11)} <= set(view.readings[newcomer.meter])
    row = build_report(store, start=day(1), end=JULY)["households"].set_index("meter").loc[newcomer.meter]
    # June 12 to 30: the interval of June 11 began at 00:00, before the enrolment at 23:30
    assert (row["import_wh"], row["export_wh"]) == metered(month, 4, 12, 30) == (64_256, 306)
    assert row["flags"] == "" and row["intervals_left_out"] == 0


def test_the_report_and_the_statements_agree_for_every_household(month: Month, store: Store) -> None:
    view = ledger_view(store)
    households = build_report(store, start=day(1), end=JULY)["households"]
    by_owner = households.groupby("owner").sum(numeric_only=True)
    for member in sorted({m.owner for m in view.meters.values()}):
        st = member_statement(
            view, member, period="2026-06", start=day(1), end=JULY, vat=VatSetting(charged=False, note="n")
        )
        row = by_owner.loc[member]
        s = st["savings"]
        assert (row["import_wh"], row["export_wh"]) == (st["energy"]["import_wh"], st["energy"]["export_wh"])
        for figure in ("residual_import_wh", "baseline_cost", "actual_cost", "savings"):
            assert row[figure] == s[figure], (member, figure)
    kpis = build_report(store, start=day(1), end=JULY)["kpis"].iloc[0]
    assert kpis["metered_import_wh"] == households["import_wh"].sum()


def test_the_report_of_the_day_before_the_enrolment_has_nothing_of_the_newcomer(
    month: Month, store: Store
) -> None:
    households = build_report(store, start=day(11), end=day(12))["households"].set_index("meter")
    newcomer = next(m for m in ledger_view(store).meters.values() if m.owner == month.newcomer.id)
    row = households.loc[newcomer.meter]
    assert (row["import_wh"], row["export_wh"], row["flags"]) == (0, 0, "")
    assert households["import_wh"].sum() == sum(metered(month, i, 11, 11)[0] for i in range(4))


def test_metered_intervals_only_inside_the_window() -> None:
    readings = [(i * S, 100 * i, 0, "S") for i in range(10)]
    # enrolled 5 minutes into interval 3, revoked 5 minutes into interval 7: intervals 4, 5, 6
    metered_wh, flags = metered_intervals(readings, None, None, S, window=(3 * S + 300, 7 * S + 300))
    assert metered_wh == {4 * S: (100, 0), 5 * S: (100, 0), 6 * S: (100, 0)}
    assert flags == []
    # a reading missing inside the window is flagged there, one missing outside it is not
    gappy = [r for r in readings if r[0] not in (1 * S, 5 * S)]
    metered_wh, flags = metered_intervals(gappy, None, None, S, window=(3 * S, 10 * S), until=11 * S)
    assert metered_wh == {3 * S: (100, 0), 4 * S: (100, 0), 7 * S: (100, 0), 8 * S: (100, 0), 9 * S: (100, 0)}
    assert flags == [f"missing_reading@{5 * S}..{6 * S}"]
