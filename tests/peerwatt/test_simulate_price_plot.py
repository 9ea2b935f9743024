"""The study's price plot shows wall-clock times of the community's time zone and leaves a gap
where no interval traded (found in a QA pass: price.png's axis was UTC, unlabelled, for a
Europe/Vienna study, and its line joined the last trade of one day to the first of the next: a
flat "price" through the night)."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd

from peerwatt.simulation import price_series

VIENNA = ZoneInfo("Europe/Vienna")


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=VIENNA).timestamp())


def test_local_times_and_gaps() -> None:
    rows = [  # two evening intervals, then the next morning; one interval with two trades
        (at("2026-06-21 19:00"), 150_000),
        (at("2026-06-21 19:15"), 170_000),
        (at("2026-06-21 19:15"), 190_000),
        (at("2026-06-22 08:30"), 160_000),
    ]
    trades = pd.DataFrame(rows, columns=["interval", "price"])
    prices = price_series(trades, "Europe/Vienna", 900)
    assert [str(t) for t in prices.index] == [
        "2026-06-21 19:00:00", "2026-06-21 19:15:00", "2026-06-21 19:30:00", "2026-06-22 08:30:00",
    ]  # fmt: skip
    assert prices.iloc[0] == 15.0 and prices.iloc[1] == 18.0 and prices.iloc[3] == 16.0
    assert math.isnan(prices.iloc[2])  # the line stops after 19:15 and starts again at 08:30


def test_no_gap_between_consecutive_intervals() -> None:
    trades = pd.DataFrame([(at("2026-06-21 12:00"), 100_000), (at("2026-06-21 12:15"), 120_000)],
                          columns=["interval", "price"])  # fmt: skip
    assert list(price_series(trades, "UTC", 900).values) == [10.0, 12.0]
