"""A German smart meter's optical SML port, simulated: real SML files over TCP (an IR-head Wi-Fi
bridge) or a pty (an IR head on a serial port).

Every ``interval_s`` real seconds ``SmlSimulator`` pushes one SML file, as such meters do by
themselves: the transport's start sequence (1B1B1B1B 01010101), three SML messages —
SML_PublicOpen.Res, SML_GetList.Res with the meter's values, SML_Close.Res — each with its own
CRC16, zero padding to a multiple of four bytes, and the end sequence (1B1B1B1B 1A, the
padding count, the file's CRC16). Both CRCs are CRC-16/X.25 (initial value 0xFFFF, reflected
polynomial 0x1021, final XOR 0xFFFF), sent low byte first. Values are encoded with SML's
type-length fields (octet strings, signed/unsigned integers, lists), written here from the SML
specification's encoding rules (BSI TR-03109-1), not with smllib (the tests read the files with
smllib, so the two stay independent).

The GetList holds the manufacturer (81 81 C7 82 03 FF), the server id (1-0:0.0.9), import
1.8.0 and export 2.8.0 (Wh, scaler -1: 0.1 Wh steps), power 16.7.0 (W, signed), per-phase power
36/56/76.7.0, voltage 32/52/72.7.0, current 31/51/71.7.0 and frequency 14.7.0. The server id
(the serial the reader reports) is ten bytes laid out as seen in real meters' files: 0x0A,
0x01, three manufacturer letters, a fabrication block and a four-byte number.

Values come from a ``Household`` on a ``SimClock``, integrated as the Modbus simulator does.
Faults (``inject(kind)`` until ``clear_faults()``): ``crc`` (wrong file CRC), ``timeout`` (send
nothing), ``disconnect`` (close every connection and refuse new ones), ``missing`` (the counters
are left out), ``garbage`` (noise instead of files). ``swap_meter()`` replaces the meter.
"""

from __future__ import annotations

import os

from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.sim_counters import PushedMeter

FAULT_KINDS = ("crc", "timeout", "disconnect", "missing", "garbage")
PHASE_SHARES = (0.40, 0.33, 0.27)
MANUFACTURER = b"PWT"
ESCAPE = b"\x1b\x1b\x1b\x1b"
UNIT_WH, UNIT_W, UNIT_V, UNIT_A, UNIT_HZ = 30, 27, 35, 33, 44


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25, bit by bit (check value for b"123456789": 0x906E)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _crc_bytes(data: bytes) -> bytes:
    return crc16_x25(data).to_bytes(2, "little")  # SML sends the CRC low byte first


# ---------------------------------------------------------------- SML encoding (type-length fields)


def _tl(kind: int, length: int) -> bytes:
    """Type-length field(s) for ``length`` (for lists: the element count; for the others the
    bytes of the value plus the TL bytes themselves)."""
    if kind == 0x70:
        if length < 16:
            return bytes([0x70 | length])
        return bytes([0xF0 | (length >> 4), length & 0x0F])
    if length + 1 < 16:
        return bytes([kind | (length + 1)])
    total = length + 2  # two TL bytes
    if total >= 256:
        raise ValueError("value too long for this encoder")
    return bytes([0x80 | kind | (total >> 4), total & 0x0F])


def octets(value: bytes) -> bytes:
    return _tl(0x00, len(value)) + value


def unsigned(value: int, size: int = 1) -> bytes:
    return _tl(0x60, size) + value.to_bytes(size, "big", signed=False)


def signed(value: int, size: int = 1) -> bytes:
    return _tl(0x50, size) + value.to_bytes(size, "big", signed=True)


def sml_list(*items: bytes) -> bytes:
    return _tl(0x70, len(items)) + b"".join(items)


NONE = b"\x01"  # an optional field left out


def _int_size(value: int, is_signed: bool) -> int:
    for size in (1, 2, 4, 8):
        try:
            value.to_bytes(size, "big", signed=is_signed)
        except OverflowError:
            continue
        return size
    raise ValueError(f"{value} does not fit in 64 bits")


def list_entry(obis: bytes, unit: int | None, scaler: int | None, value: int | bytes) -> bytes:
    """SML_ListEntry: objName, status, valTime, unit, scaler, value, valueSignature."""
    if isinstance(value, bytes):
        encoded = octets(value)
    elif value < 0 or unit == UNIT_W:  # power is signed (> 0 import, < 0 export)
        encoded = signed(value, _int_size(value, True))
    else:
        encoded = unsigned(value, _int_size(value, False))
    return sml_list(
        octets(obis),
        NONE,
        NONE,
        NONE if unit is None else unsigned(unit),
        NONE if scaler is None else signed(scaler),
        encoded,
        NONE,
    )


def message(transaction: bytes, tag: int, body: bytes, group: int = 0) -> bytes:
    """SML_Message with its CRC16 over every byte before the CRC field, then endOfSmlMsg."""
    # six elements: transactionId, groupNo, abortOnError, messageBody, crc16, endOfSmlMsg
    head = _tl(0x70, 6) + octets(transaction) + unsigned(group) + unsigned(0)
    head += sml_list(unsigned(tag, 2), body)
    crc = _crc_bytes(head)
    return head + b"\x63" + crc + b"\x00"


