"""A DSMR 5 smart meter's P1 port, simulated: real telegrams over TCP (a P1 Wi-Fi dongle) or a pty.

``P1Simulator`` writes one DSMR 5 telegram every ``interval_s`` real seconds (1 s on a real
DSMR 5 meter) to every connected TCP client, or to a pseudo-terminal whose slave side
(``sim.device``) a reader opens like a P1 cable's /dev/ttyUSB0. Telegrams carry the header,
version 50, the timestamp (Dutch local time, S/W), the equipment identifier 0-0:96.1.1
(hex-encoded ASCII, as meters send it), import and export per tariff (1.8.1/1.8.2,
2.8.1/2.8.2 in kWh with 3 decimals), the active tariff, power delivered/received (1.7.0/2.7.0
in kW), per-phase voltage, current and power, and the CRC16 over '/' to '!' (CRC-16/ARC,
4 upper-case hex digits), as in the DSMR 5.0.2 P1 companion standard.

Values come from a ``Household`` on a ``SimClock``, integrated as the Modbus simulator does
(import and export only grow). Tariff 1 (low) counts from 23:00 to 07:00 local time and at
weekends, tariff 2 (normal) otherwise.

Faults (``inject(kind)`` until ``clear_faults()``): ``crc`` (wrong checksum), ``timeout``
(send nothing), ``disconnect`` (close every client connection), ``missing`` (the counters
are left out of the telegram), ``garbage`` (noise instead of telegrams).
``swap_meter()`` replaces the meter: new equipment identifier, counters from zero.
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.sim_counters import PushedMeter

FAULT_KINDS = ("crc", "timeout", "disconnect", "missing", "garbage")
PHASE_SHARES = (0.40, 0.33, 0.27)
HEADER = "/PWT5\\2PW-P1-SIM-1"  # manufacturer flag (3 letters), baud id 5, '\2', type


def crc16_arc(text: str) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, initial value 0) of an ASCII text."""
    crc = 0
    for byte in text.encode("ascii"):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _local(now: float) -> tuple[dt.datetime, str]:
    try:
        zone = ZoneInfo("Europe/Amsterdam")
    except ZoneInfoNotFoundError:  # no time zone data: UTC, marked as winter time
        return dt.datetime.fromtimestamp(now, dt.UTC), "W"
    local = dt.datetime.fromtimestamp(now, zone)
    return local, "S" if local.dst() else "W"


def tariff_at(now: float) -> int:
    """1 (low) nights 23:00-07:00 and at weekends, else 2 (normal), Dutch local time."""
    local, _ = _local(now)
    return 1 if local.weekday() >= 5 or local.hour >= 23 or local.hour < 7 else 2


class P1Simulator(PushedMeter):
    """A simulated P1 port (see the module docstring). Use as a context manager or start/stop."""

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
        meter_serial: str | None = None,
        import_wh: float | None = None,
        export_wh: float | None = None,
    ) -> None:
        self.seed = seed
        self._swaps = 0
        self.meter_serial = meter_serial or self._make_serial(0)
        total_import, total_export = self._init_meter(
            household, clock, start_time, speed, seed, import_wh, export_wh
        )
        # per tariff (1, 2): a real meter's registers are split; the sum is what the agent counts
        self._import = [total_import * 0.4, total_import * 0.6]
        self._export = [total_export * 0.3, total_export * 0.7]
        self._init_push(interval_s, host, port, pty, "sim-p1")

    # ---------------------------------------------------------------- lifecycle (PushedMeter)

    @property
    def telegrams_sent(self) -> int:
        return self._server.sent

    def describe(self) -> str:
        """One line saying what is served where."""
        return (
            f"P1 (DSMR 5) telegrams every {self.interval_s:g} s on {self._server.where()}, "
            f"meter {self.meter_serial}"
        )

    # ---------------------------------------------------------------- control

    def _serial(self) -> str:
        return self.meter_serial

    def swap_meter(self, serial: str | None = None) -> str:
        """Replace the meter: a new equipment identifier, counters from zero."""
        with self._lock:
            self._advance_to(self.clock.now())
            self._swaps += 1
            self.meter_serial = serial or self._make_serial(self._swaps)
            self._import = [0.0, 0.0]
            self._export = [0.0, 0.0]
            return self.meter_serial

    def _totals(self) -> tuple[float, float]:
        return sum(self._import), sum(self._export)

    # ---------------------------------------------------------------- telegrams

    def _make_serial(self, index: int) -> str:
        return f"E00{20240000 + (self.seed % 10000) * 100 + index:014d}"

    def _count(self, imported: float, exported: float, now: float) -> None:
        slot = tariff_at(now) - 1  # the tariff register that counts now
        self._import[slot] += imported
        self._export[slot] += exported

    def telegram(self) -> str:
        """The telegram the meter sends now (faults applied), CRC included."""
        with self._lock:
            now = self.clock.now()
            self._advance_to(now)
            power = self.household.net_power_w(now)
            local, season = _local(now)
            faults = set(self._faults)
            lines = [
                HEADER,
                "",
                "1-3:0.2.8(50)",
                f"0-0:1.0.0({local:%y%m%d%H%M%S}{season})",
                f"0-0:96.1.1({self.meter_serial.encode('ascii').hex().upper()})",
            ]
            if "missing" not in faults:
                lines += [
                    f"1-0:1.8.1({self._import[0] / 1000:010.3f}*kWh)",
                    f"1-0:1.8.2({self._import[1] / 1000:010.3f}*kWh)",
                    f"1-0:2.8.1({self._export[0] / 1000:010.3f}*kWh)",
                    f"1-0:2.8.2({self._export[1] / 1000:010.3f}*kWh)",
                ]
            lines += [
                f"0-0:96.14.0({tariff_at(now):04d})",
                f"1-0:1.7.0({max(power, 0.0) / 1000:06.3f}*kW)",
                f"1-0:2.7.0({max(-power, 0.0) / 1000:06.3f}*kW)",
                "0-0:96.7.21(00004)",
                "0-0:96.7.9(00002)",
            ]
            for i, share in enumerate(PHASE_SHARES):
                phase_power = power * share
                voltage = 230.0 + 1.5 * (i - 1)
                lines += [
                    f"1-0:{32 + 20 * i}.7.0({voltage:05.1f}*V)",
                    f"1-0:{31 + 20 * i}.7.0({round(abs(phase_power) / voltage):03d}*A)",
                    f"1-0:{21 + 20 * i}.7.0({max(phase_power, 0.0) / 1000:06.3f}*kW)",
                    f"1-0:{22 + 20 * i}.7.0({max(-phase_power, 0.0) / 1000:06.3f}*kW)",
                ]
        body = "\r\n".join(lines) + "\r\n!"
        crc = crc16_arc(body)
        if "crc" in faults:
            crc ^= 0x5A5A
        return f"{body}{crc:04X}\r\n"

    def _next_data(self) -> bytes | None:
        """What the server writes next: a telegram, noise, or nothing (timeout, disconnect)."""
        with self._lock:
            faults = set(self._faults)
        if "timeout" in faults or "disconnect" in faults:
            return None
        data = os.urandom(300).replace(b"/", b"?").replace(b"!", b"?") if "garbage" in faults else b""
        return data or self.telegram().encode("ascii")
