"""`peerwatt report` for a period the ledger's blocks do not reach (found in a QA pass: a period
after the last block, or a ledger with only its genesis, gave "0 trades, 0.0 kWh ... total
savings 0.00" with exit code 0, as if the community had traded nothing, where `statements`
refuses such a period). The trade round of tests/support/market_ledger.py: genesis at
2025-11-24 16:00 UTC, last block 17:15 UTC."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.app import MarketApp
from tests.support.cli import peerwatt
from tests.support.localnet import make_community
from tests.support.market_ledger import PARAMS, T0, closed_market_data


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return closed_market_data(tmp_path_factory.mktemp("market"))


def report(node: Path, out: Path, *dates: str):
    return peerwatt("report", "--data", str(node), *dates, "--out", str(out))


def one_line_error(res, *needles: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("dates", "needles"),
    [
        (
            ("--from", "2030-01-01", "--to", "2030-01-31"),
            ("after the ledger's last block", "2025-11-24 17:15 UTC"),
        ),
        (("--from", "2030-01-01"), ("after the ledger's last block",)),
        (("--from", "9999-12-31", "--to", "9999-12-31"), ("after the ledger's last block",)),
        (
            ("--from", "2020-01-01", "--to", "2020-01-31"),
            ("before the ledger begins", "2025-11-24 16:00 UTC"),
        ),
        (("--to", "2025-11-23"), ("before the ledger begins",)),
        (("--from", "0001-01-01", "--to", "0001-01-01"), ("before the ledger begins",)),
    ],
)
def test_a_period_outside_the_ledger_is_refused_in_one_line(
    node: Path, tmp_path: Path, dates, needles
) -> None:
    out = tmp_path / "r.csv"
    res = report(node, out, *dates)
    one_line_error(res, *needles)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_ledger_with_only_its_genesis_has_nothing_to_report(tmp_path: Path) -> None:
    c = make_community(validators=1, members=2, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "nodes", MarketApp)
    for ledger in c.ledgers:
        ledger.close()
    out = tmp_path / "r.csv"
    for dates in ((), ("--from", "2025-11-24", "--to", "2025-11-24")):
        res = report(tmp_path / "nodes" / "validator-0", out, *dates)
        one_line_error(res, "no block after its genesis")
        assert not out.exists()


def test_a_period_partly_beyond_the_ledger_says_where_the_ledger_ends(node: Path, tmp_path: Path) -> None:
    whole = report(node, tmp_path / "all.csv")
    assert whole.returncode == 0 and whole.stderr == "", whole.stderr
    part = report(node, tmp_path / "nov.csv", "--from", "2025-11-01", "--to", "2025-11-30")
    assert part.returncode == 0, part.stderr
    lines = part.stderr.splitlines()
    assert lines == [
        "note: the ledger begins at 2025-11-24 16:00 UTC (its genesis), after the period's start, and its "
        "last block is at 2025-11-24 17:15 UTC, before the period's end: the report covers only that span"
    ], part.stderr
    assert (tmp_path / "nov.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()
    inside = report(node, tmp_path / "day.csv", "--from", "2025-11-24", "--to", "2025-11-24")
    assert inside.returncode == 0 and "last block is at 2025-11-24 17:15 UTC" in inside.stderr
