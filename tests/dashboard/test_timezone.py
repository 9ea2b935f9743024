"""The community's time zone: an unknown zone is a clear error at start (one line naming the
zone and the fix), never a silent fall-back to UTC (issue 13, item 10)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chain.engine import Ledger
from chain.genesis import Genesis
from chain.store import StoreError
from dashboard.app import create_app
from dashboard.timeutil import UnknownTimezone, zone
from market.app import MarketApp
from tests.dashboard.ledger_fixture import APP_PARAMS, START
from tests.support.localnet import make_community


def store_with_zone(data_dir, name: str):
    """A market ledger (genesis only) whose genesis names the time zone ``name``.

    Genesis(doc) takes the document as is, as a store written by another machine (with a newer
    time zone database) would hold it."""
    c = make_community(community="oak-street", time=START, app="market", app_params=APP_PARAMS)
    doc = c.genesis.doc
    doc["community"]["timezone"] = name
    Ledger.create(data_dir, Genesis(doc), MarketApp())
    return data_dir


def test_known_zones():
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    assert zone("UTC").key == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe/", "x" * 300])
def test_unknown_zone_is_an_error_not_utc(name):
    with pytest.raises(UnknownTimezone) as info:
        zone(name)
    message = str(info.value)
    assert "\n" not in message and "time zone" in message and "tzdata" in message
    assert isinstance(info.value, StoreError)  # the CLI prints it as one line


def test_app_refuses_a_genesis_with_an_unknown_zone(tmp_path):
    data = store_with_zone(tmp_path / "node", "Mars/Olympus_Mons")
    with pytest.raises(UnknownTimezone, match="'Mars/Olympus_Mons'"):
        create_app(data, instance_dir=tmp_path / "instance")


def test_cli_says_so_in_one_line(tmp_path):
    data = store_with_zone(tmp_path / "node", "Mars/Olympus_Mons")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "dashboard",
            "--data",
            str(data),
            "--instance",
            str(tmp_path / "i"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Mars/Olympus_Mons" in lines[0], (
        result.stderr
    )
