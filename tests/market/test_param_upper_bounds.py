"""On a ledger with rules 2 the parameters that the state keeps (or fills) have an upper bound.

Found in a QA pass: `set_param` of horizon_s, correction_window_intervals, settle_after_intervals
and retention_s to 2**53 - 1 was taken (only prices were capped): a correction window that never
ends keeps every reading in the state every block carries; a horizon of centuries lets a meter
hold orders for any number of intervals. Ledgers on rules 1 re-execute as they were made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from market.app import MarketApp
from market.params import check_params
from tests.support.localnet import make_community

T0 = 1_764_000_000
HUGE = 2**53 - 1
BASE = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("horizon_s", 8 * 86_400, "horizon_s must be at most 604800 (7 days)"),
        ("correction_window_intervals", 63 * 96, "correction_window_intervals must span at most 62 days"),
        ("settle_after_intervals", HUGE, "settle_after_intervals must span at most 62 days"),
        ("gridops_window_s", 63 * 86_400, "gridops_window_s must span at most 62 days"),
        ("retention_s", HUGE, "retention_s must be at most 316224000 (ten years)"),
        ("max_reading_corrections", 101, "max_reading_corrections must be at most 100"),
        ("max_orders_per_interval", HUGE, "max_orders_per_interval must be at most 1000"),
    ],
)
def test_the_bounds(name: str, value: int, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        check_params({**BASE, name: value}, bounded=True, rules=2)
    check_params({**BASE, name: value}, bounded=True, rules=1)  # as every older ledger ran


def test_the_defaults_and_the_largest_values_pass() -> None:
    check_params(BASE, bounded=True, rules=2)
    largest = {"horizon_s": 7 * 86_400, "correction_window_intervals": 62 * 96}
    largest |= {"retention_s": 10 * 366 * 86_400, "max_reading_corrections": 100}
    largest["max_orders_per_interval"] = 1_000
    check_params({**BASE, **largest}, bounded=True, rules=2)


def test_a_vote_for_a_horizon_of_centuries_is_refused(tmp_path: Path) -> None:
    c = make_community(validators=1, members=2, app="market", app_params=BASE,
                       chain_options={"max_open_proposals": 32, "rules": 2}, time=T0)  # fmt: skip
    c.open_ledgers(tmp_path, MarketApp)
    body = {"action": "set_param", "args": {"name": "horizon_s", "value": HUGE}, "deadline": T0 + 3600}
    block = c.run_block([c.members[0].sign(c.community, "propose", body, created=T0 + 5)], T0 + 5)
    assert [r.get("reason") for r in block.results if r["kind"] == "tx"] == ["bad_value"]