def transport(payload: bytes, corrupt_crc: bool = False) -> bytes:
    """Wrap SML messages in the transport: escape, pad to 4 bytes, end sequence and CRC."""
    escaped = payload.replace(ESCAPE, ESCAPE + ESCAPE)
    padding = (-len(escaped)) % 4
    body = ESCAPE + b"\x01\x01\x01\x01" + escaped + b"\x00" * padding + ESCAPE + bytes([0x1A, padding])
    crc = crc16_x25(body)
    if corrupt_crc:
        crc ^= 0x5A5A
    return body + crc.to_bytes(2, "little")


def obis(a: int, b: int, c: int, d: int, e: int, f: int = 0xFF) -> bytes:
    return bytes([a, b, c, d, e, f])


class SmlSimulator(PushedMeter):
    """A simulated SML optical port (see the module docstring). Context manager or start/stop."""

    FAULT_KINDS = FAULT_KINDS

    def __init__(
        self,
        household: Household,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        pty: bool = False,
        interval_s: float = 1.0,
        speed: float = 1.0,
        start_time: float | None = None,
        clock: SimClock | None = None,
        seed: int = 0,
        meter_number: int | None = None,
        import_wh: float | None = None,
        export_wh: float | None = None,
    ) -> None:
        self.seed = seed
        self._transaction = 0
        self.meter_number = 40_000_000 + seed % 10_000 * 100 if meter_number is None else meter_number
        self._init_meter(household, clock, start_time, speed, seed, import_wh, export_wh)
        self._init_push(interval_s, host, port, pty, "sim-sml")

    # ---------------------------------------------------------------- lifecycle (PushedMeter)

    def describe(self) -> str:
        return f"SML files every {self.interval_s:g} s on {self._server.where()}, meter {self.serial}"

    # ---------------------------------------------------------------- control

    @property
    def server_id(self) -> bytes:
        return bytes([0x0A, 0x01]) + MANUFACTURER + b"\x00" + self.meter_number.to_bytes(4, "big")

    @property
    def serial(self) -> str:
        """The serial a reader reports: the server id in upper-case hex."""
        return self.server_id.hex().upper()

    def _serial(self) -> str:
        return self.serial

    def swap_meter(self, meter_number: int | None = None) -> str:
        """Replace the meter: a new server id, counters from zero."""
        with self._lock:
            self._advance_to(self.clock.now())
            self.meter_number = self.meter_number + 1 if meter_number is None else meter_number
            self._import = self._export = 0.0
            return self.serial

    # ---------------------------------------------------------------- files

    def sml_file(self) -> bytes:
        """The SML file the meter pushes now (faults applied), both CRC levels included."""
        with self._lock:
            now = self.clock.now()
            self._advance_to(now)
            power = round(self.household.net_power_w(now))
            faults = set(self._faults)
            self._transaction += 3
            base = self._transaction
            server = self.server_id
            entries = [
                list_entry(obis(0x81, 0x81, 0xC7, 0x82, 0x03), None, None, MANUFACTURER),
                list_entry(obis(1, 0, 0, 0, 9), None, None, server),
            ]
            if "missing" not in faults:
                entries += [
                    list_entry(obis(1, 0, 1, 8, 0), UNIT_WH, -1, round(self._import * 10)),
                    list_entry(obis(1, 0, 2, 8, 0), UNIT_WH, -1, round(self._export * 10)),
                ]
            entries.append(list_entry(obis(1, 0, 16, 7, 0), UNIT_W, 0, power))
            for i, share in enumerate(PHASE_SHARES):
                phase_power = power * share
                voltage = 230.0 + 1.5 * (i - 1)
                entries += [
                    list_entry(obis(1, 0, 36 + 20 * i, 7, 0), UNIT_W, 0, round(phase_power)),
                    list_entry(obis(1, 0, 32 + 20 * i, 7, 0), UNIT_V, -1, round(voltage * 10)),
                    list_entry(
                        obis(1, 0, 31 + 20 * i, 7, 0), UNIT_A, -2, round(abs(phase_power) / voltage * 100)
                    ),
                ]
            entries.append(list_entry(obis(1, 0, 14, 7, 0), UNIT_HZ, -1, 500))
            seconds = int(now) & 0xFFFFFFFF
        file_id = (base & 0xFFFFFFFF).to_bytes(4, "big")
        open_res = sml_list(NONE, NONE, octets(file_id), octets(server), NONE, NONE)
        get_list = sml_list(
            NONE,
            octets(server),
            octets(obis(1, 0, 98, 10, 0xFF)),  # list name 0100620AFFFF, as meters send
            sml_list(unsigned(1), unsigned(seconds, 4)),  # actSensorTime: secIndex
            sml_list(*entries),
            NONE,
            NONE,
        )
        close_res = sml_list(NONE)
        payload = (
            message((base + 0).to_bytes(4, "big"), 0x0101, open_res)
            + message((base + 1).to_bytes(4, "big"), 0x0701, get_list)
            + message((base + 2).to_bytes(4, "big"), 0x0201, close_res)
        )
        return transport(payload, corrupt_crc="crc" in faults)

    def _next_data(self) -> bytes | None:
        with self._lock:
            faults = set(self._faults)
        if "timeout" in faults or "disconnect" in faults:
            return None
        if "garbage" in faults:
            return os.urandom(300).replace(b"\x1b", b"\x2b")
        return self.sml_file()
