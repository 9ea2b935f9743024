"""`peerwatt simulate`: deterministic for a seed, a ledger that verifies, a report and real plots."""

from __future__ import annotations

import subprocess
import sys


def run(out) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "simulate",
            "--homes",
            "6",
            "--days",
            "0.3",
            "--start",
            "2026-06-21",
            "--seed",
            "7",
            "--validators",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_simulate_is_deterministic_and_verifiable(tmp_path):
    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    for name in ("households.csv", "trades.csv", "settlements.csv", "kpis.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "trades.csv").read_text().count("\n") > 1  # the sunny day traded
    for plot in ("daily_p2p_volume.png", "price.png", "savings.png"):
        data = (tmp_path / "a" / plot).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, plot
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "verify",
            "--data",
            str(tmp_path / "a" / "ledger" / "sequencer"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.startswith("ok:"), check.stdout
    assert "ok:" in first.stdout and "share of demand met locally" in first.stdout
