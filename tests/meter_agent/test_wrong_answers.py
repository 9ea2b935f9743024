"""A valid Modbus frame that does not answer the request sent (QA pass on the Modbus reader):
more registers than asked is reported as an answer to another request, not as "fewer registers
than asked ... lower max_registers"; fewer registers keep that advice. A frame marked with
another function code is refused (it was accepted), as another unit or transaction id is."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import (
    MeterFramingError,
    MeterReader,
    MeterShortAnswer,
    MeterWrongAnswer,
    TcpTarget,
)
from meter_agent.probe import advice
from meter_agent.profile import find_profile

from .test_probe_labels import RawMeter, probe_one


def read_fails(mode: str) -> MeterFramingError:
    with RawMeter(mode) as device:
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", device.port), timeout_s=0.3)
        try:
            with pytest.raises(MeterFramingError) as caught:  # retried and reported like a garbled answer
                reader.read()
        finally:
            reader.close()
    return caught.value


def test_more_registers_than_asked_is_an_answer_to_another_request():
    error = read_fails("extra")
    assert isinstance(error, MeterWrongAnswer) and not isinstance(error, MeterShortAnswer)
    assert "answer holds 20 registers, asked for 18 (input registers 0..17)" in str(error)
    assert "another request" in str(error)
    hint = advice(error, tcp=True)
    assert "fewer" not in hint and "max_registers" not in hint, hint
    assert hint.startswith("the answer belonged to another request"), hint


def test_fewer_registers_keep_the_max_registers_advice():
    error = read_fails("short")
    assert isinstance(error, MeterShortAnswer) and not isinstance(error, MeterWrongAnswer)
    assert "fewer registers than asked" in advice(error, tcp=True)


def test_probe_labels_more_registers_as_an_answer_to_another_request():
    with RawMeter("extra") as device:
        result = probe_one(device.port, "sdm630")
    assert result.verdict == "error"
    assert result.detail.startswith("answer to another request (20 registers, asked for 18;"), result.detail


def test_an_answer_marked_with_another_function_code_is_refused():
    error = read_fails("wrong_fc")
    assert isinstance(error, MeterWrongAnswer)
    assert "answer for function 3 reading input registers 0..17 (function 4)" in str(error), error
    assert advice(error, tcp=True).startswith("the answer belonged to another request")


def test_probe_labels_another_function_code_as_an_answer_to_another_request():
    with RawMeter("wrong_fc") as device:
        result = probe_one(device.port, "sdm630")
    assert result.verdict == "error"
    assert result.detail.startswith("answer to another request (function 3, asked function 4;"), result.detail
