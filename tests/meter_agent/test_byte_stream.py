"""The byte stream of push meters (P1, SML) on a serial port: a baud rate pyserial refuses is one
line, a MeterError, not an OverflowError out of the agent's poll. Found in a QA pass
(``baudrate = 1000000000000`` in [meter])."""

from __future__ import annotations

import os
import pty

import pytest

from meter_agent.byte_stream import ByteStream, StreamSerialTarget
from meter_agent.modbus_reader import MeterConnectionError
from meter_agent.p1 import P1Reader, P1SerialTarget


@pytest.fixture
def pty_device():
    master, slave = pty.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


@pytest.mark.parametrize("baudrate", [1_000_000_000_000, 2**31, -5])
def test_an_absurd_baud_rate_is_a_one_line_connection_error(pty_device, baudrate):
    stream = ByteStream(StreamSerialTarget(pty_device, baudrate), "P1 meter at the test", 1.0)
    with pytest.raises(MeterConnectionError) as caught:
        stream.open()
    message = str(caught.value)
    assert f"cannot open the serial port at {baudrate} baud" in message and "\n" not in message
    assert not stream.is_open


def test_a_reader_with_an_absurd_baud_rate_reports_a_meter_error(pty_device):
    with P1Reader(P1SerialTarget(pty_device, 10**12), timeout_s=0.5, retries=0) as reader:
        with pytest.raises(MeterConnectionError, match="baud"):
            reader.read()
