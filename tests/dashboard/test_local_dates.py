"""Issue 17 item 5: every date a household types or reads is a local date and time in the
community's zone. The month and year views are not headed "Energy today"; the trades filter takes
a local date-time (the delivery interval containing it), not Unix seconds."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from dashboard.params import ParamError, parse_local_datetime
from tests.dashboard.ledger_fixture import INTERVAL_S, TZ

BERLIN = ZoneInfo(TZ)


def _heading(html: str) -> str:
    inner = re.search(r'<h2 id="flow-h">(.*?)</h2>', html, re.S).group(1)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", inner))


@pytest.mark.parametrize(
    "query,heading",
    [
        ("view=month&date=2025-06-03", "Energy in June 2025"),
        ("view=year&date=2025-06-03", "Energy in 2025"),
        ("view=day&date=2025-06-03", "Energy on 2025-06-03"),
        ("", "Energy today (2025-06-05)"),
    ],
)
def test_energy_heading_names_the_period(as_villa, built, query, heading):
    html = as_villa.get(f"/household/{built.meters[0]}?{query}").get_data(as_text=True)
    assert _heading(html).strip().startswith(heading)
    if query:
        assert "Energy today" not in html


def test_energy_tiles_follow_the_period(as_villa, built):
    meter = built.meters[0]
    api = as_villa.get(f"/api/v1/households/{meter}?view=month&date=2025-06-03").get_json()
    flows, st = api["period"]["flows"], api["statement"]
    assert flows["to_neighbours_wh"] == st["sold"]["settled_wh"]
    assert flows["import_wh"] == st["metered"]["import_wh"]


def test_parse_local_datetime():
    ts = parse_local_datetime("at", "2025-06-03T14:20", BERLIN)
    assert ts == int(datetime(2025, 6, 3, 14, 20, tzinfo=BERLIN).timestamp())
    assert parse_local_datetime("at", "2025-06-03 14:20", BERLIN) == ts
    assert parse_local_datetime("at", "2025-06-03T14:20:00", BERLIN) == ts
    # the hour that does not exist on the spring change, and hostile text
    for bad in (
        "2025-03-30T02:30",
        "1746-01-01T00:00",
        "9999-12-31T23:59",
        "2025-06-03",
        "\u0661\u0662",
        "2025-06-03T25:00",
        "2025-06-03T14:20Z",
        "a" * 5000,
        "2025-06-03T14:20\r\n",
    ):
        with pytest.raises(ParamError):
            parse_local_datetime("at", bad, BERLIN)
    # the repeated hour on the autumn change: the first (summer time) one
    first = parse_local_datetime("at", "2025-10-26T02:30", BERLIN)
    assert datetime.fromtimestamp(first, BERLIN).utcoffset().total_seconds() == 7200


def test_trades_filter_takes_a_local_date_time(as_villa, built):
    meter = built.meters[0]
    at = "2025-06-03T14:20"
    start = int(datetime(2025, 6, 3, 14, 15, tzinfo=BERLIN).timestamp())
    data = as_villa.get(f"/api/v1/trades?household={meter}&at={at}").get_json()
    assert data["trades"] and {t["interval"] for t in data["trades"]} == {start}
    page = as_villa.get(f"/trades?household={meter}&at={at}").get_data(as_text=True)
    assert "Unix" not in page
    assert 'type="datetime-local"' in page and f'value="{at}"' in page
    assert "2025-06-03 14:15\u201314:30" in page
    csv_text = as_villa.get(f"/api/v1/trades.csv?household={meter}&at={at}").get_data(as_text=True)
    assert len(csv_text.strip().splitlines()) == 1 + len(data["trades"])
    assert "2025-06-03T14:15:00+02:00" in csv_text
    bad = as_villa.get(f"/api/v1/trades?household={meter}&at=2025-03-30T02:30")
    assert bad.status_code == 400 and "does not exist" in bad.get_json()["error"]
    assert INTERVAL_S == 900


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
def test_every_time_in_the_ledgers_range_can_be_shown(zone_name):
    """Found in a QA pass: a time near the end of year 9999 (UTC) is in the year 10000 east of
    UTC, and datetime cannot hold it: fmt_time and fmt_interval raised OverflowError or
    ValueError (a 500 on the household and trades pages). Every integer 0..2**53 - 1 is shown, in
    the proleptic Gregorian calendar (which repeats every 400 years, weekdays and all)."""
    from dashboard.timeutil import fmt_interval, fmt_time

    tz = ZoneInfo(zone_name)
    for ts in (0, 1, 253402300799, 253402300800, 253402318800, 10**12, 2**53 - 1, 2**53 - 1 - 900):
        for pattern in ("%Y-%m-%d %H:%M", "%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"):
            assert fmt_time(ts, tz, pattern)
        assert fmt_interval(ts, INTERVAL_S, tz)
    berlin = ZoneInfo("Europe/Berlin")
    assert fmt_time(253402300799, berlin) == "10000-01-01 00:59"
    assert fmt_time(253402300799, ZoneInfo("UTC"), "%Y-%m-%d %H:%M:%S") == "9999-12-31 23:59:59"
    assert fmt_interval(253402300800 - 900, 900, berlin) == "10000-01-01 00:45\u201301:00"
    # 400 Gregorian years later it is the same local time of the same day (summer time included)
    summer = int(datetime(2025, 6, 2, 14, 15, tzinfo=berlin).timestamp())
    era = 146097 * 86400
    assert fmt_time(summer + 20 * era, berlin) == "10025-06-02 14:15"
    assert fmt_time(2**53 - 1, ZoneInfo("UTC"), "%Y-%m-%d %H:%M:%S") == "285428751-11-12 07:36:31"
    assert fmt_time(None, berlin) == "\u2013"
