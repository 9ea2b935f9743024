"""P1 port (DSMR 5): the reader over TCP and a pty, the simulator's telegrams (checked by
dsmr-parser's own CRC), and every fault as a typed MeterError the agent retries."""

from __future__ import annotations

import socket
import threading

import pytest
from dsmr_parser.parsers import TelegramParser

from meter_agent.household import Household
from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterError,
    MeterFramingError,
    MeterTimeout,
    MeterValueUnavailable,
    TcpTarget,
)
from meter_agent.p1 import P1Reader, P1SerialTarget, decode_equipment_id
from meter_agent.p1_simulator import P1Simulator
from tests.support.sim_meter import sim_meter_process

from .conftest import MIDDAY

# A DSMR 5 telegram written out by hand from the P1 companion standard's line format (not by
# our simulator); its CRC is computed with dsmr-parser's own crc16 below.
HAND_TELEGRAM_BODY = (
    "/ISK5\\2M550T-1012\r\n\r\n"
    "1-3:0.2.8(50)\r\n"
    "0-0:1.0.0(250621120000S)\r\n"
    "0-0:96.1.1(4530303533303033373731333331363136)\r\n"
    "1-0:1.8.1(012345.678*kWh)\r\n"
    "1-0:1.8.2(000654.321*kWh)\r\n"
    "1-0:2.8.1(000100.001*kWh)\r\n"
    "1-0:2.8.2(002000.002*kWh)\r\n"
    "0-0:96.14.0(0002)\r\n"
    "1-0:1.7.0(00.000*kW)\r\n"
    "1-0:2.7.0(02.345*kW)\r\n"
    "1-0:32.7.0(231.0*V)\r\n"
    "1-0:31.7.0(010*A)\r\n"
    "1-0:21.7.0(00.000*kW)\r\n"
    "1-0:22.7.0(02.345*kW)\r\n"
    "!"
)


def hand_telegram(corrupt: bool = False) -> bytes:
    crc = TelegramParser.crc16(HAND_TELEGRAM_BODY) ^ (1 if corrupt else 0)
    return f"{HAND_TELEGRAM_BODY}{crc:04X}\r\n".encode("ascii")


class OneShotDongle:
    """A loopback 'dongle' that sends fixed bytes to the first client, then keeps it open."""

    def __init__(self, data: bytes) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.data = data
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(5)
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        self.conns.append(conn)
        conn.sendall(self.data)

    def close(self) -> None:
        self.server.close()
        self.thread.join(6)
        for conn in self.conns:
            conn.close()


@pytest.fixture
def p1sim():
    started: list[P1Simulator] = []

    def start(**options) -> P1Simulator:
        options.setdefault("start_time", MIDDAY)
        options.setdefault("interval_s", 0.05)
        sim = P1Simulator(
            options.pop("household", Household(pv_kwp=5.0, annual_kwh=3500.0, seed=7)), **options
        )
        started.append(sim.start())
        sim.clock.pause()
        return sim

    yield start
    for sim in started:
        sim.stop()


def test_hand_written_telegram_is_read_in_wh_with_the_nameplate_serial():
    dongle = OneShotDongle(hand_telegram())
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=2, retries=0) as reader:
            sample = reader.read()
    finally:
        dongle.close()
    assert sample.import_wh == 12_345_678 + 654_321
    assert sample.export_wh == 100_001 + 2_000_002
    assert sample.power_w == -2345  # received from the home = export
    assert sample.voltage_v == (231.0,) and sample.phase_power_w == (-2345.0,)
    assert sample.serial == "E0053003771331616"


def test_a_telegram_with_a_bad_crc_is_a_framing_error():
    dongle = OneShotDongle(hand_telegram(corrupt=True))
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=1, retries=0) as reader:
            with pytest.raises(MeterFramingError, match="CRC"):
                reader.read()
    finally:
        dongle.close()


def test_simulator_telegrams_pass_dsmr_parsers_crc_check(p1sim):
    sim = p1sim()
    TelegramParser.validate_checksum(sim.telegram())
    sim.inject("crc")
    with pytest.raises(Exception, match="CRC"):
        TelegramParser.validate_checksum(sim.telegram())


def test_reader_gets_the_simulators_truth_over_tcp(p1sim):
    sim = p1sim()
    with P1Reader(TcpTarget("127.0.0.1", sim.port), timeout_s=2) as reader:
        sample = reader.read()
        truth = sim.truth()
        assert sample.import_wh == pytest.approx(truth["import_wh"], abs=1)
        assert sample.export_wh == pytest.approx(truth["export_wh"], abs=1)
        assert sample.power_w == pytest.approx(truth["power_w"], abs=1)
        assert sample.serial == truth["serial"]
        sim.clock.advance(900)  # the newest telegram wins over the ones queued before
        first = sim.truth()
        sample = reader.read()
        sample = reader.read()
        assert sample.export_wh == pytest.approx(first["export_wh"], abs=1)


def test_reader_over_a_pty_like_a_p1_cable(p1sim):
    sim = p1sim(pty=True)
    with P1Reader(P1SerialTarget(sim.device), timeout_s=2) as reader:
        sample = reader.read()
    assert sample.serial == sim.meter_serial and sample.import_wh > 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("crc", MeterFramingError),
        ("timeout", MeterTimeout),
        ("disconnect", MeterConnectionError),
        ("missing", MeterValueUnavailable),
        ("garbage", MeterError),
    ],
)
def test_faults_are_typed_meter_errors_and_recover(p1sim, fault, error):
    sim = p1sim()
    reader = P1Reader(TcpTarget("127.0.0.1", sim.port), timeout_s=0.5, retries=0)
    try:
        reader.read()
        sim.inject(fault)
        with pytest.raises(error):
            reader.read()
        sim.clear_faults()
        assert reader.read().serial == sim.meter_serial
    finally:
        reader.close()


def test_nothing_listening_is_a_connection_error():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    with pytest.raises(MeterConnectionError, match="cannot connect"):
        P1Reader(TcpTarget("127.0.0.1", port), timeout_s=0.5, retries=0).read()


def test_equipment_id_decoding():
    assert decode_equipment_id("4530303533303033373731333331363136") == "E0053003771331616"
    assert decode_equipment_id("not hex") == "not hex"
    assert decode_equipment_id("0001") == "0001"  # not printable ASCII: kept as sent


def test_cli_sim_meter_p1_and_meter_read_p1():
    import json
    import re
    import signal

    from tests.support.cli import peerwatt

    with sim_meter_process("--source", "p1", "--seed", "3") as (proc, line, port):
        match = re.search(r", meter (\S+);", line)
        assert match, line
        args = ("--source", "p1", "--host", "127.0.0.1", "--port", str(port), "--json")
        out = peerwatt("meter", "read", *args)
        assert out.returncode == 0, out.stderr
        reading = json.loads(out.stdout)
        assert reading["serial"] == match.group(1) and reading["import_wh"] > 0
        assert reading["profile"] == "p1-dsmr5"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "sim-meter: stopped" in stdout and stderr == ""


def test_cli_meter_read_p1_with_nothing_there_is_one_line():
    from tests.support.cli import peerwatt

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    out = peerwatt("meter", "read", "--source", "p1", "--host", "127.0.0.1", "--port", str(port))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot connect" in out.stderr
