"""The real `peerwatt meter read|probe` and `peerwatt sim-meter` commands, in subprocesses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.profile import find_profile
from tests.support.sim_meter import sim_meter_process


def peerwatt(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_meter_read_with_the_wrong_profile_says_so(start_sim):
    """Found in a QA pass: the EM24's map on an SDM630 printed "L1 -189462850.8 V" and exit 0."""
    sim = start_sim("sdm630")
    out = peerwatt("meter", "read", "--profile", "em24", "--host", "127.0.0.1", "--port", str(sim.port))
    assert out.returncode == 1, out.stderr
    assert out.stdout  # what was read is still shown
    assert out.stderr.startswith("error: implausible reading: voltage ")
    assert "peerwatt meter probe" in out.stderr
    assert out.stderr.count("\n") == 1


def test_meter_read_prints_the_reading(start_sim):
    sim = start_sim("sdm630")
    truth = sim.truth()
    out = peerwatt("meter", "read", "--profile", "sdm630", "--host", "127.0.0.1", "--port", str(sim.port))
    assert out.returncode == 0, out.stderr
    assert f"serial {truth.serial}" in out.stdout
    assert re.search(rf"power\s+{round(truth.power_w)} W \(export\)", out.stdout)
    assert re.search(rf"import\s+{round(truth.import_wh)} Wh", out.stdout)
    assert "L3" in out.stdout and "frequency" in out.stdout

    out = peerwatt(
        "meter",
        "read",
        "--profile",
        "sunspec",
        "--host",
        "127.0.0.1",
        "--port",
        str(sim.port),
        "--timeout",
        "0.2",
        "--retries",
        "0",
    )
    assert out.returncode == 3 and "no SunSpec marker" in out.stderr


def test_meter_read_json(start_sim):
    sim = start_sim("sunspec", sunspec_model=203)
    truth = sim.truth()
    out = peerwatt(
        "meter", "read", "--profile", "sunspec", "--host", "127.0.0.1", "--port", str(sim.port), "--json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["power_w"] == pytest.approx(truth.power_w, abs=1)
    assert data["export_wh"] == round(truth.export_wh) and data["sunspec_model"] == 203
    assert len(data["voltage_v"]) == 3 and data["serial"] == truth.serial


def test_meter_that_does_not_answer_is_one_line(start_sim):
    sim = start_sim("sdm630")
    out = peerwatt(
        "meter",
        "read",
        "--profile",
        "sdm630",
        "--host",
        "127.0.0.1",
        "--port",
        str(sim.port),
        "--unit",
        "9",
        "--timeout",
        "0.2",
    )
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert f"127.0.0.1:{sim.port} unit 9" in lines[0] and "check host, port and unit id" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope", "--host", "h"], "unknown meter profile 'nope'"),
        (["--profile", "sdm630"], "give exactly one of --host"),
        (["--host", "127.0.0.1"], "give --profile NAME or --profile-file FILE"),
    ],
)
def test_meter_read_bad_input(args, message):
    out = peerwatt("meter", "read", *args)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr


def test_meter_probe_finds_the_meter(start_sim):
    sim = start_sim("em340", unit_id=3)
    started = time.monotonic()
    out = peerwatt(
        "meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--units", "1,3", "--timeout", "0.3"
    )
    assert out.returncode == 0, out.stderr
    assert "found: em340 at unit 3" in out.stdout
    unit1 = [line for line in out.stdout.splitlines() if line.startswith("unit 1 ")]
    assert len(unit1) == 1 and "silent" in unit1[0]  # unit 1 is asked once, not per profile
    assert time.monotonic() - started < 20

    sim = start_sim("sunspec", sunspec_model=213)
    out = peerwatt("meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["found"] == {"profile": "sunspec", "unit_id": 1}


def test_meter_probe_with_nothing_there_is_bounded(start_sim):
    sim = start_sim("sdm630")
    started = time.monotonic()
    out = peerwatt(
        "meter",
        "probe",
        "--host",
        "127.0.0.1",
        "--port",
        str(sim.port),
        "--units",
        "4-40",
        "--timeout",
        "0.2",
        "--max-time",
        "2",
    )
    assert out.returncode == 1 and "no known meter answered" in out.stderr
    assert time.monotonic() - started < 2 + 5  # the probe's own budget plus interpreter start-up


def test_sim_meter_serves_until_sigint():
    args = ("--profile", "sdm630", "--speed", "600", "--start", "2025-06-21T10:00:00Z", "--seed", "4")
    with sim_meter_process(*args) as (proc, line, port):
        match = re.search(r", unit 1, serial (\d+)", line)
        assert match, line
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", port), timeout_s=1.0)
        try:
            first = reader.read()
            time.sleep(0.5)  # 300 simulated seconds at x600
            second = reader.read()
        finally:
            reader.close()
        assert first.serial == match.group(1)
        assert second.export_wh > first.export_wh  # midday in June: the counters move, fast
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "sim-meter: stopped" in out and "Traceback" not in err and err == ""
