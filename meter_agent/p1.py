"""Read a smart meter's P1 port (DSMR 4/5, the Netherlands, Belgium, Luxembourg) with dsmr-parser.

The P1 port pushes one ASCII telegram every second (DSMR 5; every 10 s on DSMR 4) on a serial
line (115200 8N1 on DSMR 5) or, through a P1-to-Wi-Fi dongle, on a TCP socket. ``P1Reader``
keeps the connection open, and each ``read()`` returns the newest complete telegram as a
``MeterSample``, the same type the Modbus reader returns, so the agent treats both alike:

* import = 1-0:1.8.1 + 1-0:1.8.2 (kWh, both tariffs), export = 1-0:2.8.1 + 1-0:2.8.2, in Wh;
* power = 1-0:1.7.0 − 1-0:2.7.0 (kW delivered to minus received from the home), in W;
* per-phase voltage (32/52/72.7.0), current (31/51/71.7.0) and power (21/41/61.7.0 minus
  22/42/62.7.0) where the meter sends them;
* serial = the meter's equipment identifier 0-0:96.1.1, which DSMR sends hex-encoded: it is
  decoded to the printable serial on the meter's nameplate when it decodes cleanly.

Every telegram's CRC16 is checked by dsmr-parser (``TelegramParser(V5)``), and every unit: the
counters must be in kWh and the power in kW (a telegram saying ``*Wh`` is refused, not read 1000x
too high). A read waits up to ``timeout_s`` (default ``TELEGRAM_WAIT_S``, 11 s: a DSMR 4 meter
sends every 10 s; a DSMR 5 read ends with the next telegram, within a second). A telegram whose
time (0-0:1.0.0) has not changed in ``STALE_READS`` reads in a row over ``STALE_AFTER_S`` seconds
is not the meter's live data (a dongle repeating an old telegram): refused as stale.

Faults are the Modbus reader's ``MeterError`` subclasses, so the agent reports and retries them
the same way: ``MeterTimeout`` (no complete telegram in time; a telegram that had begun is kept
for the retry), ``MeterFramingError`` (CRC mismatch, an unparsable telegram, or telegrams whose
lines do not end in CR LF), ``MeterConnectionError`` (cannot connect/open, or the dongle closed
the connection) and ``MeterValueUnavailable`` (a counter or the power is missing, not a number or
in the wrong unit, a counter negative or above 10 GWh (``probe.MAX_COUNTER_WH``), or the telegram
is stale: the message says which).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from meter_agent.byte_stream import ByteStream, PushMeterReader, StreamSerialTarget, StreamTarget
from meter_agent.modbus_reader import (
    MeterError,
    MeterFramingError,
    MeterSample,
    MeterTimeout,
    MeterValueUnavailable,
)
from meter_agent.probe import counter_problem

# dsmr-parser logs each line it cannot parse at ERROR, with a traceback; the reader reports it as
# one fault line instead (found in a QA pass: `peerwatt meter read --source p1` printed the trace)
logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)

P1_BAUDRATE = 115_200  # DSMR 5 (DSMR 2.2/3 used 9600 7E1)
MAX_BUFFER_CHARS = 64_000  # a telegram is < 2 kB; anything longer without an end is garbage
PROFILE_NAME = "p1-dsmr5"
TELEGRAM_WAIT_S = 11.0  # how long a read waits for a telegram: DSMR 4 sends every 10 s, DSMR 5 every 1 s
STALE_AFTER_S = 60.0  # a telegram time (0-0:1.0.0) unchanged this long (and in STALE_READS reads)
STALE_READS = 3  # ... is not live data

# (OBIS code, name in dsmr-parser's V5 specification)
IMPORT_NAMES = (("1-0:1.8.1", "ELECTRICITY_USED_TARIFF_1"), ("1-0:1.8.2", "ELECTRICITY_USED_TARIFF_2"))
EXPORT_NAMES = (
    ("1-0:2.8.1", "ELECTRICITY_DELIVERED_TARIFF_1"),
    ("1-0:2.8.2", "ELECTRICITY_DELIVERED_TARIFF_2"),
)
POWER_IN = ("1-0:1.7.0", "CURRENT_ELECTRICITY_USAGE")
POWER_OUT = ("1-0:2.7.0", "CURRENT_ELECTRICITY_DELIVERY")
ENERGY_UNIT, POWER_UNIT = "kWh", "kW"
PHASE_UNITS = {"voltage": "V", "current": "A", "power_in": "kW", "power_out": "kW"}
# a whole telegram whose line ends are not CR LF (dsmr-parser's buffer finds only CR LF ones)
_TELEGRAM_WITHOUT_CRLF = re.compile(r"/[^/]+?![A-F0-9]{0,4}\0?\n")
PHASE_NAMES = {
    "voltage": ("INSTANTANEOUS_VOLTAGE_L1", "INSTANTANEOUS_VOLTAGE_L2", "INSTANTANEOUS_VOLTAGE_L3"),
    "current": ("INSTANTANEOUS_CURRENT_L1", "INSTANTANEOUS_CURRENT_L2", "INSTANTANEOUS_CURRENT_L3"),
    "power_in": (
        "INSTANTANEOUS_ACTIVE_POWER_L1_POSITIVE",
        "INSTANTANEOUS_ACTIVE_POWER_L2_POSITIVE",
        "INSTANTANEOUS_ACTIVE_POWER_L3_POSITIVE",
    ),
    "power_out": (
        "INSTANTANEOUS_ACTIVE_POWER_L1_NEGATIVE",
        "INSTANTANEOUS_ACTIVE_POWER_L2_NEGATIVE",
        "INSTANTANEOUS_ACTIVE_POWER_L3_NEGATIVE",
    ),
}


def P1SerialTarget(device: str, baudrate: int = P1_BAUDRATE) -> StreamSerialTarget:  # noqa: N802
    """A P1 port on a serial device (an FTDI P1 cable: /dev/ttyUSB0, or a pty in tests)."""
    return StreamSerialTarget(device, baudrate)


def decode_equipment_id(raw: str) -> str:
    """0-0:96.1.1 as sent (hex of ASCII, e.g. '4530303...') -> the printable serial, or the raw
    text when it is not hex of printable ASCII."""
    try:
        text = bytes.fromhex(raw).decode("ascii")
    except ValueError:
        return raw
    return text if text and all(0x21 <= ord(c) <= 0x7E for c in text) else raw


def _wh(value: Decimal) -> int:
    return int((value * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


def _register(parsed: Any, name: str, unit: str) -> tuple[Decimal | None, str | None]:
    """(value, None) for a register in ``unit``; (None, None) when the telegram lacks it;
    (None, why) when it is there but not a finite number or in another unit."""
    obj = getattr(parsed, name, None)
    if obj is None:
        return None, None
    raw, got = getattr(obj, "value", None), getattr(obj, "unit", None)
    if not isinstance(raw, Decimal) or not raw.is_finite():
        return None, f"is {raw}, not a number"
    if got != unit:
        return None, f"is in {got}, not {unit}"
    return raw, None


def _unparsable(telegram: str, exc: Exception) -> str:
    """Why dsmr-parser refused ``telegram``, in a few words: the first line it cannot parse on its
    own, when there is one (found in a QA pass: the fault showed dsmr-parser's raw error, a format
    string, the line and a parser object's repr)."""
    from dsmr_parser import telegram_specifications
    from dsmr_parser.exceptions import ParseError
    from dsmr_parser.parsers import TelegramParser

    lines = TelegramParser(telegram_specifications.V5, apply_checksum_validation=False)
    for number, line in enumerate(telegram.split("\r\n"), 1):
        try:
            lines.parse(f"{line}\r\n", throw_ex=True)
        except ParseError:
            return (
                f"line {number} {line[:60]!r} is not in the form its OBIS code needs (the number "
                "of values or their characters)"
            )
        except Exception:  # noqa: BLE001 - a value dsmr-parser could not convert
            return f"line {number} {line[:60]!r} holds a value that is not a number"
    if isinstance(exc, ParseError) and "CRC" in str(exc):
        return "no CRC after its '!' (a DSMR 4 or 5 telegram ends with '!' and 4 hex digits)"
    return type(exc).__name__


class P1Reader(PushMeterReader):
    """Reads a P1 port (see the module docstring). Not thread-safe: one reader per thread."""

    def __init__(
        self,
        target: StreamTarget,
        timeout_s: float = TELEGRAM_WAIT_S,
        clock: Callable[[], float] = time.time,
        retries: int = 1,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        from dsmr_parser import telegram_specifications
        from dsmr_parser.clients.telegram_buffer import TelegramBuffer
        from dsmr_parser.parsers import TelegramParser

        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.clock = clock
        self._parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
        self._buffer_type = TelegramBuffer
        self._buffer = TelegramBuffer()
        self._stream = ByteStream(target, self.where, timeout_s, peer="dongle")
        self.telegrams_read = 0
        # (last telegram time, clock() when it was first read, reads in a row that returned it)
        self._stamp: tuple[Any, float, int] | None = None

    @property
    def where(self) -> str:
        return f"P1 meter at {self.target.describe()}"

    # ---------------------------------------------------------------- public

    def _read_newest(self) -> MeterSample:
        """The newest complete telegram as a sample (``read()`` retries; PushMeterReader)."""
        return self._sample(self._newest_telegram())

    # ---------------------------------------------------------------- telegrams

    def _holds_partial_frame(self) -> bool:
        return "/" in self._buffer._buffer  # a telegram has begun: the retry may complete it

    def _newest_telegram(self) -> str:
        """Read until at least one complete telegram arrived and no more bytes are waiting
        (telegrams queue up between polls: the newest one is the reading)."""
        if not self._stream.is_open:  # a new connection: nothing half-read carries over
            self._buffer = self._buffer_type()
            self._stream.open()
        deadline = time.monotonic() + self.timeout_s
        newest: str | None = None
        got_bytes = False
        while True:
            wait = 0.0 if newest is not None else deadline - time.monotonic()
            if wait < 0:
                raise self._no_telegram(got_bytes)
            chunk = self._stream.receive(wait)
            if chunk is None:  # nothing more waiting
                if newest is not None:
                    return newest
                continue
            got_bytes = True
            self._buffer.append(chunk.decode("ascii", errors="replace"))
            for telegram in self._buffer.get_all():
                newest = telegram
            if len(self._buffer._buffer) > MAX_BUFFER_CHARS:  # no telegram end in sight
                self._buffer = self._buffer_type()
                raise MeterFramingError(f"{self.where}: {MAX_BUFFER_CHARS} characters without a telegram")

    def _no_telegram(self, got_bytes: bool) -> MeterError:
        """The fault of a read that found no complete telegram in ``timeout_s``."""
        if _TELEGRAM_WITHOUT_CRLF.search(self._buffer._buffer):
            self._buffer = self._buffer_type()
            return MeterFramingError(
                f"{self.where}: bytes arrive but no complete telegram within {self.timeout_s:g} s: the "
                "telegrams' lines do not end in CR LF (check the dongle's or ser2net's line-end setting)"
            )
        if got_bytes:
            return MeterTimeout(
                f"{self.where}: bytes arrived but no complete telegram within {self.timeout_s:g} s "
                "(a telegram runs from '/' to '!' and its CRC; check the baud rate)"
            )
        return MeterTimeout(f"{self.where}: no telegram arrived within {self.timeout_s:g} s")

    def _sample(self, telegram: str) -> MeterSample:
        from dsmr_parser.exceptions import InvalidChecksumError

        try:
            parsed = self._parser.parse(telegram, throw_ex=True)
        except InvalidChecksumError:
            raise MeterFramingError(f"{self.where}: telegram CRC mismatch (garbled telegram)") from None
        except Exception as exc:  # noqa: BLE001 - bytes from the wire must never crash the agent
            raise MeterFramingError(
                f"{self.where}: unparsable telegram: {_unparsable(telegram, exc)}"
            ) from None
        self.telegrams_read += 1

        self._check_fresh(parsed)
        problems: list[str] = []
        unusable: list[str] = []

        def quantity(name: str, registers: tuple[tuple[str, str], ...], unit: str) -> list[Decimal]:
            values = []
            for obis, attribute in registers:
                value, why = _register(parsed, attribute, unit)
                wrong = None if value is None or name == "power_w" else counter_problem(value * 1000)
                if value is None:
                    problems.append(f"{name}: {obis} {why or 'is not in the telegram'}")
                elif wrong is not None:
                    problems.append(f"{name}: {obis} is {value} {unit}: {wrong}")
                else:
                    values.append(value)
                    continue
                if name not in unusable:
                    unusable.append(name)
            return values

        imports = quantity("import_wh", IMPORT_NAMES, ENERGY_UNIT)
        exports = quantity("export_wh", EXPORT_NAMES, ENERGY_UNIT)
        power = quantity("power_w", (POWER_IN, POWER_OUT), POWER_UNIT)
        if problems:
            raise MeterValueUnavailable(f"{self.where}: {'; '.join(problems)}", tuple(unusable))
        power_in, power_out = power

        def value(name: str, unit: str) -> Decimal | None:
            return _register(parsed, name, unit)[0]

        def phases(kind: str, minus: str | None = None) -> tuple[float | None, ...]:
            out: list[float | None] = []
            for i, name in enumerate(PHASE_NAMES[kind]):
                v = value(name, PHASE_UNITS[kind])
                if v is not None and minus is not None:
                    other = value(PHASE_NAMES[minus][i], PHASE_UNITS[minus])
                    v = None if other is None else (v - other) * 1000
                out.append(None if v is None else float(v))
            while out and out[-1] is None:  # a one-phase meter sends L1 only
                out.pop()
            return tuple(out)

        equipment = getattr(parsed, "EQUIPMENT_IDENTIFIER", None)
        serial = decode_equipment_id(str(equipment.value)) if equipment is not None else None
        return MeterSample(
            time=int(self.clock()),
            power_w=_wh(power_in - power_out),
            import_wh=_wh(sum(imports, Decimal(0))),
            export_wh=_wh(sum(exports, Decimal(0))),
            voltage_v=phases("voltage"),
            current_a=phases("current"),
            phase_power_w=phases("power_in", "power_out"),
            frequency_hz=None,
            serial=serial or None,
            profile=PROFILE_NAME,
            unit_id=0,
        )

    def _check_fresh(self, parsed: Any) -> None:
        """A telegram time (0-0:1.0.0) unchanged in STALE_READS reads in a row over STALE_AFTER_S
        seconds of ``clock`` is stale: a meter's clock advances with every telegram (each read
        waits for a new one), a dongle replaying an old telegram does not."""
        obj = getattr(parsed, "P1_MESSAGE_TIMESTAMP", None)
        stamp = None if obj is None else getattr(obj, "value", None)
        if stamp is None:  # DSMR 2/3 telegrams have no time: nothing to compare
            self._stamp = None
            return
        now = self.clock()
        if self._stamp is None or self._stamp[0] != stamp:
            self._stamp = (stamp, now, 1)
            return
        _, since, reads = self._stamp
        self._stamp = (stamp, since, reads + 1)
        if reads + 1 >= STALE_READS and now - since >= STALE_AFTER_S:
            raise MeterValueUnavailable(
                f"{self.where}: the telegram's time (0-0:1.0.0: {stamp}) has not changed for "
                f"{now - since:.0f} s: not the meter's live data (stale: a dongle repeating an old "
                "telegram?)",
                ("import_wh", "export_wh", "power_w"),
            )


__all__ = ["P1Reader", "P1SerialTarget", "decode_equipment_id", "MeterError", "TELEGRAM_WAIT_S"]
