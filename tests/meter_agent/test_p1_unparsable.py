"""A P1 telegram with a valid CRC that dsmr-parser cannot parse is one clear fault line: which line
of the telegram and what is wrong with it. Found in a QA pass: the fault showed dsmr-parser's raw
error (``("Invalid '%s' line for '%s'", '1-0:1.8.1(...)\\r\\n', <dsmr_parser.parsers.CosemParser
object at 0x...>)``) or only an exception name (``InvalidOperation``), and dsmr-parser logged a
traceback beside it (`peerwatt meter read --source p1` printed it on stderr)."""

from __future__ import annotations

import logging

import pytest

from meter_agent.modbus_reader import MeterFramingError
from tests.meter_agent.test_p1 import HAND_TELEGRAM_BODY, OneShotDongle
from tests.meter_agent.test_p1_values import read_once, with_line

LINE = "1-0:1.8.1(012345.678*kWh)"  # line 6 of the hand-written telegram
FORM = "is not in the form its OBIS code needs (the number of values or their characters)"
NUMBER = "holds a value that is not a number"


@pytest.mark.parametrize(
    ("new", "says"),
    [
        ("1-0:1.8.1(012345.678*kWh)(5)", f"line 6 '1-0:1.8.1(012345.678*kWh)(5)' {FORM}"),
        ("1-0:1.8.1(012345.678 kWh)", f"line 6 '1-0:1.8.1(012345.678 kWh)' {FORM}"),
        ("1-0:1.8.1(012x45.678*kWh)", f"line 6 '1-0:1.8.1(012x45.678*kWh)' {NUMBER}"),
        ("1-0:1.8.1(012345.678*kWh*x)", f"line 6 '1-0:1.8.1(012345.678*kWh*x)' {NUMBER}"),
    ],
)
def test_an_unparsable_line_is_named_in_one_line(caplog, new, says):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MeterFramingError) as caught:
        read_once(with_line(LINE, new))
    message = str(caught.value)
    assert message.endswith(f": unparsable telegram: {says}")
    assert "\n" not in message and "%s" not in message and "object at" not in message
    assert [r for r in caplog.records if r.name.startswith("dsmr_parser")] == []  # no traceback logged


def test_a_telegram_without_its_crc_says_so():
    with pytest.raises(MeterFramingError) as caught:
        read_once(f"{HAND_TELEGRAM_BODY}\r\n".encode("ascii"))
    assert str(caught.value).endswith(
        ": unparsable telegram: no CRC after its '!' (a DSMR 4 or 5 telegram ends with '!' and 4 hex digits)"
    )


def test_cli_meter_read_p1_prints_one_error_line():
    from tests.support.cli import peerwatt

    dongle = OneShotDongle(with_line(LINE, "1-0:1.8.1(012x45.678*kWh)"))
    try:
        out = peerwatt(
            "meter", "read", "--source", "p1", "--host", "127.0.0.1", "--port", str(dongle.port),
            "--retries", "0", "--timeout", "2",
        )  # fmt: skip
    finally:
        dongle.close()
    assert out.returncode == 3, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert f"unparsable telegram: line 6 '1-0:1.8.1(012x45.678*kWh)' {NUMBER}" in out.stderr
