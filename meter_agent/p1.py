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

Every telegram's CRC16 is checked by dsmr-parser (``TelegramParser(V5)``). Faults are the
Modbus reader's ``MeterError`` subclasses, so the agent reports and retries them the same way:
``MeterTimeout`` (no complete telegram in time), ``MeterFramingError`` (CRC mismatch or an
unparsable telegram), ``MeterConnectionError`` (cannot connect/open, or the dongle closed the
connection) and ``MeterValueUnavailable`` (a counter or the power is missing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal

from meter_agent.byte_stream import ByteStream, PushMeterReader, StreamSerialTarget, StreamTarget
from meter_agent.modbus_reader import (
    MeterError,
    MeterFramingError,
    MeterSample,
    MeterTimeout,
    MeterValueUnavailable,
)

P1_BAUDRATE = 115_200  # DSMR 5 (DSMR 2.2/3 used 9600 7E1)
MAX_BUFFER_CHARS = 64_000  # a telegram is < 2 kB; anything longer without an end is garbage
PROFILE_NAME = "p1-dsmr5"

# (quantity, OBIS name in dsmr-parser's V5 specification)
IMPORT_NAMES = ("ELECTRICITY_USED_TARIFF_1", "ELECTRICITY_USED_TARIFF_2")
EXPORT_NAMES = ("ELECTRICITY_DELIVERED_TARIFF_1", "ELECTRICITY_DELIVERED_TARIFF_2")
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


class P1Reader(PushMeterReader):
    """Reads a P1 port (see the module docstring). Not thread-safe: one reader per thread."""

    def __init__(
        self,
        target: StreamTarget,
        timeout_s: float = 3.0,
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

    @property
    def where(self) -> str:
        return f"P1 meter at {self.target.describe()}"

    # ---------------------------------------------------------------- public

    def _read_newest(self) -> MeterSample:
        """The newest complete telegram as a sample (``read()`` retries; PushMeterReader)."""
        return self._sample(self._newest_telegram())

    # ---------------------------------------------------------------- telegrams

    def _newest_telegram(self) -> str:
        """Read until at least one complete telegram arrived and no more bytes are waiting
        (telegrams queue up between polls: the newest one is the reading)."""
        if not self._stream.is_open:  # a new connection: nothing half-read carries over
            self._buffer = self._buffer_type()
            self._stream.open()
        deadline = time.monotonic() + self.timeout_s
        newest: str | None = None
        while True:
            wait = 0.0 if newest is not None else deadline - time.monotonic()
            if wait < 0:
                raise MeterTimeout(f"{self.where}: no complete telegram within {self.timeout_s:g} s")
            chunk = self._stream.receive(wait)
            if chunk is None:  # nothing more waiting
                if newest is not None:
                    return newest
                continue
            self._buffer.append(chunk.decode("ascii", errors="replace"))
            for telegram in self._buffer.get_all():
                newest = telegram
            if len(self._buffer._buffer) > MAX_BUFFER_CHARS:  # no telegram end in sight
                self._buffer = self._buffer_type()
                raise MeterFramingError(f"{self.where}: {MAX_BUFFER_CHARS} characters without a telegram")

    def _sample(self, telegram: str) -> MeterSample:
        from dsmr_parser.exceptions import InvalidChecksumError, ParseError

        try:
            parsed = self._parser.parse(telegram, throw_ex=True)
        except InvalidChecksumError:
            raise MeterFramingError(f"{self.where}: telegram CRC mismatch (garbled telegram)") from None
        except ParseError as exc:
            raise MeterFramingError(f"{self.where}: unparsable telegram ({exc})") from None
        except Exception as exc:  # bytes from the wire must never crash the agent
            raise MeterFramingError(f"{self.where}: unparsable telegram ({type(exc).__name__})") from None
        self.telegrams_read += 1

        def value(name: str) -> Decimal | None:
            obj = getattr(parsed, name, None)
            raw = None if obj is None else getattr(obj, "value", None)
            return raw if isinstance(raw, Decimal) and raw.is_finite() else None

        imports = [value(n) for n in IMPORT_NAMES]
        exports = [value(n) for n in EXPORT_NAMES]
        power_in, power_out = value("CURRENT_ELECTRICITY_USAGE"), value("CURRENT_ELECTRICITY_DELIVERY")
        missing = []
        if None in imports or any(v < 0 for v in imports if v is not None):
            missing.append("import_wh")
        if None in exports or any(v < 0 for v in exports if v is not None):
            missing.append("export_wh")
        if power_in is None or power_out is None:
            missing.append("power_w")
        if missing:
            raise MeterValueUnavailable(
                f"{self.where}: {', '.join(missing)} not in the telegram (1.8.1/1.8.2, 2.8.1/2.8.2, "
                "1.7.0/2.7.0)",
                tuple(missing),
            )
        assert power_in is not None and power_out is not None

        def phases(names: tuple[str, ...], minus: tuple[str, ...] | None = None) -> tuple[float | None, ...]:
            out: list[float | None] = []
            for i, name in enumerate(names):
                v = value(name)
                if v is not None and minus is not None:
                    other = value(minus[i])
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
            import_wh=_wh(sum(imports)),  # type: ignore[arg-type]
            export_wh=_wh(sum(exports)),  # type: ignore[arg-type]
            voltage_v=phases(PHASE_NAMES["voltage"]),
            current_a=phases(PHASE_NAMES["current"]),
            phase_power_w=phases(PHASE_NAMES["power_in"], PHASE_NAMES["power_out"]),
            frequency_hz=None,
            serial=serial or None,
            profile=PROFILE_NAME,
            unit_id=0,
        )


__all__ = ["P1Reader", "P1SerialTarget", "decode_equipment_id", "MeterError"]
