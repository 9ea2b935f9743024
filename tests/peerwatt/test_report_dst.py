"""`peerwatt report --from/--to` on the days the clocks change, on a study simulated in a
community in Europe/Amsterdam (`peerwatt simulate --timezone`).

Found in a QA pass: `--to DAY` ended the period 24 hours after the day's local midnight instead of
at the next local midnight, so a last day of 25 hours (the clocks go back) lost its last hour and
one of 23 hours (they go forward) took the first hour of the next day; a month report whose last
day changed the clock dropped energy that then fell in neither month."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from chain.store import Store
from peerwatt.statements import accepted_readings
from tests.support.cli import peerwatt

ZONE = ZoneInfo("Europe/Amsterdam")


def midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp())


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small studies: around 25 October 2026 (a 25-hour day) and 28 March 2027 (23 hours)."""
    base = tmp_path_factory.mktemp("dst")
    nodes = {}
    for name, start in (("autumn", "2026-10-24"), ("spring", "2027-03-27")):
        res = peerwatt(
            "simulate", "--homes", "3", "--validators", "0", "--workers", "1", "--seed", "3",
            "--timezone", "Europe/Amsterdam", "--start", start, "--days", "2.2", "--out", str(base / name),
            timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        nodes[name] = base / name / "ledger" / "sequencer"
    return nodes


def metered_import(node: Path, start: int, end: int) -> tuple[int, int]:
    """The community's metered import (Wh) in the intervals [start, end) and how many intervals
    it was metered in, summed straight from the accepted readings (each interval: its reading
    minus the one before it)."""
    store = Store.open(node, readonly=True)
    try:
        readings, _ = accepted_readings(store)
    finally:
        store.close()
    total, intervals = 0, set()
    for own in readings.values():
        for interval, (imp, _exp, _serial) in own.items():
            before = own.get(interval - 900)
            if start <= interval < end and before is not None:
                total += imp - before[0]
                intervals.add(interval)
    return total, len(intervals)


def report_import(node: Path, out: Path, first: str, last: str) -> int:
    res = peerwatt("report", "--data", str(node), "--from", first, "--to", last, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return int(pd.read_csv(out)["import_wh"].sum())


@pytest.mark.parametrize(
    ("study", "day", "hours"), [("autumn", date(2026, 10, 25), 25), ("spring", date(2027, 3, 28), 23)]
)
def test_a_day_with_a_clock_change_is_reported_from_midnight_to_midnight(
    studies: dict[str, Path], tmp_path: Path, study: str, day: date, hours: int
) -> None:
    node = studies[study]
    start, end = midnight(day), midnight(day + timedelta(days=1))
    assert end - start == hours * 3600
    expected, intervals = metered_import(node, start, end)
    assert intervals == hours * 4  # every interval of the local day is on the ledger
    got = report_import(node, tmp_path / "day.csv", day.isoformat(), day.isoformat())
    assert got == expected, f"{day}: the report says {got} Wh, the local day's intervals hold {expected} Wh"
    # and the days add up: nothing falls between two reports, nothing is in both
    before = (day - timedelta(days=1)).isoformat()
    both = report_import(node, tmp_path / "both.csv", before, day.isoformat())
    assert both == report_import(node, tmp_path / "before.csv", before, before) + got


def test_the_day_bounds_are_local_midnights() -> None:
    from peerwatt.commands.report import day_bounds

    assert day_bounds("2026-10-25", "2026-10-25", ZONE) == (
        midnight(date(2026, 10, 25)),
        midnight(date(2026, 10, 26)),
    )
    assert day_bounds("2027-03-28", "2027-03-28", ZONE)[1] - midnight(date(2027, 3, 28)) == 23 * 3600
    assert day_bounds(None, "2026-10-31", ZONE) == (None, midnight(date(2026, 11, 1)))
    # the calendar's last day has no next midnight: the period is open-ended, no crash
    assert day_bounds("9999-12-31", "9999-12-31", ZONE) == (midnight(date(9999, 12, 31)), None)
    assert day_bounds("0001-01-01", "0001-01-01", ZONE) == (midnight(date(1, 1, 1)), midnight(date(1, 1, 2)))
