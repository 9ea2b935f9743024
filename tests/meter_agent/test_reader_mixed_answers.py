"""Found in a QA pass of the Modbus agent behind a misbehaving gateway: an answer that belongs to
another request of the same poll, of the same function and register count, was read as that
request's answer (dtsu666-h: the frequency read as the import counter, 50 Hz as 50 kWh, and the
import counter as the export counter; abb-b23: the voltages as the currents).

A Modbus read answer names its function and register count, not the register it starts at, and
an RS-485 answer has no transaction id: a TCP-to-RTU gateway stamps whatever the bus brings with
the transaction id of the request it is serving. pymodbus matches transaction and unit ids (an
answer with another one is refused: pinned below), so only a gateway (or an RS-485 line) that
hands a late answer to the next request can mix them up, and only the shape tells. The reader
now asks a poll's requests in an order where that shows: no two neighbours of the same function
and count (``meter_agent.modbus_reader.order_requests``), and a first request not of the shape of
the one asked before it (the last of the poll before, or one that failed), else one of another
shape first.

``MixingGateway`` is tests/meter_agent/gateway.py's FaultyGateway relaying to a simulated meter
(its ``forward`` mode), with the bus of a TCP-to-RTU gateway behind it: each answer is the one the
device sent for an earlier request, stamped with the current request's transaction id.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

import pytest

from meter_agent import modbus_reader
from meter_agent.modbus_reader import (
    MeterFramingError,
    MeterReader,
    MeterTimeout,
    MeterWrongAnswer,
    TcpTarget,
    plan_requests,
)
from meter_agent.profile import find_profile

from .gateway import FaultyGateway
from .test_probe_labels import RawMeter

# the profiles whose poll has two or more requests of one function and register count
MIXABLE = ("abb-b23", "dtsu666-h", "em24", "em340", "sdm120", "sdm230", "shelly-pro-3em")
# how the gateway mixes up answers from request number ``at`` (counted from 1 over all connections)
#   behind: from ``at`` on every answer is the previous request's (the device answered the one
#           before twice, after the gateway's own RS-485 retry): the answers stay one behind
#   once:   request ``at`` gets the previous request's answer, its own is dropped (a gateway that
#           clears its RS-485 buffer before each request)
#   late:   request ``at`` gets no answer in time (the client times out); the next request, on
#           the client's new connection, gets that late answer, its own is dropped
MODES = ("behind", "once", "late")


def _frame(sock: socket.socket) -> bytes | None:
    """One Modbus TCP frame from ``sock`` (None when it closed)."""
    data = b""
    while len(data) < 6 or len(data) < 6 + int.from_bytes(data[4:6], "big"):
        whole = 6 if len(data) < 6 else 6 + int.from_bytes(data[4:6], "big")
        chunk = sock.recv(whole - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _wait_readable(sock: socket.socket, stop: threading.Event) -> bool:
    """Whether ``sock`` has bytes (or closed) before ``stop`` is set."""
    while not stop.is_set():
        if select.select([sock], [], [], 0.1)[0]:
            return True
    return False


class MixingGateway(FaultyGateway):
    """FaultyGateway in ``forward`` mode, mixing up answers as ``mode`` says (MODES) from request
    ``at`` on; ``asked`` lists every request it got as (function, start, count)."""

    def __init__(self, backend_port: int, mode: str, at: int) -> None:
        super().__init__("forward", backend_port)
        assert mode in MODES
        self.mix, self.at = mode, at
        self.asked: list[tuple[int, int, int]] = []
        self._previous: bytes | None = None  # the PDU of the device's last answer
        self._late: bytes | None = None  # "late": the answer that did not come in time
        self._lock = threading.Lock()

    def _forward(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=2)
        try:
            while _wait_readable(conn, self._stop):
                request = _frame(conn)
                if request is None:
                    return
                backend.sendall(request)
                answer = _frame(backend)
                if answer is None:
                    return
                with self._lock:
                    pdu = self._mixed(request, answer[7:])
                if pdu is not None:
                    conn.sendall(
                        request[0:2] + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + request[6:7] + pdu
                    )
        except OSError:
            return
        finally:
            backend.close()
            conn.close()

    def _mixed(self, request: bytes, pdu: bytes) -> bytes | None:
        """The PDU sent for ``request`` (whose own answer is ``pdu``), None for no answer."""
        self.asked.append((request[7], *struct.unpack(">HH", request[8:12])))
        n = len(self.asked)
        previous, self._previous = self._previous, pdu
        if self.mix == "behind" and n >= self.at and previous is not None:
            return previous
        if self.mix == "once" and n == self.at and previous is not None:
            return previous
        if self.mix == "late" and n == self.at:
            self._late = pdu
            return None
        if self.mix == "late" and self._late is not None:
            late, self._late = self._late, None
            return late
        return pdu


def _reads(
    start_sim, name: str, mode: str, at: int
) -> tuple[list[object], object, list[tuple[int, int, int]]]:
    """Three reads of a simulated ``name`` meter through a MixingGateway: each a sample or the
    fault raised, the sample read straight from the meter, and what the gateway was asked."""
    sim = start_sim(name)
    profile = find_profile(name)

    def reader(port: int) -> MeterReader:
        return MeterReader(
            profile,
            TcpTarget("127.0.0.1", port),
            unit_id=sim.unit_id,
            timeout_s=0.2,
            retries=0,
            clock=sim.clock.now,
        )

    with reader(sim.port) as direct:
        truth = direct.read()
    out: list[object] = []
    with MixingGateway(sim.port, mode, at) as gateway, reader(gateway.port) as through:
        for _ in range(3):
            try:
                out.append(through.read())
            except (MeterFramingError, MeterTimeout) as exc:
                out.append(exc)
    return out, truth, gateway.asked


@pytest.mark.parametrize("name", MIXABLE)
@pytest.mark.parametrize("mode", MODES)
def test_an_answer_to_another_request_is_a_fault_never_a_reading(start_sim, name, mode):
    """Wherever in the first two polls the gateway starts mixing up answers, a read is the
    meter's true values or a fault: never another block's values read as these."""
    _, _, asked = _reads(start_sim, name, "once", at=1000)  # no mix-up: a poll's requests
    per_poll = len(asked) // 3
    faults = 0
    for at in range(1, 2 * per_poll + 1):
        reads, truth, _ = _reads(start_sim, name, mode, at)
        for read in reads:
            if isinstance(read, MeterFramingError):
                assert isinstance(read, MeterWrongAnswer) or "answer holds" in str(read), read
                faults += 1
            elif not isinstance(read, Exception):
                assert read == truth, (
                    f"{name}, {mode} from request {at}: read {read}, the meter holds {truth}"
                )
    assert faults > 0  # the gateway did mix up answers


def test_the_dtsu666_h_poll_is_ordered_so_that_a_mix_up_shows(start_sim):
    """The DTSU666-H's frequency, import and export are 2-register blocks of function 4: read one
    after the other, each could pass for its neighbour. The 20-register block of phase values
    goes between them (read twice); from the second poll on it goes first too, as the export, the
    last request of the poll before, could pass for the frequency."""
    reads, truth, asked = _reads(start_sim, "dtsu666-h", "once", at=1000)  # no mix-up at all
    assert reads == [truth] * 3
    frequency, phases, imported, exported = (4, 0x2044, 2), (4, 0x2006, 20), (4, 0x401E, 2), (4, 0x4028, 2)
    poll = [frequency, phases, imported, phases, exported]
    assert asked == [*poll, phases, *poll, phases, *poll]


def test_profiles_without_confusable_requests_keep_their_plan():
    for name in ("sdm630", "sdm72dm"):
        plan = plan_requests(find_profile(name).values.values(), 60)
        assert modbus_reader.order_requests(plan) == plan


def test_order_requests_separates_every_pair_of_confusable_requests():
    def confusable(a, b):
        return (a[0], a[2]) == (b[0], b[2]) and a[1] != b[1]

    plans = [
        [(4, 0, 2), (4, 10, 2), (4, 20, 2), (4, 30, 6), (3, 0, 2)],
        [(3, 0, 8), (3, 100, 6), (3, 120, 6), (3, 140, 8), (3, 200, 1), (3, 300, 2)],
        [(4, 0, 6), (4, 1013, 2), (4, 20, 6), (4, 40, 6), (4, 60, 6), (4, 1162, 4)],
        [(4, 0, 20), (4, 100, 2), (4, 200, 2), (4, 300, 2)],
    ]
    for plan in plans:
        order = modbus_reader.order_requests(plan)
        assert set(order) == set(plan)  # every request asked, some twice
        assert not any(confusable(a, b) for a, b in zip(order, order[1:], strict=False)), order
        assert len(order) < 2 * len(plan)
    # where a move parts the last from the first, the last is moved (polls follow one another)
    order = modbus_reader.order_requests(plans[1])
    assert not confusable(order[-1], order[0]), order


def test_requests_all_of_one_shape_cannot_be_told_apart_and_keep_their_plan():
    plan = [(4, 0, 2), (4, 10, 2)]
    assert modbus_reader.order_requests(plan) == plan


def test_an_answer_with_another_transaction_id_is_refused():
    """pymodbus's client refuses a frame with another transaction id (a late answer on the same
    connection), also 0, the id of a gateway that ignores them; the reader checks it too, should
    a pymodbus version accept it (its asyncio client already takes 0 for any request)."""
    with RawMeter("wrong_tid") as device:
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", device.port), timeout_s=0.3)
        try:
            with pytest.raises(MeterFramingError) as caught:
                reader.read()
        finally:
            reader.close()
    assert caught.value.cause == "other transaction"
    with _TidZeroMeter() as device:
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", device.port), timeout_s=0.3)
        try:
            with pytest.raises(MeterFramingError) as caught:
                reader.read()
        finally:
            reader.close()
    assert caught.value.cause == "other transaction" and caught.value.answered == 0, caught.value


class _TidZeroMeter(RawMeter):
    """RawMeter whose answers all carry transaction id 0 (and otherwise fit the request)."""

    def __init__(self) -> None:
        super().__init__("tid0")

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with conn:
            while _wait_readable(conn, self._stop):
                request = _frame(conn)
                if request is None:
                    return
                _, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", request[:12])
                pdu = bytes([function, 2 * count]) + bytes(2 * count)
                conn.sendall(struct.pack(">HHHB", 0, 0, len(pdu) + 1, unit) + pdu)


def test_the_reader_checks_the_transaction_id_itself(start_sim, reader_for, monkeypatch):
    """Should pymodbus's client take an answer with another transaction id (as its asyncio client
    takes 0 for any request), the reader still refuses it."""
    from pymodbus.client import ModbusTcpClient

    sim = start_sim("sdm630")
    reader = reader_for(sim)
    assert reader.read().import_wh > 0  # the meter answers
    plain = ModbusTcpClient.read_input_registers

    def tid_zero(self, *args, **kwargs):
        response = plain(self, *args, **kwargs)
        response.transaction_id = 0
        return response

    monkeypatch.setattr(ModbusTcpClient, "read_input_registers", tid_zero)
    with pytest.raises(MeterFramingError) as caught:
        reader.read()
    assert caught.value.cause == "other transaction" and caught.value.answered == 0
    assert "answer to another request (transaction id 0, asked " in str(caught.value), caught.value
