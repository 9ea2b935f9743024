"""`peerwatt demo` end to end: a real run of the live community, headless and accelerated."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from chain.store import LEDGER_TABLES

pytestmark = pytest.mark.integration


def ledger_rows(path) -> list:
    conn = sqlite3.connect(f"file:{path / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        # seals are checked by verify; each node may hold a different (quorum-sized or larger) set
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in LEDGER_TABLES if t != "seals"
        ]
    finally:
        conn.close()


def test_demo_runs_trades_and_every_store_verifies(tmp_path):
    data = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "demo",
            "--homes",
            "6",
            "--hours",
            "6",
            "--headless",
            "--speed",
            "1800",
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    trades = int(re.search(r"(\d+) trades", result.stdout.split("summary:")[1]).group(1))
    assert trades > 0, result.stdout
    verified = [line for line in result.stdout.splitlines() if line.startswith("verify ")]
    assert len(verified) == 4 and all(": ok:" in line for line in verified), result.stdout
    nodes = sorted(p for p in data.iterdir() if (p / "ledger.sqlite").exists())
    rows = [ledger_rows(p) for p in nodes]
    assert all(r == rows[0] for r in rows)
    check = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "verify", "--data", str(data / "validator-2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout
    # no process left behind: the demo runs in one process, which has exited; no child survived it
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(data) not in ps


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "something.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "demo", "--headless", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "not empty" in result.stderr and result.stderr.count("\n") == 1


def test_demo_says_when_the_broker_cannot_be_reached(tmp_path):
    from tests.support.mosquitto import free_port

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerwatt.cli",
            "demo",
            "--headless",
            "--homes",
            "2",
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
            "--data",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "cannot reach the MQTT broker" in result.stderr
    assert "Traceback" not in result.stderr
