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
