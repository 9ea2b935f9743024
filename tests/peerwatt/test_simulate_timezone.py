"""`peerwatt simulate --timezone`: the study's community lives in a time zone of its choice (found
in a QA pass: every study's genesis said "UTC", with no option, so no study could show what a
real community sees at a change to or from daylight saving time)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from chain.canonical import loads_strict
from chain.store import Store
from tests.support.cli import peerwatt

TINY = ["--homes", "2", "--days", "0.05", "--validators", "0", "--workers", "1", "--seed", "5"]


def genesis_and_first_block(node) -> tuple[dict, int]:
    store = Store.open(node, readonly=True)
    try:
        return loads_strict(store.genesis_doc()), store.block_row(1)[2]
    finally:
        store.close()


def test_the_study_community_is_in_the_time_zone_given(tmp_path):
    zone = "Europe/Amsterdam"
    res = peerwatt(
        "simulate", *TINY, "--start", "2026-10-25", "--timezone", zone, "--out", str(tmp_path / "s")
    )
    assert res.returncode == 0, res.stderr
    genesis, first_block = genesis_and_first_block(tmp_path / "s" / "ledger" / "sequencer")
    assert genesis["community"]["timezone"] == zone
    # the study starts at midnight of --start in that zone (22:00 UTC the day before, summer time)
    start = int(datetime(2026, 10, 25, tzinfo=ZoneInfo(zone)).timestamp())
    assert genesis["community"]["time"] == start - 900
    assert start <= first_block <= start + 900  # its first block comes at the first interval's end
    assert "2026-10-25" in res.stdout and zone in res.stdout  # the summary's title names it


def test_without_the_option_the_community_is_in_utc(tmp_path):
    res = peerwatt("simulate", *TINY, "--start", "2026-10-25", "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    genesis, _ = genesis_and_first_block(tmp_path / "s" / "ledger" / "sequencer")
    assert genesis["community"]["timezone"] == "UTC"
    assert (
        genesis["community"]["time"] == int(datetime(2026, 10, 25, tzinfo=ZoneInfo("UTC")).timestamp()) - 900
    )


def test_an_unknown_time_zone_is_one_line_and_writes_nothing(tmp_path):
    for bad in ("Europe/Atlantis", "CET+1", "", "../../etc/passwd", "localtime"):
        res = peerwatt("simulate", *TINY, "--timezone", bad, "--out", str(tmp_path / "s"))
        assert res.returncode == 2, (bad, res.stdout, res.stderr)
        assert res.stderr.startswith("error: --timezone ") and res.stderr.count("\n") == 1, (bad, res.stderr)
        assert "Traceback" not in res.stderr
        assert not (tmp_path / "s").exists(), bad
