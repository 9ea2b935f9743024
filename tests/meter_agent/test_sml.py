"""SML (German meters' optical port): the reader over TCP and a pty, a hand-written SML file, the
simulator's files checked by smllib (file CRC) and by an independent message-CRC walk, every
fault as a typed MeterError, and the CLI commands."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading

import pytest
from smllib import SmlStreamReader
from smllib.crc import x25

from meter_agent.household import Household
from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterFramingError,
    MeterTimeout,
    MeterValueUnavailable,
    TcpTarget,
)
from meter_agent.sml import SmlReader, SmlSerialTarget
from meter_agent.sml_simulator import SmlSimulator, crc16_x25
from tests.support.sim_meter import sim_meter_process

from .conftest import MIDDAY

SERVER_ID = "0a014553591101234567"  # 0x0A 0x01 'ESY' block 0x11, number 0x01234567


def _message(fields_hex: str) -> bytes:
    """An SML message written by hand: TL 0x76, then the fields up to the CRC (given), then the
    CRC16 computed with smllib's own X.25 function (sent as the unsigned16 it compares)."""
    body = bytes.fromhex("76" + fields_hex.replace(" ", ""))
    return body + b"\x63" + x25.get_crc(body).to_bytes(2, "big") + b"\x00"


def hand_written_file(corrupt: bool = False, with_counters: bool = True) -> bytes:
    """An SML file written out by hand from the SML encoding (BSI TR-03109-1), not by our
    simulator: open, a GetList with 1.8.0 = 771604.9 Wh, 2.8.0 = 123456.7 Wh, 16.7.0 = -1234 W,
    close."""
    open_res = _message(f"04000001 6200 6200 72 630101 76 01 01 0400aa01 0b{SERVER_ID} 01 01")
    entries = (
        [
            # objName, status, valTime, unit 30 (Wh), scaler -1, value (uint64), signature
            "77 070100010800ff 01 01 621e 52ff 59000000000075bcd1 01",
            "77 070100020800ff 01 01 621e 52ff 59000000000012d687 01",
        ]
        if with_counters
        else []
    )
    entries.append("77 070100100700ff 01 01 621b 5200 53fb2e 01")  # 16.7.0: int16 -1234 W
    get_list = _message(
        f"04000002 6200 6200 72 630701 77 01 0b{SERVER_ID} 070100620affff 72 6201 6500000001 "
        f"7{len(entries)} {' '.join(entries)} 01 01"
    )
    close_res = _message("04000003 6200 6200 72 630201 71 01")
    payload = open_res + get_list + close_res
    padding = (-len(payload)) % 4
    body = (
        b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"
        + payload
        + b"\x00" * padding
        + b"\x1b\x1b\x1b\x1b\x1a"
        + bytes([padding])
    )
    crc = x25.get_crc(body) ^ (1 if corrupt else 0)
    return body + crc.to_bytes(2, "big")


class OneShotBridge:
    """A loopback 'IR-head bridge' that sends fixed bytes to the first client, then keeps it open."""

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


def read_once(data: bytes, timeout_s: float = 1.0):
    bridge = OneShotBridge(data)
    try:
        with SmlReader(TcpTarget("127.0.0.1", bridge.port), timeout_s=timeout_s, retries=0) as reader:
            return reader.read()
    finally:
        bridge.close()


@pytest.fixture
def smlsim():
    started: list[SmlSimulator] = []

    def start(**options) -> SmlSimulator:
        options.setdefault("start_time", MIDDAY)
        options.setdefault("interval_s", 0.05)
        sim = SmlSimulator(
            options.pop("household", Household(pv_kwp=5.0, annual_kwh=3500.0, seed=7)), **options
        )
        started.append(sim.start())
        sim.clock.pause()
        return sim

    yield start
    for sim in started:
        sim.stop()


def _messages_with_crc(payload: bytes) -> list[tuple[bytes, int]]:
    """Walk SML type-length fields (independently of smllib and of the simulator's encoder) and
    return each message's bytes before its CRC field and the CRC it carries."""

    def skip(pos: int) -> int:
        tl = payload[pos]
        if tl in (0x00, 0x01):
            return pos + 1
        kind, size, start = tl & 0x70, tl & 0x0F, pos + 1
        more = tl & 0x80
        while more:
            size = (size << 4) | (payload[start] & 0x0F)
            more = payload[start] & 0x80
            start += 1
        if kind == 0x70:
            for _ in range(size):
                start = skip(start)
            return start
        return pos + size

    out, pos = [], 0
    while pos < len(payload) and payload[pos] == 0x76:
        field = pos + 1
        for _ in range(4):  # transactionId, groupNo, abortOnError, messageBody
            field = skip(field)
        assert payload[field] == 0x63
        out.append((payload[pos:field], int.from_bytes(payload[field + 1 : field + 3], "big")))
        assert payload[field + 3] == 0x00  # endOfSmlMsg
        pos = field + 4
    return out


def test_hand_written_file_is_read_in_wh_with_the_server_id_as_serial():
    sample = read_once(hand_written_file())
    assert sample.import_wh == 771_605  # 7716049 x 0.1 Wh, half-even
    assert sample.export_wh == 123_457
    assert sample.power_w == -1234
    assert sample.serial == SERVER_ID.upper()
    assert sample.profile == "sml" and sample.voltage_v == ()


