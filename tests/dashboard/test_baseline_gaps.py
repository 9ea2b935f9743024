"""A meter's first reading is its baseline: the household page does not count it as an interval
without a usable reading (docs/billing.md: readings are expected "from the interval after the
meter's first reading (its baseline) on"; the statement's ``intervals_left_out`` and the report's
``flags`` do not count it either).

Found in a QA pass: on every household's first day, month and year the page said "1 interval(s)
of this period have no usable reading" (the API's ``statement.metered.gaps`` 1, and the history's
``missing_intervals`` 1 at the baseline's interval), while its statement left out 0 intervals and
its report row had no flags.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from chain.store import Store
from dashboard.timeutil import day_range, zone
from peerwatt.reports import build_report
from tests.dashboard.conftest import login, synced_app
from tests.dashboard.ledger_fixture import INTERVAL_S, START, TZ
from tests.peerwatt.test_statements_month import Month, build_month, day

NO_READING = "have no usable reading"
BASELINE_DAY = "2025-06-01"  # the baseline readings are of the interval at 23:45, the day before START


def test_the_baseline_is_no_gap_on_the_first_day_month_and_year(built, as_admin) -> None:
    assert datetime.fromtimestamp(START - INTERVAL_S, zone(TZ)).date().isoformat() == BASELINE_DAY
    for meter in built.meters:
        for view, when in (("day", BASELINE_DAY), ("month", "2025-06-01"), ("year", "2025-06-01")):
            j = as_admin.get(f"/api/v1/households/{meter}?view={view}&date={when}").get_json()
            assert j["statement"]["metered"]["gaps"] == 0, (meter, view)
            assert sum(j["history"]["missing_intervals"]) == 0, (meter, view)
            page = as_admin.get(f"/household/{meter}?view={view}&date={when}").get_data(as_text=True)
            assert NO_READING not in page, (meter, view)
    # the report of that day: no flags either
    start, end = day_range(date.fromisoformat(BASELINE_DAY), zone(TZ))
    store = Store.open(built.data_dir, readonly=True)
    try:
        households = build_report(store, start=start, end=end)["households"]
    finally:
        store.close()
    assert set(households["flags"]) == {""} and set(households["intervals_left_out"]) == {0}


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> Month:
    """The simulated June with meter 3's reading of June 15 lost on the way."""
    return build_month(tmp_path_factory.mktemp("lost-reading"), lost=((3, day(15)),))


def test_a_missing_reading_is_still_a_gap(lost: Month, tmp_path) -> None:
    app = synced_app(lost.node, tmp_path / "instance")
    app.extensions["peerwatt"].accounts.add_user("admin", "gaps-pass-1234", role="admin")
    client = app.test_client()
    assert login(client, "admin", "gaps-pass-1234").status_code == 302
    meter = lost.c.meters[3].id
    j = client.get(f"/api/v1/households/{meter}?view=month&date=2026-06-01").get_json()
    assert j["statement"]["metered"]["gaps"] >= 1
    labels = j["history"]["labels"]
    # June 16: its reading has no predecessor
    assert j["history"]["missing_intervals"][labels.index("16")] == 1
    # May, its first month (the baseline of May 30): none
    may = client.get(f"/api/v1/households/{meter}?view=month&date=2026-05-01").get_json()
    assert may["statement"]["metered"]["gaps"] == 0 and sum(may["history"]["missing_intervals"]) == 0
    assert NO_READING in client.get(f"/household/{meter}?view=month&date=2026-06-01").get_data(as_text=True)
