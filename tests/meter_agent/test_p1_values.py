"""P1 telegrams that are valid (CRC and all) but not usable, and streams that are not telegrams.
Found in a QA pass: a telegram saying ``*Wh`` or ``*W`` was read as kWh/kW (1000x too high); a
present but negative or NaN counter read "not in the telegram"; LF-only telegrams read "no
complete telegram" though data flowed; a dongle replaying an old telegram was read as live; a
telegram split across the read's deadline was thrown away by the retry; a DSMR 4 meter (a
telegram every 10 s) read by the agent failed every other poll."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from dsmr_parser.parsers import TelegramParser

from meter_agent.config import MeterConfig
from meter_agent.household import Household
from meter_agent.modbus_reader import MeterFramingError, MeterTimeout, MeterValueUnavailable, TcpTarget
from meter_agent.p1 import P1Reader
from meter_agent.p1_simulator import P1Simulator
from meter_agent.sources import open_reader
from tests.meter_agent.test_p1 import HAND_TELEGRAM_BODY, OneShotDongle, hand_telegram


def telegram(body: str) -> bytes:
    return f"{body}{TelegramParser.crc16(body):04X}\r\n".encode("ascii")


def with_line(old: str, new: str) -> bytes:
    assert old in HAND_TELEGRAM_BODY
    return telegram(HAND_TELEGRAM_BODY.replace(old, new))


def read_once(data: bytes):
    dongle = OneShotDongle(data)
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=1, retries=0) as reader:
            return reader.read()
    finally:
        dongle.close()


class PacedDongle:
    """Sends ``chunks`` to its first client, ``first_s`` after it connected and ``pause_s`` apart,
    then keeps the connection open until closed."""

    def __init__(self, chunks: list[bytes], pause_s: float, first_s: float = 0.05) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, args=(chunks, pause_s, first_s), daemon=True)
        self.thread.start()

    def _serve(self, chunks: list[bytes], pause_s: float, first_s: float) -> None:
        self.server.settimeout(5)
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        self.conns.append(conn)
        for i, chunk in enumerate(chunks):
            if self.stop.wait(pause_s if i else first_s):
                return
            try:
                conn.sendall(chunk)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("1-0:1.8.1(012345.678*kWh)", "1-0:1.8.1(012345.678*Wh)", "import_wh: 1-0:1.8.1 is in Wh, not kWh"),
        ("1-0:2.8.2(002000.002*kWh)", "1-0:2.8.2(002000.002*MWh)", "export_wh: 1-0:2.8.2 is in MWh, not kWh"),
        ("1-0:2.7.0(02.345*kW)", "1-0:2.7.0(02.345*W)", "power_w: 1-0:2.7.0 is in W, not kW"),
    ],
)
def test_a_register_in_the_wrong_unit_is_refused_not_read_1000x(old, new, says):
    with pytest.raises(MeterValueUnavailable) as caught:
        read_once(with_line(old, new))
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-12345.678", "import_wh: 1-0:1.8.1 is -12345.678 kWh: a counter cannot be negative"),
        ("NaN", "import_wh: 1-0:1.8.1 is NaN, not a number"),
        ("Infinity", "import_wh: 1-0:1.8.1 is Infinity, not a number"),
    ],
)
def test_a_counter_present_but_not_usable_says_which_and_why(value, says):
    with pytest.raises(MeterValueUnavailable) as caught:
        read_once(with_line("1-0:1.8.1(012345.678*kWh)", f"1-0:1.8.1({value}*kWh)"))
    assert says in str(caught.value) and "not in the telegram" not in str(caught.value)
    assert caught.value.names == ("import_wh",)


def test_a_missing_counter_still_says_it_is_not_in_the_telegram():
    with pytest.raises(MeterValueUnavailable, match="export_wh: 1-0:2.8.1 is not in the telegram"):
        read_once(with_line("1-0:2.8.1(000100.001*kWh)\r\n", ""))


def test_telegrams_with_lf_line_ends_say_so():
    dongle = OneShotDongle(hand_telegram().replace(b"\r\n", b"\n") * 3)
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=0.5, retries=0) as reader:
            with pytest.raises(MeterFramingError) as caught:
                reader.read()
    finally:
        dongle.close()
    assert "bytes arrive but no complete telegram" in str(caught.value)
    assert "CR LF" in str(caught.value)


def test_silence_and_a_telegram_cut_off_read_differently():
    dongle = OneShotDongle(b"")
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=0.3, retries=0) as reader:
            with pytest.raises(MeterTimeout, match="no telegram arrived within 0.3 s"):
                reader.read()
    finally:
        dongle.close()
    dongle = OneShotDongle(hand_telegram()[:100])
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=0.3, retries=0) as reader:
            with pytest.raises(MeterTimeout, match="bytes arrived but no complete telegram"):
                reader.read()
    finally:
        dongle.close()


def test_a_telegram_split_across_the_deadline_is_completed_by_the_retry():
    """The retry keeps the connection and the half telegram (the old code reconnected and lost it,
    and this dongle, like a real meter, sends the rest only once)."""
    data = hand_telegram()
    dongle = PacedDongle([data[:200], data[200:]], pause_s=1.3)
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=1.0, retries=1) as reader:
            sample = reader.read()
    finally:
        dongle.close()
    assert sample.import_wh == 12_345_678 + 654_321


class _Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_telegram_whose_time_does_not_change_is_stale():
    """A dongle replaying a telegram stamped 2019-01-01: read as usual at first, stale once the same
    time came in three reads over a minute (STALE_AFTER_S) of the agent's clock; a new time ends it."""
    old = with_line("0-0:1.0.0(250621120000S)", "0-0:1.0.0(190101000000W)")
    new = with_line("0-0:1.0.0(250621120000S)", "0-0:1.0.0(250621120010S)")
    dongle = PacedDongle([old] * 4 + [new], pause_s=0.05)
    clock = _Clock()
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=1, retries=0, clock=clock) as reader:
            assert reader.read().import_wh == 12_345_678 + 654_321
            clock.now += 30
            reader.read()  # the same time twice: not yet stale
            clock.now += 30
            with pytest.raises(MeterValueUnavailable, match=r"has not changed for 60 s.*stale") as caught:
                reader.read()
            assert "2018-12-31 23:00:00+00:00" in str(caught.value)  # 190101000000W in UTC
            with pytest.raises(MeterValueUnavailable, match="stale"):
                reader.read()
            clock.now += 5
            assert reader.read().import_wh == 12_345_678 + 654_321  # the time moved: live again
    finally:
        dongle.close()


