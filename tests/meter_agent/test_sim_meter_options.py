"""`peerwatt sim-meter` refuses options its --source does not read, in one line (found in a QA
pass: --source shelly-http --pty served TCP, --source p1 --profile sdm630 served P1, without a
word)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["--source", "shelly-http", "--pty"],
            "--pty is for --source p1 or sml; --source shelly-http serves TCP",
        ),
        (["--profile", "sdm630", "--pty"], "--pty is for --source p1 or sml; --source modbus serves TCP"),
        (["--source", "p1", "--profile", "sdm630"], "--profile only with --source modbus"),
        (["--source", "sml", "--unit", "3", "--sunspec-model", "213"], "--unit, --sunspec-model only with"),
        (["--source", "shelly-http", "--sunspec-inverter"], "--sunspec-inverter only with --source modbus"),
    ],
)
def test_an_option_the_source_does_not_read_is_refused(args, said):
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "sim-meter", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,  # the old command served on until killed
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and said in r.stderr, r.stderr
