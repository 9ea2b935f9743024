"""A Modbus meter simulator that speaks a profile's real register map, with fault injection.

``MeterSimulator`` serves one meter on Modbus TCP (or RTU on a serial device) with the
pymodbus 3.16 server (``ModbusTcpServer`` / ``ModbusSerialServer`` over ``SimDevice`` /
``SimData``). The registers are the profile's: same addresses, function code, encodings, word
order and scales as the real meter, so the agent's decoding is exercised against what a real
meter sends. Where the profile describes the device's documented register tables
(``[device]``), the simulator answers every register in them on each function code the device
supports, as the real meter does: unmapped registers read 0, fixed ones (model name, system
type) their documented value, so third-party readers work against it unchanged. SunSpec is
served as the 'SunS' marker, the common model 1 and one meter model (201-204, 211-214)
followed by the 0xFFFF end marker (optionally behind an inverter's common block and model 103,
as SolarEdge inverters chain their meters); unimplemented points hold SunSpec's
"not implemented" values.

Values come from a ``Household`` at the simulated time; the import/export counters integrate
its net power (steps of at most 60 simulated seconds) and only grow. The clock runs ``speed``
simulated seconds per real second and can be paused or advanced (``sim.clock``), so tests and
the demo agree on time. The asyncio server runs in its own thread; ``start()`` / ``stop()``
are for synchronous programs and leave no task or socket behind.

Faults (``inject(kind, duration_s=None)``; duration in real seconds, None = until
``clear_faults()``): ``timeout`` (no answer), ``exception`` (Modbus exception ``code``),
``disconnect`` (the "gateway" closes the TCP connection instead of answering), ``crc``
(RTU only: corrupted CRC), ``nan`` (power and counters read NaN or the "not available"
sentinel), ``zero`` (counters read 0), ``counter_backwards`` (counters read ``amount_wh``
lower) and ``counter_reset`` (permanent: the counters restart from 0, same serial).
``swap_meter()`` replaces the meter: new serial, counters from zero. ``drop_connections()``
closes idle client sockets, as gateways do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from meter_agent.clock import SimClock
from meter_agent.household import Household, integrate_net_energy
from meter_agent.modbus_reader import SerialTarget
from meter_agent.profile import (
    INTEGER_ENCODINGS,
    SUNSPEC_END,
    SUNSPEC_MARKER,
    MeterProfile,
    SunSpecModel,
    ValueSpec,
    find_profile,
)

logging.getLogger("pymodbus").addHandler(logging.NullHandler())

FAULT_KINDS = (
    "timeout",
    "exception",
    "disconnect",
    "crc",
    "nan",
    "zero",
    "counter_backwards",
    "counter_reset",
)
CORE_VALUES = ("power_w", "import_wh", "export_wh")
INTEGRATION_STEP_S = 60.0
PHASE_SHARES = (0.40, 0.33, 0.27)  # how the simulated home's power splits over three phases

_INT_RANGES = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
    "acc32": (0, (1 << 32) - 1),
    "acc64": (0, (1 << 64) - 1),
}
# SunSpec lengths (L) of the wye/single/split/delta meter models, int+SF (20x) and float (21x).
SUNSPEC_MODEL_LENGTHS = {201: 105, 202: 105, 203: 105, 204: 105, 211: 124, 212: 124, 213: 124, 214: 124}
SUNSPEC_INVERTER_MODEL, SUNSPEC_INVERTER_LENGTH = 103, 50  # three-phase inverter (int + SF)
_SUNSPEC_COMMON_LENGTH = 66
_BASE_SCALE_FACTORS = {"voltage": -1, "current": -2, "frequency": -2, "power": 0, "import": 0, "export": 0}


class SimulatorError(RuntimeError):
    """The simulator could not start (port in use, serial device missing...)."""


@dataclass(frozen=True)
class SimTruth:
    """What the simulated meter measures at ``time`` (peerwatt sign: > 0 imports)."""

    time: float
    power_w: float
    import_wh: float
    export_wh: float
    voltage_v: tuple[float, ...]
    current_a: tuple[float, ...]
    phase_power_w: tuple[float, ...]
    frequency_hz: float
    serial: str


@dataclass
class _Fault:
    until: float | None
    code: int = 4
    values: tuple[str, ...] = CORE_VALUES
    amount_wh: float = 1000.0


class MeterSimulator:
    """A simulated meter (see the module docstring). Use as a context manager or start/stop."""

    def __init__(
        self,
        profile: str | MeterProfile,
        household: Household,
        port: int = 0,
        unit_id: int = 1,
        speed: float = 1.0,
        start_time: float | None = None,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        serial: SerialTarget | None = None,
        sunspec_model: int = 213,
        sunspec_base: int = 40000,
        sunspec_inverter: bool = False,
        meter_serial: str | None = None,
        import_wh: float | None = None,
        export_wh: float | None = None,
        profile_dirs: Iterable[str] = (),
        clock: SimClock | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, MeterProfile) else find_profile(profile, profile_dirs)
        if not 1 <= unit_id <= 247:
            raise ValueError("unit_id must be 1..247")
        if not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535 (0 = any free port)")
        self.household = household
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.serial_target = serial
        self.seed = seed
        self.clock = clock or SimClock(time.time() if start_time is None else start_time, speed)
        self._model: SunSpecModel | None = None
        if self.profile.kind == "sunspec":
            assert self.profile.sunspec is not None
            self._model = self.profile.sunspec.model(sunspec_model)
            if self._model is None:
                offered = ", ".join(str(m.model_id) for m in self.profile.sunspec.models)
                raise ValueError(
                    f"profile {self.profile.name} has no SunSpec model {sunspec_model} ({offered})"
                )
            if sunspec_base not in range(0, 65536 - 400):
                raise ValueError("sunspec_base must leave room for the model chain")
        self.sunspec_base = sunspec_base
        self.sunspec_inverter = sunspec_inverter
        self._lock = threading.RLock()
        self._faults: dict[str, _Fault] = {}
        self._swaps = 0
        self.meter_serial = meter_serial or self._make_serial(0)
        self._import_wh = float(1_000_000 + 7919 * (seed % 1000)) if import_wh is None else float(import_wh)
        self._export_wh = float(400_000 + 3571 * (seed % 1000)) if export_wh is None else float(export_wh)
        self._integrated_to = self.clock.now()
        self.requests_served = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> MeterSimulator:
        """Start serving in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"sim-meter-{self.profile.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise SimulatorError("the simulator did not start within 10 s")
        if self._error is not None:
            self._thread.join(5.0)
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join the server thread."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None and thread.is_alive():
            with suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join(10.0)
        self._thread = None
        self._loop = None

    def __enter__(self) -> MeterSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def transport_name(self) -> str:
        return "Modbus RTU" if self.serial_target else "Modbus TCP"

    def describe(self) -> str:
        """One line saying what is served where."""
        if self.serial_target is not None:
            where = self.serial_target.describe()
        else:
            where = f"{self.host}:{self.port}"
        model = f" (SunSpec model {self._model.model_id})" if self._model else ""
        # found in a QA pass: a serial was announced for maps without a serial register, which no
        # reader can see (the agent sends the nameplate serial from agent.toml for those)
        serial = (
            f"serial {self.meter_serial}"
            if self._spec("serial") is not None
            else "no serial register (the serial is typed into agent.toml)"
        )
        where = f"{self.transport_name} on {where}, unit {self.unit_id}"
        return f"{self.profile.name}{model} over {where}, {serial}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc if isinstance(exc, SimulatorError) else SimulatorError(str(exc))
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        device = self._build_device()
        if self.serial_target is not None:
            target = self.serial_target
            server: ModbusTcpServer | ModbusSerialServer = ModbusSerialServer(
                [device],
                port=target.device,
                baudrate=target.baudrate,
                parity=target.parity,
                stopbits=target.stopbits,
                trace_pdu=self._trace_pdu,
                trace_packet=self._trace_packet,
            )
            where = target.device
        else:
            server = ModbusTcpServer(
                [device],
                address=(self.host, self.port),
                trace_pdu=self._trace_pdu,
                trace_packet=self._trace_packet,
            )
            where = f"{self.host}:{self.port}"
        self._server = server
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            await server.shutdown()
            raise SimulatorError(f"cannot serve on {where} (address in use, or no such device?)") from None
        if self.serial_target is None:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        ticker = asyncio.create_task(self._tick())
        try:
            await self._stop_event.wait()
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker
            await server.shutdown()
            self._server = None

    async def _tick(self) -> None:
        while True:  # keeps the integration current between requests
            self._advance_to(self.clock.now())
            await asyncio.sleep(0.25)

    # ---------------------------------------------------------------- control

    def inject(
        self,
        kind: str,
        duration_s: float | None = None,
        *,
        code: int = 4,
        values: Iterable[str] = CORE_VALUES,
        amount_wh: float = 1000.0,
    ) -> None:
        """Start a fault (see the module docstring); ``duration_s`` in real seconds."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (one of {', '.join(FAULT_KINDS)})")
        if duration_s is not None and not duration_s > 0:
            raise ValueError("duration_s must be > 0 (or None for until clear_faults())")
        values = tuple(values)
        if kind == "crc" and self.serial_target is None:
            raise ValueError("a CRC fault needs the RTU (serial) simulator")
        if kind == "disconnect" and self.serial_target is not None:
            raise ValueError("a serial line cannot be disconnected; use 'timeout'")
        if kind == "exception" and code not in {int(c) for c in ExcCodes}:
            raise ValueError(f"unknown Modbus exception code {code}")
        if kind == "nan":
            for name in values:
                spec = self._spec(name)
                if spec is None:
                    raise ValueError(f"profile {self.profile.name} does not serve {name}")
                if spec.encoding != "float32" and not spec.not_available:
                    raise ValueError(
                        f"profile {self.profile.name}: {name} ({spec.encoding}) "
                        "has no 'not available' encoding"
                    )
        with self._lock:
            self._advance_to(self.clock.now())
            if kind == "counter_reset":
                if duration_s is not None:
                    raise ValueError("counter_reset is permanent (use 'zero' for a temporary glitch)")
                self._import_wh = self._export_wh = 0.0
                return
            until = None if duration_s is None else time.monotonic() + duration_s
            self._faults[kind] = _Fault(until=until, code=code, values=values, amount_wh=amount_wh)

    def clear_faults(self) -> None:
        """End every active fault."""
        with self._lock:
            self._faults.clear()

    def active_faults(self) -> list[str]:
        """The faults in force now."""
        return [k for k in FAULT_KINDS if self._fault(k) is not None]

    def drop_connections(self) -> None:
        """Close every client connection now, as a gateway does with idle sockets."""
        loop = self._loop
        if loop is None or self.serial_target is not None:
            return

        async def close() -> None:
            self._close_connections()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5.0)

    def swap_meter(self, serial: str | None = None) -> str:
        """Replace the meter: a new serial number and counters from zero. Returns the serial."""
        with self._lock:
            self._advance_to(self.clock.now())
            self._swaps += 1
            self.meter_serial = serial or self._make_serial(self._swaps)
            self._import_wh = self._export_wh = 0.0
            return self.meter_serial

    def truth(self) -> SimTruth:
        """The meter's true measurements now (what the registers are computed from)."""
        with self._lock:
            now = self.clock.now()
            self._advance_to(now)
            return self._truth_at(now)

    # ---------------------------------------------------------------- simulation

    def _make_serial(self, index: int) -> str:
        spec = self._spec("serial")
        number = 20240000 + (self.seed % 10000) * 100 + index
        if spec is not None and spec.encoding == "string":
            width = spec.count * 2
            return f"{number:0{width}X}"[-width:] if width <= 12 else f"PW{number:010d}"
        return str(number)

    def _spec(self, name: str) -> ValueSpec | None:
        if self._model is not None:
            if name == "serial":
                return self.profile.sunspec.serial if self.profile.sunspec else None
            return self._model.values.get(name)
        return self.profile.values.get(name)

    def _fault(self, kind: str) -> _Fault | None:
        fault = self._faults.get(kind)
        if fault is not None and fault.until is not None and time.monotonic() >= fault.until:
            with self._lock:
                self._faults.pop(kind, None)
            return None
        return fault

    def _advance_to(self, now: float) -> None:
        with self._lock:
            imported, exported = integrate_net_energy(
                self.household, self._integrated_to, now, INTEGRATION_STEP_S
            )
            self._import_wh += imported
            self._export_wh += exported
            self._integrated_to = max(self._integrated_to, now)

    @property
    def phases(self) -> int:
        """Phases the simulated meter measures (a SunSpec model may have fewer than its profile)."""
        return self._model.phases if self._model is not None else self.profile.phases

    def _truth_at(self, now: float) -> SimTruth:
        power = self.household.net_power_w(now)
        phases = self.phases
        shares = {3: PHASE_SHARES, 2: (0.5, 0.5)}.get(phases, (1.0,))
        voltages = tuple(230.0 + 1.5 * math.sin(2 * math.pi * now / 3600.0 + 2.1 * i) for i in range(phases))
        phase_power = tuple(power * share for share in shares)
        currents = tuple(abs(p) / v for p, v in zip(phase_power, voltages, strict=True))
        frequency = 50.0 + 0.02 * math.sin(2 * math.pi * now / 600.0)
        return SimTruth(
            time=now,
            power_w=power,
            import_wh=self._import_wh,
            export_wh=self._export_wh,
            voltage_v=voltages,
            current_a=currents,
            phase_power_w=phase_power,
            frequency_hz=frequency,
            serial=self.meter_serial,
        )

    def _served_values(self, truth: SimTruth) -> dict[str, float | str | None]:
        """Values in the device's own convention, with the data faults applied (None = NaN)."""
        sign = -1.0 if self.profile.invert else 1.0
        served: dict[str, float | str | None] = {
            "power_w": truth.power_w * sign,
            "import_wh": truth.import_wh,
            "export_wh": truth.export_wh,
            "frequency_hz": truth.frequency_hz,
            "serial": truth.serial,
        }
        for i in range(self.phases):
            served[f"voltage_l{i + 1}_v"] = truth.voltage_v[i]
            served[f"current_l{i + 1}_a"] = truth.current_a[i]
            served[f"power_l{i + 1}_w"] = truth.phase_power_w[i] * sign
        backwards = self._fault("counter_backwards")
        if backwards is not None:
            for name in ("import_wh", "export_wh"):
                served[name] = max(0.0, served[name] - backwards.amount_wh)  # type: ignore[operator]
        if self._fault("zero") is not None:
            served["import_wh"] = served["export_wh"] = 0.0
        nan = self._fault("nan")
        if nan is not None:
            for name in nan.values:
                served[name] = None
        return served

    # ---------------------------------------------------------------- registers

    def _encode(self, spec: ValueSpec, value: float | str | None, scale_factor: int = 0) -> list[int]:
        if value is None:
            if spec.encoding == "float32":
                return spec.encode(float("nan"))
            return spec.encode_pattern(min(spec.not_available))
        try:
            return spec.encode(value, scale_factor)
        except (struct.error, OverflowError):
            low, high = _INT_RANGES.get(spec.encoding, (-3.4e38, 3.4e38))
            raw = max(low, min(high, float(value) / float(spec.scale) / 10.0**scale_factor))  # type: ignore[arg-type]
            return spec.encode(float(raw) * float(spec.scale) * 10.0**scale_factor, scale_factor)

    def _image(self) -> dict[int, dict[int, int]]:
        """Every served register now: function code -> address -> value."""
        with self._lock:
            now = self.clock.now()
            self._advance_to(now)
            served = self._served_values(self._truth_at(now))
        if self._model is not None:
            return {3: self._sunspec_image(served)}
        content: dict[int, dict[int, int]] = {3: {}, 4: {}}
        for constant in self.profile.device.constants:
            for i, reg in enumerate(constant.spec.encode(constant.value)):
                content[constant.spec.function][constant.spec.address + i] = reg
        for name, spec in self.profile.values.items():
            for i, reg in enumerate(self._encode(spec, served.get(name))):
                content[spec.function][spec.address + i] = reg
        if not self.profile.device.tables:
            return content
        # the documented tables: every register answers, on each function code the table lists
        # (a meter that answers 3 and 4 alike serves the same content on both); unmapped read 0
        image: dict[int, dict[int, int]] = {3: {}, 4: {}}
        for table in self.profile.device.tables:
            for address in range(table.start, table.end + 1):
                value = next((content[f][address] for f in table.functions if address in content[f]), 0)
                for function in table.functions:
                    image[function][address] = value
        for function, registers in content.items():  # mapped values outside the tables still answer
            for address, value in registers.items():
                image[function].setdefault(address, value)
        return image

    def _sunspec_image(self, served: dict[str, float | str | None]) -> dict[int, int]:
        model = self._model
        assert model is not None
        image: dict[int, int] = {}

        def put(address: int, registers: Iterable[int]) -> None:
            for i, reg in enumerate(registers):
                image[address + i] = reg

        def text(value: str, count: int) -> list[int]:
            data = value.encode("ascii")[: count * 2].ljust(count * 2, b"\x00")
            return [int.from_bytes(data[i : i + 2], "big") for i in range(0, count * 2, 2)]

        def common_block(address: int, model_name: str, serial: str, maker: str = "peerwatt") -> int:
            put(address, [1, _SUNSPEC_COMMON_LENGTH])
            put(address + 2, text(maker, 16))  # Mn
            put(address + 18, text(model_name, 16))  # Md
            put(address + 34, text("", 8))  # Opt
            put(address + 42, text("1.0", 8))  # Vr
            put(address + 50, text(serial, 16))  # SN
            put(address + 66, [self.unit_id, 0x8000])  # DA, Pad
            return address + 2 + _SUNSPEC_COMMON_LENGTH

        base = self.sunspec_base
        put(base, SUNSPEC_MARKER)
        address = base + 2
        if self.sunspec_inverter:  # SolarEdge-style: the inverter's blocks come first
            address = common_block(address, "sim-inverter", f"INV{self.meter_serial}")
            put(address, [SUNSPEC_INVERTER_MODEL, SUNSPEC_INVERTER_LENGTH])
            put(address + 2, [0x8000] * SUNSPEC_INVERTER_LENGTH)
            address += 2 + SUNSPEC_INVERTER_LENGTH
        layout = self.profile.sunspec
        assert layout is not None
        address = common_block(
            address,
            layout.device_model or f"sim-meter {model.model_id}",
            str(served["serial"]),
            layout.manufacturer or "peerwatt",
        )
        span = max(s.address + s.count for s in model.values.values())
        length = SUNSPEC_MODEL_LENGTHS.get(model.model_id, span)
        put(address, [model.model_id, length])
        floats = any(s.encoding == "float32" for s in model.values.values())
        if floats:
            put(address + 2, [0x7FC0, 0x0000] * ((length - 2) // 2))  # NaN: not implemented
            put(address + length, [0, 0])  # Evt (bitfield32): no events
        else:
            put(address + 2, [0x8000] * length)  # int16 / sunssf: not implemented
            if model.model_id in (201, 202, 203, 204):
                put(address + 38, [0] * 16)  # acc32 energies it does not simulate (per phase...): 0
                put(address + 55, [0] * 16)
                put(address + 72, [0] * 32)
                put(address + length, [0, 0])
        scale_factors = self._scale_factors(model, served)
        for sf_offset, sf in scale_factors.items():
            put(address + sf_offset, [sf & 0xFFFF])
        for name, spec in model.values.items():
            sf = scale_factors.get(spec.sf_offset, 0) if spec.sf_offset is not None else 0
            put(address + spec.address, self._encode(spec, served.get(name), sf))
        put(address + 2 + length, [SUNSPEC_END, 0])
        return image

    @staticmethod
    def _scale_factors(model: SunSpecModel, served: dict[str, float | str | None]) -> dict[int, int]:
        """A scale factor per SF register: a typical one for the quantity, raised until every
        value using it fits its integer type."""
        out: dict[int, int] = {}
        for spec in model.values.values():
            if spec.sf_offset is None or spec.sf_offset in out:
                continue
            users = [s for s in model.values.values() if s.sf_offset == spec.sf_offset]
            sf = _BASE_SCALE_FACTORS.get(spec.name.split("_")[0], 0)
            while sf < 6:
                fits = True
                for user in users:
                    value = served.get(user.name)
                    if isinstance(value, float) and user.encoding in INTEGER_ENCODINGS:
                        low, high = _INT_RANGES[user.encoding]
                        raw = round(value / float(user.scale) / 10.0**sf)
                        # in range and clear of the point's "not implemented" patterns; a raw 0
                        # stays 0 under every scale factor, so it never raises one (found in a
                        # QA pass: an export of 0 Wh pushed TotWh_SF to 6, the import read 0)
                        pattern = raw & ((1 << 16 * user.count) - 1)
                        fits = fits and low <= raw <= high
                        fits = fits and (raw == 0 or pattern not in user.not_available)
                if fits:
                    break
                sf += 1
            out[spec.sf_offset] = sf
        return out

    def _build_device(self) -> SimDevice:
        image = self._image()
        blocks: dict[int, list[SimData]] = {3: [], 4: []}
        for function, registers in image.items():
            run: list[int] = []
            start = -1
            for address in sorted(registers):
                if run and address == start + len(run):
                    run.append(registers[address])
                    continue
                if run:
                    blocks[function].append(self._sim_data(start, run))
                start, run = address, [registers[address]]
            if run:
                blocks[function].append(self._sim_data(start, run))
        for function in (3, 4):
            if not blocks[function]:
                blocks[function].append(SimData(65535, datatype=DataType.INVALID))
        no_bits = [SimData(65520, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(no_bits, list(no_bits), blocks[3], blocks[4]),
            action=self._action,
        )

    @staticmethod
    def _sim_data(address: int, registers: list[int]) -> SimData:
        return SimData(address, values=list(registers), datatype=DataType.REGISTERS, readonly=True)

    # ---------------------------------------------------------------- server hooks (loop thread)

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        exception = self._fault("exception")
        if exception is not None:
            return ExcCodes(exception.code)
        served = self._image().get(function_code, {})
        for i in range(count):
            value = served.get(address + i)
            if value is not None:
                current_registers[address - start_address + i] = value
        with self._lock:
            self.requests_served += 1
        return None

    def _trace_pdu(self, sending: bool, pdu):  # noqa: ANN001, ANN202 - pymodbus hook
        """Drop requests the meter would not answer: returning None sends no response."""
        if sending:
            return pdu
        if pdu.dev_id != self.unit_id or self._fault("timeout") is not None:
            return None
        if self._fault("disconnect") is not None:
            assert self._loop is not None
            self._loop.call_soon(self._close_connections)
            return None
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data and self._fault("crc") is not None:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def _close_connections(self) -> None:
        server = self._server
        if server is not None:
            for handler in list(server.active_connections.values()):
                handler.close()