def test_a_file_with_a_bad_crc_is_a_framing_error():
    with pytest.raises(MeterFramingError, match="CRC"):
        read_once(hand_written_file(corrupt=True))


def test_a_file_without_counters_is_value_unavailable():
    # one problem per value (5340207)
    with pytest.raises(
        MeterValueUnavailable, match="import_wh: 1-0:1.8.0 is not in the SML file; export_wh: 1-0:2.8.0"
    ):
        read_once(hand_written_file(with_counters=False))


def test_simulator_files_pass_smllibs_crc_and_carry_valid_message_crcs(smlsim):
    assert crc16_x25(b"123456789") == 0x906E  # the CRC-16/X.25 check value
    sim = smlsim()
    data = sim.sml_file()
    stream = SmlStreamReader()
    stream.add(data)
    frame = stream.get_frame()  # raises CrcError on a bad file CRC
    assert frame is not None
    kinds = [type(m.message_body).__name__ for m in frame.parse_frame()]
    assert kinds == ["SmlOpenResponse", "SmlGetListResponse", "SmlCloseResponse"]
    messages = _messages_with_crc(frame.bytes)
    assert len(messages) == 3
    for raw, crc in messages:
        assert x25.get_crc(raw) == crc
    values = {e.obis.obis_short: e.get_value() for e in frame.get_obis()}
    truth = sim.truth()
    assert values["1.8.0"] == pytest.approx(truth["import_wh"], abs=0.1)
    assert values["2.8.0"] == pytest.approx(truth["export_wh"], abs=0.1)
    assert values["16.7.0"] == pytest.approx(truth["power_w"], abs=1)
    sim.inject("crc")
    stream.add(sim.sml_file())
    from smllib.errors import CrcError

    with pytest.raises(CrcError):
        stream.get_frame()


def test_reader_gets_the_simulators_truth_over_tcp(smlsim):
    sim = smlsim()
    with SmlReader(TcpTarget("127.0.0.1", sim.port), timeout_s=2) as reader:
        sample = reader.read()
        truth = sim.truth()
        assert sample.import_wh == pytest.approx(truth["import_wh"], abs=1)
        assert sample.export_wh == pytest.approx(truth["export_wh"], abs=1)
        assert sample.power_w == pytest.approx(truth["power_w"], abs=1)
        assert sample.serial == truth["serial"] == sim.serial
        assert len(sample.voltage_v) == 3 and sample.frequency_hz == 50.0
        sim.clock.advance(900)  # the newest file wins over the ones queued before
        later = sim.truth()
        reader.read()
        sample = reader.read()
        assert sample.export_wh == pytest.approx(later["export_wh"], abs=1)


def test_reader_over_a_pty_like_an_ir_head(smlsim):
    sim = smlsim(pty=True)
    with SmlReader(SmlSerialTarget(sim.device), timeout_s=2) as reader:
        sample = reader.read()
    assert sample.serial == sim.serial and sample.import_wh > 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("crc", MeterFramingError),
        ("timeout", MeterTimeout),
        ("disconnect", MeterConnectionError),
        ("missing", MeterValueUnavailable),
        ("garbage", MeterFramingError),
    ],
)
def test_faults_are_typed_meter_errors_and_recover(smlsim, fault, error):
    sim = smlsim()
    reader = SmlReader(TcpTarget("127.0.0.1", sim.port), timeout_s=0.5, retries=0)
    try:
        reader.read()
        sim.inject(fault)
        with pytest.raises(error):
            reader.read()
        sim.clear_faults()
        assert reader.read().serial == sim.serial
    finally:
        reader.close()


def test_swap_meter_changes_the_serial_and_restarts_the_counters(smlsim):
    sim = smlsim()
    with SmlReader(TcpTarget("127.0.0.1", sim.port), timeout_s=2) as reader:
        before = reader.read()
        sim.swap_meter()
        reader.read()
        after = reader.read()
    assert after.serial != before.serial and after.import_wh < 10


def test_nothing_listening_is_a_connection_error():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    with pytest.raises(MeterConnectionError, match="cannot connect"):
        SmlReader(TcpTarget("127.0.0.1", port), timeout_s=0.5, retries=0).read()


def test_cli_sim_meter_sml_and_meter_read_sml():
    from tests.support.cli import peerwatt

    with sim_meter_process("--source", "sml", "--seed", "3") as (proc, line, port):
        match = re.search(r", meter (\S+);", line)
        assert match, line
        args = ("--source", "sml", "--host", "127.0.0.1", "--port", str(port), "--json")
        out = peerwatt("meter", "read", *args)
        assert out.returncode == 0, out.stderr
        reading = json.loads(out.stdout)
        assert reading["serial"] == match.group(1) and reading["import_wh"] > 0
        assert reading["profile"] == "sml"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "sim-meter: stopped" in stdout and stderr == ""


def test_cli_meter_read_sml_errors_are_one_line():
    from tests.support.cli import peerwatt

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    out = peerwatt("meter", "read", "--source", "sml", "--host", "127.0.0.1", "--port", str(port))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot connect" in out.stderr
    out = peerwatt("meter", "read", "--source", "sml", "--host", "127.0.0.1")
    assert out.returncode != 0 and "--port" in out.stderr and "Traceback" not in out.stderr
