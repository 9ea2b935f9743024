"""Modbus RTU over a virtual serial pair (socat): simulator on one end, reader on the other."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from meter_agent.modbus_reader import MeterFramingError, MeterReader, MeterTimeout, SerialTarget
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from tests.conftest import require_tool

from .conftest import MIDDAY


@pytest.fixture
def serial_pair():
    """Two linked pseudo-terminals from `socat -d -d pty,raw,echo=0 pty,raw,echo=0`."""
    socat = require_tool("socat")
    proc = subprocess.Popen(
        [socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    ptys: list[str] = []
    deadline = time.monotonic() + 5.0
    try:
        while len(ptys) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if match := re.search(r"PTY is (\S+)", line):
                ptys.append(match.group(1))
        assert len(ptys) == 2, "socat did not report two PTYs"
        yield ptys[0], ptys[1]
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stderr.close()


@pytest.mark.parametrize(("name", "baud"), [("sdm630", 9600), ("sdm120", 2400)])
def test_reader_over_rtu(serial_pair, household, name, baud):
    meter_end, agent_end = serial_pair
    sim = MeterSimulator(name, household, start_time=MIDDAY, serial=SerialTarget(meter_end, baud))
    with sim:
        sim.clock.pause()
        reader = MeterReader(find_profile(name), SerialTarget(agent_end, baud), timeout_s=0.5, retries=0)
        try:
            sample = reader.read()
            truth = sim.truth()
            assert sample.power_w == pytest.approx(truth.power_w, abs=1)
            assert sample.import_wh == pytest.approx(truth.import_wh, abs=1)
            assert sample.voltage_v[0] == pytest.approx(truth.voltage_v[0], abs=0.01)
            assert sample.serial == truth.serial

            sim.inject("crc")  # a corrupted frame on the RS-485 line
            with pytest.raises(MeterFramingError, match="CRC or framing"):
                reader.read()
            sim.clear_faults()
            assert reader.read().export_wh == pytest.approx(truth.export_wh, abs=1)

            sim.inject("timeout")
            with pytest.raises(MeterTimeout):
                reader.read()
            sim.clear_faults()
            assert reader.read().power_w == sample.power_w
        finally:
            reader.close()
