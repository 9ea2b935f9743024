"""A Modbus TCP answer that is no answer to the request is told apart by what it was (found in a
QA pass: a valid frame for another unit id read "garbled answer ... no valid Modbus TCP frame ...
check the port (Modbus TCP, not RTU over TCP)"): a well-formed frame for another unit id says to
check the unit id, one for another transaction id says another client or a gateway mixes up
answers, and bytes that are no frame at all keep the advice about the port."""

from __future__ import annotations

import socket

import pytest

from meter_agent.modbus_reader import MeterFramingError, MeterReader, MeterWrongAnswer, TcpTarget
from meter_agent.probe import advice, error_label
from meter_agent.profile import find_profile

from .gateway import FaultyGateway
from .test_probe_labels import RawMeter, probe_one


class _AsOtherUnit:
    """A device's connection whose answers carry unit id + 1 (the MBAP header's seventh byte)."""

    def __init__(self, conn: socket.socket, cut: bool = False) -> None:
        self._conn = conn
        self._cut = cut  # instead: the answer without its last 4 bytes

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def __enter__(self) -> _AsOtherUnit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._conn.close()

    def sendall(self, data: bytes) -> None:
        if self._cut:
            self._conn.sendall(data[:-4])
        else:
            self._conn.sendall(data[:6] + bytes([(data[6] + 1) & 0xFF]) + data[7:])


class OtherUnitMeter(RawMeter):
    """RawMeter's well-formed answers (mode ``ok``: as many registers as asked), for unit id + 1;
    ``cut``: for the unit asked, but 4 bytes short of their frame's length."""

    def __init__(self, cut: bool = False) -> None:
        super().__init__("ok")
        self.cut = cut

    def _serve(self, conn: socket.socket) -> None:
        super()._serve(_AsOtherUnit(conn, self.cut))  # type: ignore[arg-type]


def read_error(port: int, unit: int = 1) -> MeterFramingError:
    reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", port), unit_id=unit, timeout_s=0.3)
    try:
        with pytest.raises(MeterFramingError) as caught:  # still retried as a framing error
            reader.read()
    finally:
        reader.close()
    return caught.value


def test_a_frame_for_another_unit_id_says_to_check_the_unit_id():
    with OtherUnitMeter() as device:
        error = read_error(device.port, unit=3)
    assert error.cause == "other unit" and error.answered == 4
    assert "answer for unit 4 reading input registers 0..17 (asked unit 3): a valid Modbus TCP frame" in str(
        error
    ), error
    hint = advice(error, tcp=True)
    assert "check the port" not in hint and "no Modbus TCP frame" not in hint, hint
    assert "--unit" in hint and "unit 4" in hint, hint


def test_a_frame_for_another_transaction_says_another_client_or_a_mixing_gateway():
    with RawMeter("wrong_tid") as device:
        error = read_error(device.port)
    assert not isinstance(error, MeterWrongAnswer)
    assert error.cause == "other transaction"
    assert "answer to another request (transaction id " in str(error), error
    hint = advice(error, tcp=True)
    assert "check the port" not in hint and "--unit" not in hint, hint
    assert "another client" in hint and "gateway" in hint, hint


def test_bytes_that_are_no_frame_keep_the_port_advice():
    with FaultyGateway("garbage") as gateway:
        error = read_error(gateway.port)
    assert error.cause == "no frame"
    assert "no Modbus TCP frame" in str(error), error
    assert advice(error, tcp=True).startswith("the answer was no Modbus TCP frame: check the port")


def test_a_frame_that_does_not_arrive_in_full_says_a_longer_timeout():
    with OtherUnitMeter(cut=True) as device:
        error = read_error(device.port)
    assert error.cause == "incomplete"
    assert "incomplete answer reading input registers 0..17 (41 of 45 bytes of a Modbus TCP frame" in str(
        error
    ), error
    assert "--timeout" in advice(error, tcp=True) and "check the port" not in advice(error, tcp=True)


def test_probe_labels_name_the_unit_id_an_answer_came_from():
    with OtherUnitMeter() as device:
        result = probe_one(device.port, "sdm630")
    assert result.verdict == "error"
    assert result.detail.startswith("no valid Modbus TCP answer (a frame for another unit id, 2"), (
        result.detail
    )


def test_probe_labels_tell_another_transaction_from_no_frame():
    with RawMeter("wrong_tid") as device:
        result = probe_one(device.port, "sdm630")
    assert result.detail.startswith("no valid Modbus TCP answer (a frame for another request"), result.detail
    with FaultyGateway("garbage") as gateway:
        result = probe_one(gateway.port, "sdm630")
    assert result.detail.startswith("no valid Modbus TCP answer (no Modbus TCP frame"), result.detail


def test_rs485_framing_errors_keep_their_words():
    error = MeterFramingError("x: CRC error")
    assert error.cause == "garbled"
    assert error_label(error, tcp=False).startswith("garbled answer (CRC")
    assert advice(error, tcp=False).startswith("check the baud rate, parity")
