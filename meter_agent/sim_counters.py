"""What every simulated meter of the push and network sources shares (P1, SML, MQTT, Shelly HTTP):
the energy counters it integrates from its household's net power, and the faults injected into
it. Each simulator adds only how its device talks.

The starting counters depend on the seed, so several simulated meters do not read alike.
"""

from __future__ import annotations

import threading
import time

from meter_agent.clock import SimClock
from meter_agent.household import Household, integrate_net_energy
from meter_agent.push_server import PushServer

INTEGRATION_STEP_S = 60.0


class SimulatedMeter:
    """Counters (Wh) that follow ``household`` on ``clock``, and a set of injected faults.

    Subclasses name their ``FAULT_KINDS`` and may override :meth:`_count` (e.g. per tariff),
    :meth:`_totals`, :meth:`_serial` and the fault hooks."""

    FAULT_KINDS: tuple[str, ...] = ()

    def _init_meter(
        self,
        household: Household,
        clock: SimClock | None,
        start_time: float | None,
        speed: float,
        seed: int,
        import_wh: float | None,
        export_wh: float | None,
    ) -> tuple[float, float]:
        """Set up the clock, lock, faults and counters; return the starting (import, export) Wh."""
        self.household = household
        self.clock = clock or SimClock(time.time() if start_time is None else start_time, speed)
        self._lock = threading.RLock()
        self._faults: set[str] = set()
        self._import = float(1_000_000 + 7919 * (seed % 1000)) if import_wh is None else float(import_wh)
        self._export = float(400_000 + 3571 * (seed % 1000)) if export_wh is None else float(export_wh)
        self._integrated_to = self.clock.now()
        return self._import, self._export

    # ---------------------------------------------------------------- counters

    def _advance_to(self, now: float) -> None:
        """Integrate the household's energy up to ``now`` into the counters."""
        with self._lock:
            if now <= self._integrated_to:
                return
            imported, exported = integrate_net_energy(
                self.household, self._integrated_to, now, INTEGRATION_STEP_S
            )
            self._count(imported, exported, now)
            self._integrated_to = now

    def _count(self, imported: float, exported: float, now: float) -> None:
        self._import += imported
        self._export += exported

    def _totals(self) -> tuple[float, float]:
        """The meter's total import and export (Wh)."""
        return self._import, self._export

    def _serial(self) -> str | None:
        """The identity the device reports, if it reports one."""
        return None

    def truth(self) -> dict[str, float | str]:
        """What the meter measures now: power (W, > 0 import), total import/export (Wh), serial."""
        with self._lock:
            now = self.clock.now()
            self._advance_to(now)
            imported, exported = self._totals()
            out: dict[str, float | str] = {
                "power_w": self.household.net_power_w(now),
                "import_wh": imported,
                "export_wh": exported,
            }
            serial = self._serial()
            if serial is not None:
                out["serial"] = serial
            return out

    # ---------------------------------------------------------------- faults

    def inject(self, kind: str) -> None:
        """Start a fault (see the simulator's module docstring); it lasts until ``clear_faults()``."""
        if kind not in self.FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (use {', '.join(self.FAULT_KINDS)})")
        with self._lock:
            self._faults.add(kind)
            self._fault_started(kind)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._faults_cleared()

    def _fault_started(self, kind: str) -> None:
        """Called (under the lock) when a fault starts."""

    def _faults_cleared(self) -> None:
        """Called after the faults were cleared."""


class PushedMeter(SimulatedMeter):
    """A simulated meter that pushes frames by itself (P1, SML) through a PushServer: TCP or a
    pty, a frame every ``interval_s``; the "disconnect" fault refuses and drops clients."""

    def _init_push(self, interval_s: float, host: str, port: int, pty: bool, name: str) -> None:
        self._server = PushServer(
            self._next_data,
            interval_s,
            host=host,
            port=port,
            pty=pty,
            name=name,
            refuse=lambda: "disconnect" in self._faults,
        )

    def _next_data(self) -> bytes | None:
        """The bytes to push now (a frame, noise, or nothing)."""
        raise NotImplementedError

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def device(self) -> str | None:
        return self._server.device

    @property
    def use_pty(self) -> bool:
        return self._server.use_pty

    @property
    def interval_s(self) -> float:
        return self._server.interval_s

    def start(self) -> PushedMeter:
        """Open the TCP port (or the pty) and start pushing in a background thread."""
        if self._server.running:
            raise RuntimeError("simulator already started")
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop pushing, close every connection (and the pty) and join the thread."""
        self._server.stop()

    def __enter__(self) -> PushedMeter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _fault_started(self, kind: str) -> None:
        if kind == "disconnect":
            self._server.close_clients()