def test_a_meter_whose_telegrams_repeat_within_a_minute_is_not_stale():
    """A DSMR 4 meter read through a dongle that repeats each telegram until the next (10 s): the
    same time in several reads, but not for a minute."""
    old = with_line("0-0:1.0.0(250621120000S)", "0-0:1.0.0(250621120000S)")
    dongle = PacedDongle([old] * 5, pause_s=0.05)
    clock = _Clock()
    try:
        with P1Reader(TcpTarget("127.0.0.1", dongle.port), timeout_s=1, retries=0, clock=clock) as reader:
            for _ in range(5):
                reader.read()
                clock.now += 5
    finally:
        dongle.close()


def _p1_config(port: int) -> MeterConfig:
    return MeterConfig(
        profile="p1-dsmr5",
        host="127.0.0.1",
        port=port,
        serial_device=None,
        baudrate=None,
        unit=None,
        poll_s=5,
        timeout_s=1.0,
        close_between_polls=False,
        serial=None,
        profile_dirs=(),
        source="p1",
    )


def test_the_agents_p1_reader_waits_for_a_slow_meters_telegram():
    """A telegram every 7 s (slower than the old 3 s wait and its retry, within a DSMR 4 meter's
    10 s): the agent's reader (open_reader, default timeout_s) reads both, no fault."""
    dongle = PacedDongle([hand_telegram(), hand_telegram()], pause_s=7.0)
    reader, _ = open_reader(_p1_config(dongle.port))
    try:
        reader.read()
        started = time.monotonic()
        reader.read()  # the old code: two 3 s attempts, then MeterTimeout
        assert 5.0 < time.monotonic() - started < 9.0
    finally:
        reader.close()
        dongle.close()


def test_the_agents_p1_reader_stays_fast_at_dsmr5_cadence():
    sim = P1Simulator(Household(pv_kwp=5.0, annual_kwh=3500.0, seed=7), interval_s=0.2).start()
    reader, _ = open_reader(_p1_config(sim.port))
    try:
        reader.read()
        for _ in range(3):
            started = time.monotonic()
            reader.read()
            assert time.monotonic() - started < 1.0
    finally:
        reader.close()
        sim.stop()
