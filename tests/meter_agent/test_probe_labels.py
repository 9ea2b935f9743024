"""QA pass on meter reading, finding 8: probe lines label faults by meaning, not by the error's
class name (`error  FramingError`, `error  ValueUnavailable`), and `meter read` of a valid frame
with too few registers gets a hint that fits it (not "no Modbus TCP frame: check the port")."""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress

import pytest

from meter_agent.modbus_reader import (
    MeterError,
    MeterFramingError,
    MeterReader,
    MeterValueUnavailable,
    TcpTarget,
)
from meter_agent.probe import advice, error_label, probe_meter
from meter_agent.profile import find_profile


class RawMeter:
    """A Modbus TCP device on loopback that answers every request with a well-formed frame that
    is wrong in one way: ``short`` (one register fewer than asked), ``extra`` (two registers
    more), ``wrong_fc`` (marked function 3 for 4 and 4 for 3) or ``wrong_tid`` (another request's
    transaction id)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RawMeter:
        thread = threading.Thread(target=self._accept, daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(260)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while len(buffer) >= 12:
                    tid, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", buffer[:12])
                    buffer = buffer[12:]
                    if self.mode == "short":
                        count -= 1
                    if self.mode == "extra":
                        count += 2
                    if self.mode == "wrong_tid":
                        tid = (tid + 7) & 0xFFFF
                    if self.mode == "wrong_fc":
                        function = 7 - function
                    pdu = bytes([function, 2 * count]) + bytes(2 * count)
                    with suppress(OSError):
                        conn.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)


def probe_one(port: int, name: str):
    (result,) = probe_meter([(find_profile(name), TcpTarget("127.0.0.1", port))], [1], 0.3, 10)
    return result


def test_a_garbled_answer_is_labelled_by_meaning():
    """Found in a QA pass: an answer with another transaction id printed `error  FramingError`."""
    with RawMeter("wrong_tid") as device:
        result = probe_one(device.port, "sdm630")
    assert result.verdict == "error"
    assert "FramingError" not in result.detail
    assert result.detail.startswith("no valid Modbus TCP answer ("), result.detail
    assert "another unit id" in result.detail


def test_a_short_answer_is_labelled_by_meaning():
    with RawMeter("short") as device:
        result = probe_one(device.port, "sdm630")
    assert result.verdict == "error"
    assert "FramingError" not in result.detail
    assert result.detail.startswith("short answer (17 of 18 registers"), result.detail


def test_values_not_available_are_labelled_by_meaning(start_sim):
    """Found in a QA pass: `error  ValueUnavailable`."""
    sim = start_sim("sdm630")
    sim.inject("nan")
    result = probe_one(sim.port, "sdm630")
    assert result.verdict == "error"
    assert "ValueUnavailable" not in result.detail
    assert result.detail.startswith("not available (power_w, import_wh, export_wh:"), result.detail


def test_meter_read_of_a_short_answer_gets_a_hint_that_fits_it():
    """Found in a QA pass: 'answer holds 17 registers, asked for 18' was followed by 'the answer
    was no Modbus TCP frame: check the port', though the frame was valid."""
    with RawMeter("short") as device:
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", device.port), timeout_s=0.3)
        try:
            with pytest.raises(MeterFramingError) as caught:  # still a framing error for the agent
                reader.read()
        finally:
            reader.close()
    assert "answer holds 17 registers, asked for 18" in str(caught.value)
    hint = advice(caught.value, tcp=True)
    assert "no Modbus TCP frame" not in hint
    assert "fewer registers than asked" in hint and "max_registers" in hint, hint


def test_labels_on_rs485_and_for_unforeseen_faults():
    assert error_label(MeterFramingError("x: bad CRC"), tcp=False).startswith("garbled answer (CRC")
    assert error_label(MeterValueUnavailable("x", ()), tcp=True).startswith("not available (a value:")
    assert error_label(MeterError("sdm630 meter at h unit 1: odd"), True, "sdm630 meter at h unit 1") == "odd"
