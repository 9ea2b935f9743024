"""The pages name the community's delivery interval as it is (found in a QA pass): with
interval_s 60 (the quickstart suggests `--interval 60`) the household page said "Today this
rests on 0 quarter-hour(s) without export and 4 with export" and the overview "... exports in
the same quarter-hour"; "quarter-hour" was written into the templates."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from chain.engine import Ledger
from chain.genesis import Genesis
from dashboard.units import duration_adjective, interval_name, intervals_counted
from market.app import MarketApp
from tests.dashboard.conftest import login, make_app
from tests.dashboard.ledger_fixture import APP_PARAMS, START, TZ, _run_block
from tests.support.localnet import make_community

MINUTE = 60


@dataclass
class MinuteLedger:
    data_dir: Path
    meters: list[str]


def build_minutes(base_dir: Path) -> MinuteLedger:
    """Three households in 1-minute intervals; the first exports in each of the 4 intervals read,
    the others import."""
    c = make_community(
        community="minute-lane",
        time=START - 3600,
        validators=3,
        members=3,  # (make_app logs flat in as the third)
        app="market",
        app_params=dict(APP_PARAMS, interval_s=MINUTE, gate_s=20),
    )
    doc = c.genesis.doc
    doc["community"]["timezone"] = TZ
    c.genesis = Genesis(doc)
    serials = {kid: m["serial"] for kid, m in doc["meters"].items()}
    ledger = Ledger.create(base_dir / "validator-0", c.genesis, MarketApp())
    counters = {m.id: [1000, 1000] for m in c.meters}
    for k in range(5):
        t = START + 12 * 3600 + k * MINUTE + 40  # noon, after each interval's end
        ended = START + 12 * 3600 + (k - 1) * MINUTE
        txs = []
        for i, m in enumerate(c.meters):
            if k >= 1:
                counters[m.id][1 if i == 0 else 0] += 50
            body = {
                "interval": ended,
                "import_wh": counters[m.id][0],
                "export_wh": counters[m.id][1],
                "serial": serials[m.id],
                "profile": "sim",
            }
            txs.append(m.sign(c.community, "reading", body, created=t))
        _run_block(ledger, c, txs, t)
    ledger.close()
    return MinuteLedger(base_dir / "validator-0", [m.id for m in c.meters])


@pytest.fixture(scope="module")
def minutes(tmp_path_factory):
    built = build_minutes(tmp_path_factory.mktemp("minute-ledger"))
    return built, make_app(built, tmp_path_factory.mktemp("minute-instance"))


def text(page: str) -> str:
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", "", page)))


def test_interval_words():
    assert [interval_name(s) for s in (900, 1800, 3600, 60, 300, 90, 7200)] == [
        "quarter-hour",
        "half-hour",
        "hour",
        "1-minute interval",
        "5-minute interval",
        "90-second interval",
        "2-hour interval",
    ]
    assert [intervals_counted(s) for s in (900, 60, 300, 90, 1)] == [
        "quarter-hour(s)",
        "interval(s) of 1 minute",
        "interval(s) of 5 minutes",
        "interval(s) of 90 seconds",
        "interval(s) of 1 second",
    ]
    assert [duration_adjective(s) for s in (900, 60, 90, 3600)] == [
        "15-minute",
        "1-minute",
        "90-second",
        "1-hour",
    ]


def test_a_one_minute_community_reads_minutes_not_quarter_hours(minutes):
    built, app = minutes
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    household = text(c.get(f"/household/{built.meters[0]}").get_data(as_text=True))
    assert "quarter-hour" not in household
    assert "Today this rests on 0 interval(s) of 1 minute without export and 4 with export" in household
    assert "without any 1-minute interval without export there is nothing to estimate" in household
    overview = text(c.get("/").get_data(as_text=True))
    assert "quarter-hour" not in overview
    assert "exports in the same 1-minute interval." in overview
    assert "uniform, 1-minute intervals" in overview


def test_a_quarter_hour_community_still_reads_quarter_hours(as_villa, built):
    household = text(as_villa.get(f"/household/{built.meters[0]}").get_data(as_text=True))
    assert re.search(r"Today this rests on \d+ quarter-hour\(s\) without export", household)
    overview = text(as_villa.get("/").get_data(as_text=True))
    assert "exports in the same quarter-hour." in overview and "uniform, 15-minute intervals" in overview
