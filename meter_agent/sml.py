"""Read a German smart meter's SML data (the optical "info" port, read with an IR head) with smllib.

Modern German meters (moderne Messeinrichtung, eHZ) push an SML file every one to four seconds
through their optical port: an IR read head turns it into bytes on a serial port (most heads
9600 8N1) or, through an IR-head-to-Wi-Fi bridge (Tasmota, ser2net, ...), on a TCP socket.
``SmlReader`` keeps the connection open, and each ``read()`` returns the newest complete SML
file as a ``MeterSample``, the same type the Modbus and P1 readers return:

* import = OBIS 1-0:1.8.0 and export = 1-0:2.8.0 (unit Wh, times 10^scaler), rounded half-even
  to whole Wh;
* power = 1-0:16.7.0 (W, signed: > 0 imports, < 0 exports on a bidirectional meter). Many
  meters send it only after the grid operator's PIN unlocked the extended data set;
* per-phase power 36/56/76.7.0, voltage 32/52/72.7.0, current 31/51/71.7.0 and frequency
  14.7.0 where the meter sends them;
* serial = the meter's **server id** (the SML_GetList.Res serverId; else the
  SML_PublicOpen.Res serverId; else the value of 1-0:0.0.9), as upper-case hex. It is the
  meter's own identification, the same in every file it sends (for example
  ``0A01445A47000282C0B0``: the manufacturer letters ``DZG`` are bytes 3-5).

The transport CRC16 (X.25) of every file is checked by smllib's ``SmlStreamReader``; a file
whose CRC does not match is a ``MeterFramingError``. Faults are the Modbus reader's
``MeterError`` subclasses, so the agent reports and retries them the same way:
``MeterTimeout`` (nothing arrived in time), ``MeterFramingError`` (bytes but no valid SML file:
CRC mismatch, unparsable, noise), ``MeterConnectionError`` (cannot connect/open, or the bridge
closed the connection) and ``MeterValueUnavailable`` (a counter or the power is missing, not a
number or in an unexpected unit, or a counter is negative or above 10 GWh, ``probe.MAX_COUNTER_WH``:
the message says which).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from meter_agent.byte_stream import ByteStream, PushMeterReader, StreamSerialTarget, StreamTarget
from meter_agent.modbus_reader import (
    MeterFramingError,
    MeterSample,
    MeterTimeout,
    MeterValueUnavailable,
)
from meter_agent.probe import counter_problem

SML_BAUDRATE = 9600  # what most IR heads on German meters' optical ports use (8N1)
PROFILE_NAME = "sml"
UNIT_WH, UNIT_W, UNIT_V, UNIT_A, UNIT_HZ = 30, 27, 35, 33, 44  # DLMS unit codes used by SML
UNIT_NAMES = {UNIT_WH: "Wh", UNIT_W: "W", UNIT_V: "V", UNIT_A: "A", UNIT_HZ: "Hz"}

# OBIS C.D.E (A = 1, electricity) -> (quantity, expected unit)
IMPORT_OBIS, EXPORT_OBIS, POWER_OBIS = "1.8.0", "2.8.0", "16.7.0"
PHASE_OBIS = {
    "phase_power_w": (("36.7.0", "56.7.0", "76.7.0"), UNIT_W),
    "voltage_v": (("32.7.0", "52.7.0", "72.7.0"), UNIT_V),
    "current_a": (("31.7.0", "51.7.0", "71.7.0"), UNIT_A),
}
FREQUENCY_OBIS = "14.7.0"
SERIAL_OBIS = "0100000009ff"  # 1-0:0.0.9 device identification (server id)


def SmlSerialTarget(device: str, baudrate: int = SML_BAUDRATE) -> StreamSerialTarget:  # noqa: N802
    """An IR head on a serial device (default 9600 8N1)."""
    return StreamSerialTarget(device, baudrate)


def _wh(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


class SmlReader(PushMeterReader):
    """Reads an SML meter (see the module docstring). Not thread-safe: one reader per thread."""

    def __init__(
        self,
        target: StreamTarget,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        retries: int = 1,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        from smllib import SmlStreamReader

        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.clock = clock
        self._stream_type = SmlStreamReader
        self._parser = SmlStreamReader()
        self._stream = ByteStream(target, self.where, timeout_s)
        self.files_read = 0

    @property
    def where(self) -> str:
        return f"SML meter at {self.target.describe()}"

    # ---------------------------------------------------------------- public

    def _read_newest(self) -> MeterSample:
        """The newest complete SML file as a sample (``read()`` retries; PushMeterReader)."""
        return self._sample(self._newest_frame())

    def _after_close(self) -> None:
        self._parser = self._stream_type()

    # ---------------------------------------------------------------- frames

    def _newest_frame(self) -> Any:
        """Read until at least one complete SML file arrived and no more bytes are waiting (files
        queue up between polls: the newest one is the reading). A file with a bad CRC counts as
        the newest only when no good file follows it."""
        from smllib.errors import CrcError

        deadline = time.monotonic() + self.timeout_s
        newest: Any = None
        crc_error: CrcError | None = None
        got_bytes = False
        while True:
            done = newest is not None or crc_error is not None
            wait = 0.0 if done else deadline - time.monotonic()
            if wait < 0:
                if got_bytes:
                    raise MeterFramingError(
                        f"{self.where}: bytes arrived but no complete SML file within {self.timeout_s:g} s "
                        "(check the IR head's position and baud rate)"
                    )
                raise MeterTimeout(f"{self.where}: nothing arrived within {self.timeout_s:g} s")
            chunk = self._stream.receive(wait)
            if chunk is None:  # nothing more waiting
                if newest is not None:
                    return newest
                if crc_error is not None:
                    raise MeterFramingError(f"{self.where}: SML file CRC mismatch (garbled file)")
                continue
            got_bytes = True
            self._parser.add(chunk)
            for _ in range(1000):  # bounded: each pass consumes one file from the buffer
                try:
                    frame = self._parser.get_frame()
                except CrcError as exc:
                    crc_error, newest = exc, None
                    continue
                except Exception:  # noqa: BLE001 - bytes from the wire must never crash the agent
                    self._parser.clear()
                    raise MeterFramingError(f"{self.where}: unparsable SML transport data") from None
                if frame is None:
                    break
                newest, crc_error = frame, None

    def _sample(self, frame: Any) -> MeterSample:
        from smllib.sml import SmlGetListResponse, SmlOpenResponse

        try:
            messages = frame.parse_frame()
        except Exception as exc:  # noqa: BLE001 - any malformed content is a framing fault
            raise MeterFramingError(f"{self.where}: unparsable SML file ({type(exc).__name__})") from None
        self.files_read += 1
        entries: dict[str, Any] = {}
        serial: str | None = None
        open_server: str | None = None
        for message in messages:
            body = getattr(message, "message_body", None)
            if isinstance(body, SmlOpenResponse):
                open_server = body.server_id
            elif isinstance(body, SmlGetListResponse):
                serial = serial or body.server_id
                for entry in body.val_list or ():
                    obis = str(entry.obis)
                    if obis == SERIAL_OBIS:
                        entries["serial"] = entry
                    elif obis.startswith("01"):  # A = 1: electricity
                        entries.setdefault(entry.obis.obis_short, entry)
        if serial is None:
            serial = open_server
        if serial is None and "serial" in entries and isinstance(entries["serial"].value, str):
            serial = entries["serial"].value
        values: dict[str, Decimal] = {}
        problems: list[str] = []
        for name, obis, unit in (
            ("import_wh", IMPORT_OBIS, UNIT_WH),
            ("export_wh", EXPORT_OBIS, UNIT_WH),
            ("power_w", POWER_OBIS, UNIT_W),
        ):
            value, why = self._checked(entries.get(obis), unit)
            wrong = None if value is None or name == "power_w" else counter_problem(value)
            if value is None and why is None:
                problems.append(f"{name}: 1-0:{obis} is not in the SML file")
            elif value is None:
                problems.append(f"{name}: 1-0:{obis} {why}")
            elif wrong is not None:  # (above the bound: a scaler of +100, found in a QA pass)
                shown = value if value < 0 else f"{value:.4E}"
                problems.append(f"{name}: 1-0:{obis} is {shown} Wh: {wrong}")
            else:
                values[name] = value
        if problems:
            hint = (
                " (many meters send the power only after the grid operator's PIN is entered)"
                if "power_w: 1-0:16.7.0 is not in the SML file" in problems
                else ""
            )
            raise MeterValueUnavailable(
                f"{self.where}: {'; '.join(problems)}{hint}",
                tuple(name for name in ("import_wh", "export_wh", "power_w") if name not in values),
            )

        def phases(obis_codes: tuple[str, ...], unit: int) -> tuple[float | None, ...]:
            out = [self._value(entries.get(code), unit) for code in obis_codes]
            while out and out[-1] is None:  # a one-phase meter sends L1 only
                out.pop()
            return tuple(None if v is None else float(v) for v in out)

        frequency = self._value(entries.get(FREQUENCY_OBIS), UNIT_HZ)
        return MeterSample(
            time=int(self.clock()),
            power_w=_wh(values["power_w"]),
            import_wh=_wh(values["import_wh"]),
            export_wh=_wh(values["export_wh"]),
            voltage_v=phases(*PHASE_OBIS["voltage_v"]),
            current_a=phases(*PHASE_OBIS["current_a"]),
            phase_power_w=phases(*PHASE_OBIS["phase_power_w"]),
            frequency_hz=None if frequency is None else float(frequency),
            serial=serial.upper() if serial else None,
            profile=PROFILE_NAME,
            unit_id=0,
        )

    @classmethod
    def _value(cls, entry: Any, unit: int) -> Decimal | None:
        """An entry's value in ``unit`` (value x 10^scaler), or None when absent, not a number or
        in another unit."""
        return cls._checked(entry, unit)[0]

    @staticmethod
    def _checked(entry: Any, unit: int) -> tuple[Decimal | None, str | None]:
        """(value x 10^scaler, None) for an entry in ``unit``; (None, None) when absent; (None,
        why) when it is there but not a number or in another unit."""
        if entry is None:
            return None, None
        if isinstance(entry.value, bool) or not isinstance(entry.value, int):
            return None, f"is {entry.value!r}, not a number"
        if entry.unit is not None and entry.unit != unit:
            got = UNIT_NAMES.get(entry.unit, f"unit code {entry.unit}")
            return None, f"is in {got}, not {UNIT_NAMES[unit]}"
        return Decimal(entry.value).scaleb(entry.scaler or 0), None


__all__ = ["SmlReader", "SmlSerialTarget", "SML_BAUDRATE", "PROFILE_NAME"]
