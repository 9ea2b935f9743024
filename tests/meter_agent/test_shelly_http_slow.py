"""Shelly Pro 3EM over HTTP: a device that trickles its answer, and values that are present but not
usable. Found in a QA pass: ``timeout_s`` bounded each socket read, not the whole answer, so a
device sending a byte of body a second (or endless chunks, or a header line a second) kept
``read()`` and with it the agent's loop blocked for as long as it kept sending."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import pytest

from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterError, MeterTimeout, MeterValueUnavailable
from meter_agent.outbox import Outbox
from meter_agent.shelly_http import ShellyHttpReader
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from tests.support.localnet import make_community

INFO = {"model": "SPEM-003CEBEU", "mac": "A8032ABE54DC", "gen": 2}
EM = {"id": 0, "total_act_power": 123.4, "a_voltage": 230.1}
EMDATA = {"id": 0, "total_act": 1000000.4, "total_act_ret": 400000.6}
MORNING = 1750489200

Handler = Callable[[socket.socket, str, threading.Event], None]


class RawDevice:
    """A loopback 'device' on raw sockets, so that it can misbehave in any way: ``handle(conn,
    request line, stop)`` answers each connection."""

    def __init__(self, handle: Handler) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.handle = handle
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            self.handle(conn, request.split(b"\r\n")[0].decode(), self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.server.close()


def answer_for(line: str, em: dict = EM, emdata: dict = EMDATA) -> dict:
    if "GetDeviceInfo" in line:
        return INFO
    return emdata if "EMData" in line else em


def answer(conn: socket.socket, obj: object) -> None:
    body = json.dumps(obj).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def trickle_body(conn: socket.socket, line: str, stop: threading.Event) -> None:
    body = json.dumps(answer_for(line)).encode() + b" " * 1000
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    for byte in body:
        if stop.wait(0.1):
            return
        conn.sendall(bytes([byte]))


def endless_chunks(conn: socket.socket, line: str, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not stop.wait(0.1):
        conn.sendall(b"1\r\n \r\n")


def slow_headers(conn: socket.socket, line: str, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.1):
        conn.sendall(b"X-A: b\r\n")


def timed_read(reader: ShellyHttpReader, limit_s: float) -> tuple[float, dict]:
    """(seconds the read took, {"sample"|"error": ...}); a read still running after ``limit_s``
    is left behind (its device stops when the test closes it)."""
    out: dict = {}

    def go() -> None:
        try:
            out["sample"] = reader.read()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(limit_s)
    return time.monotonic() - started, out


@pytest.mark.parametrize("handle", [trickle_body, endless_chunks, slow_headers])
def test_a_trickling_answer_is_a_timeout_within_timeout_s_per_attempt(handle):
    device = RawDevice(handle)
    try:
        reader = ShellyHttpReader("127.0.0.1", device.port, timeout_s=0.5, retries=1)
        took_s, out = timed_read(reader, limit_s=5)
    finally:
        device.close()
    assert isinstance(out.get("error"), MeterTimeout), f"read still running after {took_s:.1f} s: {out}"
    assert took_s < 2.0  # two attempts of 0.5 s each, with room for a slow machine
    assert "no complete answer to Shelly.GetDeviceInfo in time (0.5 s" in str(out["error"])
    assert "\n" not in str(out["error"])


def test_the_deadline_covers_the_three_calls_of_a_reading():
    """Each call answers in just under timeout_s: the reading as a whole does not."""

    def handle(conn: socket.socket, line: str, stop: threading.Event) -> None:
        stop.wait(0.3)
        answer(conn, answer_for(line))

    device = RawDevice(handle)
    try:
        reader = ShellyHttpReader("127.0.0.1", device.port, timeout_s=0.5, retries=0)
        took_s, out = timed_read(reader, limit_s=5)
    finally:
        device.close()
    assert isinstance(out.get("error"), MeterTimeout), out
    assert "EM.GetStatus" in str(out["error"]) and took_s < 1.0


def test_an_agent_polling_a_trickling_device_reports_a_meter_fault_and_goes_on(tmp_path, caplog):
    """The agent's loop is not held by the device: the poll ends, the status says meter_ok false
    and a `meter fault:` line is logged."""
    device = RawDevice(trickle_body)
    c = make_community(validators=1, members=1, meters_per_member=1, app="market", time=MORNING)
    now = [MORNING + 880]
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(MemoryBroker(), "agent"),
        reader=ShellyHttpReader("127.0.0.1", device.port, timeout_s=0.5, retries=1),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=lambda: now[0],
        heartbeat_s=0,
    )
    agent.start()
    try:
        polled = threading.Thread(target=agent.poll, daemon=True)
        started = time.monotonic()
        polled.start()
        polled.join(5)
        assert not polled.is_alive(), "the agent's poll is held by the device"
        assert time.monotonic() - started < 2.5
        status = agent.status()
        assert status["meter_ok"] is False and "no complete answer" in status["fault"]
        assert "meter fault: Shelly Pro 3EM" in caplog.text
    finally:
        device.close()
        agent.stop()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("total_act", "1000", 'import_wh (EMData.GetStatus total_act) is "1000", not a number'),
        ("total_act", -5, "import_wh (EMData.GetStatus total_act) is -5: a counter cannot be negative"),
        ("total_act_ret", True, "export_wh (EMData.GetStatus total_act_ret) is true, not a number"),
        ("total_act_power", "x", 'power_w (EM.GetStatus total_act_power) is "x", not a number'),
        ("total_act", None, "import_wh (EMData.GetStatus total_act) is missing in the status"),
    ],
)
def test_a_value_present_but_not_usable_says_which_and_why(field, value, says):
    """Found in a QA pass: the string "1000" or a negative counter read 'import_wh missing in the
    status' though the device sent it."""
    em, emdata = dict(EM), dict(EMDATA)
    (em if field == "total_act_power" else emdata)[field] = value
    device = RawDevice(lambda conn, line, stop: answer(conn, answer_for(line, em, emdata)))
    try:
        with pytest.raises(MeterValueUnavailable) as caught:
            ShellyHttpReader("127.0.0.1", device.port, timeout_s=2, retries=0).read()
    finally:
        device.close()
    assert says in str(caught.value)
    assert isinstance(caught.value, MeterError)
