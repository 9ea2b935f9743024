"""`peerwatt statements --period` at the calendar's ends (found in a QA pass: `--period 9999-12`,
with or without `--corrections`, ended in a traceback, `ValueError: year 10000 is out of range`,
since the month's end, the 1st of the next month, is in year 10000)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerwatt.statements import BillingError, period_bounds
from tests.support.cli import peerwatt
from tests.support.market_ledger import closed_market_data


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return closed_market_data(tmp_path_factory.mktemp("market"))


@pytest.mark.parametrize("extra", [(), ("--corrections",)])
def test_the_last_month_of_the_calendar_is_one_line(
    node: Path, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    out, billing = tmp_path / "out", tmp_path / "billing"
    res = peerwatt(
        "statements", "--data", str(node), "--period", "9999-12", "--out", str(out),
        "--billing", str(billing), *extra,
    )  # fmt: skip
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr == (
        "error: period '9999-12': it ends on 10000-01-01, after the calendar's last day (9999-12-31); "
        "use a month like 2026-06\n"
    )
    assert not out.exists() and not billing.exists()


def test_period_bounds_of_the_calendars_ends() -> None:
    with pytest.raises(BillingError, match=r"^period '9999-12': it ends on 10000-01-01"):
        period_bounds("9999-12", "Europe/Amsterdam")
    start, end = period_bounds("9999-11", "UTC")
    assert end - start == 30 * 86_400
    start, end = period_bounds("0001-01", "Europe/Amsterdam")
    assert end - start == 31 * 86_400
