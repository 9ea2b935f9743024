"""The day view's history names each interval by its local time; on the day the clocks go back
the hour from 02:00 comes twice, and each of its times carries its UTC offset ("02:00 (+02:00)",
then "02:00 (+01:00)"). Every other label stays as it was ("01:45", "03:00").

Found in a QA pass of a 25-hour day (2026-10-25, Europe/Vienna): the chart and its table named
02:00 ... 02:45 twice, with nothing to tell the two apart.
"""

from __future__ import annotations

from datetime import date

from dashboard.timeutil import buckets, period, zone

VIENNA = zone("Europe/Vienna")


def labels(day: date, interval_s: int = 900, tz=VIENNA) -> list[str]:
    return [b[2] for b in buckets(period("day", day, tz), interval_s, tz)]


def test_the_repeated_hour_carries_its_offset() -> None:
    got = labels(date(2026, 10, 25))
    assert len(got) == 100 and len(set(got)) == 100
    repeated = [f"02:{m:02d}" for m in (0, 15, 30, 45)]
    assert got[8:16] == [f"{t} (+02:00)" for t in repeated] + [f"{t} (+01:00)" for t in repeated]
    assert got[:8] == [f"{h:02d}:{m:02d}" for h in (0, 1) for m in (0, 15, 30, 45)]
    assert got[16:18] == ["03:00", "03:15"] and got[-1] == "23:45"
    assert sum("(" in label for label in got) == 8


def test_other_days_keep_their_labels() -> None:
    normal = labels(date(2026, 10, 24))
    assert normal == [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
    spring = labels(date(2026, 3, 29))  # 02:00 ... 02:45 do not exist: 92 intervals, none repeated
    assert len(spring) == 92 and not any("(" in label for label in spring)
    assert spring[7:9] == ["01:45", "03:00"]


def test_one_minute_intervals_and_the_api(as_villa, built) -> None:
    minutes = labels(date(2026, 10, 25), 60)
    assert len(minutes) == 1500 and len(set(minutes)) == 1500
    assert minutes[120] == "02:00 (+02:00)" and minutes[180] == "02:00 (+01:00)" and minutes[240] == "03:00"
    data = as_villa.get(f"/api/v1/households/{built.meters[0]}/history?view=day&date=2025-10-26").get_json()
    got = data["history"]["labels"]
    assert len(got) == 100 and len(set(got)) == 100  # Europe/Berlin
    assert "02:30 (+02:00)" in got and "02:30 (+01:00)" in got and "01:45" in got and "03:00" in got
