"""Read one meter over Modbus TCP or RTU with a profile; every fault becomes a typed error.

``MeterReader(profile, TcpTarget(...) | SerialTarget(...), ...).read()`` returns a
``MeterSample``: power in W and the cumulative import/export counters in Wh as integers
(rounded once, half-even), plus the per-phase voltage/current/power and frequency as floats
where the profile maps them. Contiguous registers are batched into as few requests as the
meter's limit allows, asked in an order where an answer to another request shows
(``order_requests``); SunSpec devices are discovered ('SunS' marker, model chain) once and
re-discovered when the layout stops matching.

Faults are raised as subclasses of ``MeterError`` with one-line messages: ``MeterTimeout``
(no answer), ``MeterExceptionResponse`` (a Modbus exception code), ``MeterFramingError``
(CRC/framing: bytes arrived but no valid answer, its ``cause`` telling on Modbus TCP a frame
for another unit or transaction id, an incomplete one and no frame at all apart;
``MeterShortAnswer`` a valid frame with fewer registers than asked; ``MeterWrongAnswer`` a valid
frame that answers another request: more registers than asked, or another function code),
``MeterConnectionError`` (cannot connect, or the meter/gateway closed the connection),
``MeterValueUnavailable`` (NaN or a "not available" sentinel in power or a counter) and
``MeterDiscoveryError`` (SunSpec layout not found). Retries are bounded; each request has its own
timeout. Uses pymodbus's synchronous clients.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from meter_agent.profile import (
    PHASE_VALUES,
    REQUIRED_VALUES,
    SUNSPEC_COMMON_MN_COUNT,
    SUNSPEC_COMMON_MN_OFFSET,
    SUNSPEC_END,
    SUNSPEC_MARKER,
    SUNSPEC_SF_NOT_IMPLEMENTED,
    IdentifyCheck,
    MeterProfile,
    SunSpecModel,
    ValueSpec,
)

# pymodbus logs every failed request at ERROR level; a library keeps quiet unless the
# application configures logging (the CLI does not want frame dumps on stderr).
logging.getLogger("pymodbus").addHandler(logging.NullHandler())

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
# Exception codes worth another attempt: the device (or the gateway behind it) was busy.
RETRYABLE_CODES = frozenset({5, 6, 10, 11})
GATEWAY_CODES = frozenset({10, 11})


@dataclass(frozen=True)
class TcpTarget:
    """A Modbus TCP device or RTU-over-TCP gateway."""

    host: str
    port: int = 502

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SerialTarget:
    """An RS-485 line (Modbus RTU) on a serial device such as /dev/ttyUSB0."""

    device: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1

    def describe(self) -> str:
        return f"{self.device} ({self.baudrate} 8{self.parity}{self.stopbits})"


Target = TcpTarget | SerialTarget


class MeterError(Exception):
    """A meter could not be read; ``str()`` is one line naming the meter and the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MeterTimeout(MeterError):
    """No answer within the per-request timeout."""


class MeterFramingError(MeterError):
    """Bytes arrived but formed no valid answer. ``cause`` says what they were: on Modbus TCP
    "no frame" (no MBAP frame at all: RTU over TCP, or another protocol on the port), "other
    unit" (a valid frame for another unit id, which ``answered`` holds), "other transaction" (a
    valid frame for another transaction id: another client, or a gateway mixing up answers),
    "incomplete" (a frame's start whose rest did not arrive within the timeout); "garbled"
    otherwise (a frame that holds no valid answer; on RS-485 a CRC or framing error)."""

    def __init__(self, message: str, cause: str = "garbled", answered: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.answered = answered


class MeterShortAnswer(MeterFramingError):
    """A valid frame holding fewer registers than asked (the wrong map, or a gateway's limit)."""

    def __init__(self, message: str, received: int, asked: int) -> None:
        super().__init__(message)
        self.received = received
        self.asked = asked


class MeterWrongAnswer(MeterFramingError):
    """A valid frame that does not answer the request sent (more registers than asked, or another
    function code): an answer to another request, or a gateway that mixes up requests.
    ``mismatch`` says how."""

    def __init__(self, message: str, mismatch: str) -> None:
        super().__init__(message)
        self.mismatch = mismatch


class MeterConnectionError(MeterError):
    """Cannot connect / open the port, or the meter or gateway closed the connection."""

    def __init__(self, message: str, closed_by_peer: bool = False) -> None:
        super().__init__(message)
        self.closed_by_peer = closed_by_peer


class MeterExceptionResponse(MeterError):
    """The device answered with a Modbus exception code."""

    def __init__(self, message: str, code: int, function: int, address: int, count: int) -> None:
        super().__init__(message)
        self.code = code
        self.function = function
        self.address = address
        self.count = count


class MeterValueUnavailable(MeterError):
    """Power or a counter read NaN or a "not available" sentinel (or a negative counter)."""

    def __init__(self, message: str, names: tuple[str, ...]) -> None:
        super().__init__(message)
        self.names = names


class MeterDiscoveryError(MeterError):
    """The SunSpec marker or a usable model was not found, or the layout changed (retryable)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


RETRYABLE_ERRORS = (MeterTimeout, MeterFramingError, MeterConnectionError, MeterDiscoveryError)


@dataclass(frozen=True)
class MeterSample:
    """One reading. Power > 0 imports from the grid, < 0 exports (peerwatt convention).

    ``voltage_v``, ``current_a`` and ``phase_power_w`` have one entry per phase when the
    profile maps that quantity (None where a phase reads "not available"), else are empty.
    """

    time: int
    power_w: int
    import_wh: int
    export_wh: int
    voltage_v: tuple[float | None, ...]
    current_a: tuple[float | None, ...]
    phase_power_w: tuple[float | None, ...]
    frequency_hz: float | None
    serial: str | None
    profile: str
    unit_id: int
    sunspec_model: int | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        out = asdict(self)
        for key in ("voltage_v", "current_a", "phase_power_w"):
            out[key] = list(out[key])
        return out


def plan_requests(specs: Iterable[ValueSpec], max_registers: int) -> list[tuple[int, int, int]]:
    """Group values into (function, start, count) requests: contiguous registers only,
    at most ``max_registers`` per request, as few requests as that allows (greedy is optimal
    for runs that may not be split inside a value)."""
    requests: list[tuple[int, int, int]] = []
    by_function: dict[int, list[ValueSpec]] = {}
    for spec in specs:  # the function of the first value (the profile's main one) goes first
        by_function.setdefault(spec.function, []).append(spec)
    for function in by_function:
        start = end = -1
        for spec in sorted(by_function[function], key=lambda s: s.address):
            if spec.count > max_registers:
                raise ValueError(f"value {spec.name} needs {spec.count} registers > {max_registers}")
            spec_end = spec.address + spec.count
            if start >= 0 and spec.address <= end and max(end, spec_end) - start <= max_registers:
                end = max(end, spec_end)
                continue
            if start >= 0:
                requests.append((function, start, end - start))
            start, end = spec.address, spec_end
        if start >= 0:
            requests.append((function, start, end - start))
    return requests


Request = tuple[int, int, int]  # (function, start, count)


def _confusable(a: Request, b: Request) -> bool:
    """Two requests whose answers look alike: the same function and register count (all a read's
    answer names besides its registers' values), registers at different addresses."""
    return a[0] == b[0] and a[2] == b[2] and a[1] != b[1]


def _parting(requests: list[Request], like: Request) -> Request | None:
    """The request of ``requests`` with the fewest registers whose answer cannot pass for one to
    ``like`` (another function or count); None when all have its shape."""
    others = [r for r in requests if (r[0], r[2]) != (like[0], like[2])]
    return min(others, key=lambda r: r[2]) if others else None


def order_requests(requests: list[Request]) -> list[Request]:
    """The order in which a poll asks ``requests`` (plan_requests'), some asked twice, so that
    no two neighbours are ``_confusable``: an answer that belongs to the request asked before
    is then refused as a wrong answer, not read as this one's values.

    A Modbus read answer names no address, and on RS-485 no transaction id: a TCP-to-RTU gateway
    stamps what its bus brings with the id of the request it serves, so an answer that comes late
    (a duplicate after the gateway's own retry on the bus, a device slower than the gateway's
    timeout) goes to the next request asked. Requests of the commonest shape are parted by the
    others; where only requests of one shape are left, the cheapest request of another shape is
    asked again. A plan that has no confusable neighbours keeps its order, and so does one in which
    every request has the same shape: nothing can part them (docs/meters.md). The request asked
    before a poll, the last of the poll before or one that failed, is the reader's to part from
    the first (MeterReader._read_once)."""

    def shape(request: Request) -> tuple[int, int]:
        return request[0], request[2]

    if len({shape(r) for r in requests}) == 1:
        return list(requests)
    order: list[Request] = []
    rest = list(requests)
    if not any(_confusable(a, b) for a, b in zip(requests, requests[1:], strict=False)):
        order, rest = list(requests), []
    while rest:
        fits = [r for r in rest if not order or not _confusable(r, order[-1])]
        if not fits:  # every request left looks like the last one asked
            parting = _parting(requests, order[-1])
            assert parting is not None  # more than one shape
            order.append(parting)
            continue
        left = Counter(shape(r) for r in rest)
        chosen = max(fits, key=lambda r: left[shape(r)])  # the commonest shape first, to part it
        order.append(chosen)
        rest.remove(chosen)
    if _confusable(order[-1], order[0]):  # the next poll's first would need parting from the last
        for i, moved in enumerate(order[1:-1], start=1):
            if not (
                _confusable(moved, order[-1])
                or _confusable(moved, order[0])
                or _confusable(order[i - 1], order[i + 1])
            ):
                return [*order[:i], *order[i + 1 :], moved]
    return order


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class _SunSpecLocation:
    base: int
    common_address: int | None
    model_address: int
    model: SunSpecModel
    span: int  # registers read from the model's ID register on each poll


class MeterReader:
    """Reads one meter (see the module docstring). Not thread-safe: one reader per thread."""

    def __init__(
        self,
        profile: MeterProfile,
        transport: Target,
        unit_id: int | None = None,
        timeout_s: float = 1.0,
        retries: int = 1,
        close_between_polls: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.profile = profile
        self.transport = transport
        self.unit_id = profile.transport.unit_id if unit_id is None else unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.close_between_polls = close_between_polls
        self.clock = clock
        self.requests_sent = 0
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._rx_bytes = 0
        self._rx_seen = _TcpAnswerSeen(0, 0)
        self._sunspec: _SunSpecLocation | None = None
        self._order: list[Request] | None = None  # a poll's requests (_read_once)
        self._last_asked: Request | None = None  # the last request sent: its answer may yet come
        self.sunspec_models_seen: tuple[int, ...] = ()  # the model chain found by discovery, in order

    # ---------------------------------------------------------------- public

    @property
    def where(self) -> str:
        return f"{self.profile.name} meter at {self.transport.describe()} unit {self.unit_id}"

    def read(self) -> MeterSample:
        """One reading, with at most ``retries`` further attempts on timeouts, garbled
        answers, dropped connections and busy devices."""
        attempts = self.retries + 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return self._read_once()
                except RETRYABLE_ERRORS as exc:
                    self._drop_connection()
                    final = isinstance(exc, MeterDiscoveryError) and not exc.retryable
                    if final or attempt == attempts:
                        raise _with_attempts(exc, attempt) from None
                except MeterExceptionResponse as exc:
                    if exc.code in (1, 2):
                        self._sunspec = None  # a moved SunSpec layout shows up as code 2
                    if exc.code not in RETRYABLE_CODES or attempt == attempts:
                        raise _with_attempts(exc, attempt) from None
            raise AssertionError("unreachable")
        finally:
            if self.close_between_polls:
                self.close()

    def identify(self) -> list[tuple[IdentifyCheck, bool, str]]:
        """Read the profile's identification registers (``[[identify]]``): for each, whether
        the device reads one of the expected values, and what it read. A register the device
        does not have (exception 1 or 2) does not match. Other faults raise ``MeterError``."""
        out = []
        try:
            for check in (*self.profile.identify, *self._sunspec_identify()):
                spec = check.spec
                try:
                    registers = self._request(spec.function, spec.address, spec.count)
                except MeterExceptionResponse as exc:
                    if exc.code not in (1, 2):
                        raise
                    out.append((check, False, f"no such register (exception {exc.code})"))
                    continue
                value = spec.decode(registers)
                shown = "n/a" if value is None else str(value) if isinstance(value, str) else f"{value:g}"
                out.append((check, check.matches(registers), shown))
        finally:
            if self.close_between_polls:
                self.close()
        return out

    def _sunspec_identify(self) -> tuple[IdentifyCheck, ...]:
        """For a SunSpec profile that names its device's manufacturer ([sunspec.common]): the
        Mn point of the common model that precedes the meter model (discovering it if needed)."""
        layout = self.profile.sunspec
        if layout is None or layout.manufacturer is None:
            return ()
        if self._sunspec is None:
            self._sunspec = self._discover()
        if self._sunspec.common_address is None:
            return ()
        spec = ValueSpec(
            name="manufacturer",
            address=self._sunspec.common_address + SUNSPEC_COMMON_MN_OFFSET,
            encoding="string",
            function=3,
            count=SUNSPEC_COMMON_MN_COUNT,
        )
        return (IdentifyCheck(spec, (layout.manufacturer,), "SunSpec manufacturer (Mn)"),)

    def close(self) -> None:
        """Close the connection (TCP socket or serial port); the next read reopens it."""
        self._drop_connection()

    def __enter__(self) -> MeterReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- one attempt

    def _read_once(self) -> MeterSample:
        if self.profile.kind == "sunspec":
            return self._read_sunspec()
        image: dict[tuple[int, int], int] = {}
        if self._order is None:  # the order that shows a mixed-up answer (order_requests)
            self._order = order_requests(
                plan_requests(self.profile.values.values(), self.profile.max_registers)
            )
        order = self._order
        before = self._last_asked  # its answer may come late (it failed), or twice (a duplicate)
        if before is not None and _confusable(before, order[0]):
            parting = _parting(order, order[0])
            if parting is not None:
                order = [parting, *order]
        for function, start, count in order:
            for i, reg in enumerate(self._request(function, start, count)):
                image[(function, start + i)] = reg
        values: dict[str, Decimal | str | None] = {}
        for name, spec in self.profile.values.items():
            regs = [image[(spec.function, a)] for a in range(spec.address, spec.address + spec.count)]
            values[name] = spec.decode(regs)
        return self._sample(values, None)

    def _read_sunspec(self) -> MeterSample:
        if self._sunspec is None:
            self._sunspec = self._discover()
        loc = self._sunspec
        regs = self._read_range(loc.model_address, loc.span)
        if regs[0] != loc.model.model_id:
            self._sunspec = None
            raise MeterDiscoveryError(
                f"{self.where}: SunSpec model {loc.model.model_id} is no longer at "
                f"{loc.model_address} (found id {regs[0]}); discovering again",
                retryable=True,
            )
        values: dict[str, Decimal | str | None] = {}
        for name, spec in loc.model.values.items():
            point = regs[spec.address : spec.address + spec.count]
            scale_factor = 0
            if spec.sf_offset is not None:
                raw_sf = regs[spec.sf_offset]
                if raw_sf == SUNSPEC_SF_NOT_IMPLEMENTED:
                    values[name] = None
                    continue
                scale_factor = raw_sf - 0x10000 if raw_sf & 0x8000 else raw_sf
                if not -10 <= scale_factor <= 10:
                    values[name] = None
                    continue
            values[name] = spec.decode(point, scale_factor)
        serial_spec = self.profile.sunspec.serial if self.profile.sunspec else None
        if serial_spec is not None and loc.common_address is not None:
            sn_regs = self._read_range(loc.common_address + serial_spec.address, serial_spec.count)
            values["serial"] = serial_spec.decode(sn_regs)
        return self._sample(values, loc.model.model_id, loc.model.phases)

    def _discover(self) -> _SunSpecLocation:
        layout = self.profile.sunspec
        assert layout is not None
        base = None
        for candidate in layout.base_addresses:
            try:
                if tuple(self._request(3, candidate, 2)) == SUNSPEC_MARKER:
                    base = candidate
                    break
            except MeterExceptionResponse as exc:
                if exc.code in GATEWAY_CODES:
                    raise
        if base is None:
            bases = ", ".join(str(b) for b in layout.base_addresses)
            raise MeterDiscoveryError(
                f"{self.where}: no SunSpec marker 'SunS' at {bases} "
                "(not a SunSpec device, or SunSpec/Modbus is disabled on it)"
            )
        # model id -> (address, length, address of the common block 1 that precedes it): in a
        # SolarEdge-style chain (inverter common block, inverter model, meter common block,
        # meter model) the meter's serial is in the common block right before the meter model.
        found: dict[int, tuple[int, int, int | None]] = {}
        chain: list[int] = []
        common = None
        address = base + 2
        for _ in range(layout.max_models):
            try:
                model_id, length = self._request(3, address, 2)
            except MeterExceptionResponse:
                raise MeterDiscoveryError(
                    f"{self.where}: SunSpec model chain broken at register {address}"
                ) from None
            if model_id == SUNSPEC_END:
                break
            chain.append(model_id)
            if model_id == 1:
                common = address
            found.setdefault(model_id, (address, length, common))
            address += 2 + length
            if address > 65533:
                break
        self.sunspec_models_seen = tuple(chain)
        for model in layout.models:
            if model.model_id in found:
                model_address, length, common = found[model.model_id]
                span = max(s.address + s.count for s in model.values.values())
                span = max([span, *(s.sf_offset + 1 for s in model.values.values() if s.sf_offset)])
                if span > length + 2:
                    raise MeterDiscoveryError(
                        f"{self.where}: SunSpec model {model.model_id} is only {length} registers long"
                    )
                return _SunSpecLocation(base, common, model_address, model, span)
        wanted = ", ".join(str(m.model_id) for m in layout.models)
        offered = ", ".join(str(m) for m in chain) or "none"
        raise MeterDiscoveryError(
            f"{self.where}: SunSpec device offers models {offered}, none of {wanted} "
            "(add the model to a profile file)"
        )

    def _read_range(self, address: int, count: int) -> list[int]:
        """SunSpec holding registers ``address``.. in requests of at most ``max_registers``."""
        out: list[int] = []
        step = self.profile.max_registers
        for start in range(address, address + count, step):
            out.extend(self._request(3, start, min(step, address + count - start)))
        return out

    def _sample(
        self, values: Mapping[str, Decimal | str | None], model: int | None, phase_count: int | None = None
    ) -> MeterSample:
        bad = [n for n in REQUIRED_VALUES if values.get(n) is None]
        bad += [n for n in ("import_wh", "export_wh") if n not in bad and values[n] < 0]  # type: ignore[operator]
        if bad:
            raise MeterValueUnavailable(
                f"{self.where}: {', '.join(bad)} not available (NaN, 'not implemented' "
                "sentinel or negative counter)",
                tuple(bad),
            )
        sign = -1 if self.profile.invert else 1
        power = values["power_w"] * sign  # type: ignore[operator]

        def phases(quantity: str, unit: str, flip: bool = False) -> tuple[float | None, ...]:
            names = [f"{quantity}_l{p}_{unit}" for p in range(1, (phase_count or self.profile.phases) + 1)]
            if not any(n in values for n in names):
                return ()
            out = []
            for n in names:
                v = values.get(n)
                out.append(None if v is None else float(v) * (sign if flip else 1))  # type: ignore[arg-type]
            return tuple(out)

        frequency = values.get("frequency_hz")
        serial = values.get("serial")
        if isinstance(serial, Decimal):
            serial = str(int(serial))
        return MeterSample(
            time=int(self.clock()),
            power_w=_round(power),  # type: ignore[arg-type]
            import_wh=_round(values["import_wh"]),  # type: ignore[arg-type]
            export_wh=_round(values["export_wh"]),  # type: ignore[arg-type]
            voltage_v=phases("voltage", "v"),
            current_a=phases("current", "a"),
            phase_power_w=phases("power", "w", flip=True),
            frequency_hz=None if frequency is None else float(frequency),
            serial=None if serial is None or serial == "" else str(serial),
            profile=self.profile.name,
            unit_id=self.unit_id,
            sunspec_model=model,
        )

    # ---------------------------------------------------------------- transport

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            if isinstance(self.transport, TcpTarget) and len(data) >= 7:
                self._rx_seen = _TcpAnswerSeen(int.from_bytes(data[0:2], "big"), data[6])
        else:
            self._rx_bytes = len(data)
            if isinstance(self.transport, TcpTarget):
                self._rx_seen.scan(data)
        return data

    def _connected_client(self) -> ModbusTcpClient | ModbusSerialClient:
        if self._client is None:
            if isinstance(self.transport, TcpTarget):
                self._client = ModbusTcpClient(
                    self.transport.host,
                    port=self.transport.port,
                    timeout=self.timeout_s,
                    retries=0,
                    trace_packet=self._trace_packet,
                )
            else:
                self._client = ModbusSerialClient(
                    self.transport.device,
                    baudrate=self.transport.baudrate,
                    parity=self.transport.parity,
                    stopbits=self.transport.stopbits,
                    bytesize=8,
                    timeout=self.timeout_s,
                    retries=0,
                    trace_packet=self._trace_packet,
                )
        if not self._client.connected and not self._client.connect():
            self._drop_connection()
            if isinstance(self.transport, TcpTarget):
                raise MeterConnectionError(
                    f"{self.where}: cannot connect to {self.transport.describe()} "
                    "(connection refused or reset, or host unreachable)"
                )
            raise MeterConnectionError(f"{self.where}: cannot open serial port {self.transport.device}")
        return self._client

    def _drop_connection(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _request(self, function: int, address: int, count: int) -> list[int]:
        self._last_asked = (function, address, count)
        client = self._connected_client()
        self._rx_bytes = 0
        self.requests_sent += 1
        span = f"{'holding' if function == 3 else 'input'} registers {address}..{address + count - 1}"
        try:
            if function == 3:
                response = client.read_holding_registers(address, count=count, device_id=self.unit_id)
            else:
                response = client.read_input_registers(address, count=count, device_id=self.unit_id)
        except ConnectionException:
            self._drop_connection()
            raise MeterConnectionError(
                f"{self.where}: the connection was closed by the meter or gateway while reading {span}",
                closed_by_peer=True,
            ) from None
        except ModbusIOException:
            self._drop_connection()
            if self._rx_bytes and isinstance(self.transport, TcpTarget):
                # found in QA passes: a wrong unit or transaction id and a device trickling one byte
                # a second read as "garbled", then as "no Modbus TCP frame: check the port"
                raise self._tcp_framing_error(span) from None
            if self._rx_bytes:
                raise MeterFramingError(
                    f"{self.where}: garbled answer reading {span} ({self._rx_bytes} bytes, no valid "
                    "frame: CRC or framing error)"
                ) from None
            raise MeterTimeout(
                f"{self.where}: no answer within {self.timeout_s:g} s reading {span}"
            ) from None
        except ModbusException as exc:
            self._drop_connection()
            raise MeterFramingError(f"{self.where}: invalid answer reading {span}: {exc}") from None
        except OSError as exc:  # ECONNRESET (a TCP RST), EPIPE, EHOSTUNREACH, a vanished serial port...
            self._drop_connection()
            raise MeterConnectionError(
                f"{self.where}: {_os_error_text(exc)} while reading {span}", closed_by_peer=True
            ) from None
        except Exception as exc:  # the bytes came from the wire: never crash on them
            self._drop_connection()
            raise MeterFramingError(
                f"{self.where}: undecodable answer reading {span} ({type(exc).__name__}: {exc})"
            ) from None
        asked_id, answered_id = self._rx_seen.transaction, int(response.transaction_id)
        if isinstance(self.transport, TcpTarget) and answered_id != asked_id:
            # pymodbus 3.16's client refuses such a frame (above); its asyncio client takes id 0,
            # a gateway's that ignores them, for any request: an answer that may be another's
            self._drop_connection()
            raise MeterFramingError(
                f"{self.where}: answer to another request (transaction id {answered_id}, asked "
                f"{asked_id}) reading {span}: a valid Modbus TCP frame",
                cause="other transaction",
                answered=answered_id,
            )
        answered = int(response.function_code) & 0x7F  # an exception answer has bit 0x80 set
        if answered != function:  # found in a QA pass: accepted (pymodbus checks unit and transaction ids)
            self._drop_connection()
            raise MeterWrongAnswer(
                f"{self.where}: answer for function {answered} reading {span} (function {function}): "
                "an answer to another request or a gateway that mixes up requests",
                f"function {answered}, asked function {function}",
            )
        if response.isError():
            code = int(getattr(response, "exception_code", 0) or 0)
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise MeterExceptionResponse(
                f"{self.where}: Modbus exception {code} ({name}) reading {span}",
                code=code,
                function=function,
                address=address,
                count=count,
            )
        registers = list(response.registers)
        if len(registers) > count:  # found in a QA pass: reported as too few, "lower max_registers"
            self._drop_connection()
            mismatch = f"{len(registers)} registers, asked for {count}"
            raise MeterWrongAnswer(
                f"{self.where}: answer holds {mismatch} ({span}): more than asked, an answer to "
                "another request or a gateway that mixes up requests",
                mismatch,
            )
        if len(registers) < count:
            self._drop_connection()
            raise MeterShortAnswer(
                f"{self.where}: answer holds {len(registers)} registers, asked for {count} ({span})",
                received=len(registers),
                asked=count,
            )
        return registers

    def _tcp_framing_error(self, span: str) -> MeterFramingError:
        """What the bytes that answered no request on Modbus TCP were, as an error."""
        seen = self._rx_seen
        if seen.other_unit is not None:
            return MeterFramingError(
                f"{self.where}: answer for unit {seen.other_unit} reading {span} (asked unit "
                f"{seen.unit}): a valid Modbus TCP frame",
                cause="other unit",
                answered=seen.other_unit,
            )
        if seen.other_transaction is not None:
            return MeterFramingError(
                f"{self.where}: answer to another request (transaction id {seen.other_transaction}, "
                f"asked {seen.transaction}) reading {span}: a valid Modbus TCP frame",
                cause="other transaction",
                answered=seen.other_transaction,
            )
        if seen.incomplete is not None:
            got, whole = seen.incomplete
            of = (
                f"{got} of {whole} bytes of a Modbus TCP frame"
                if whole
                else f"{got} bytes of a frame's header"
            )
            return MeterFramingError(
                f"{self.where}: incomplete answer reading {span} ({of} within {self.timeout_s:g} s)",
                cause="incomplete",
            )
        if seen.matching:
            return MeterFramingError(
                f"{self.where}: garbled answer reading {span} (a Modbus TCP frame holding no valid answer)"
            )
        return MeterFramingError(  # what it is not too: the causes an earlier message lumped with it
            f"{self.where}: garbled answer reading {span} ({self._rx_bytes} bytes, no Modbus TCP frame: "
            f"not one for another unit id, nor one cut short by timeout_s ({self.timeout_s:g} s))",
            cause="no frame",
        )


class _TcpAnswerSeen:
    """What arrived for one Modbus TCP request (transaction id ``transaction``, unit ``unit``):
    scanned as pymodbus's framer splits it, which takes complete frames off the buffer it hands
    to the trace (those for another unit or transaction it skips) and keeps an incomplete rest."""

    def __init__(self, transaction: int, unit: int) -> None:
        self.transaction = transaction
        self.unit = unit
        self.other_unit: int | None = None  # the first frame's for another unit id
        self.other_transaction: int | None = None  # the first frame's for another transaction id
        self.matching = False  # a frame for this request arrived (yet no valid answer was made of it)
        # at the end, a frame's start: (bytes, of bytes), the frame's length 0 before its header came
        self.incomplete: tuple[int, int] | None = None

    def scan(self, data: bytes) -> None:
        at = 0
        self.incomplete = None
        while len(data) - at >= 4 and data[at + 2 : at + 4] == b"\0\0":  # protocol id 0: MBAP
            if len(data) - at < 7:
                break
            whole = 6 + int.from_bytes(data[at + 4 : at + 6], "big")
            if whole < 8:  # no unit id and function code: not a frame
                return
            if len(data) - at < whole:
                self.incomplete = (len(data) - at, whole)
                return
            transaction, unit = int.from_bytes(data[at : at + 2], "big"), data[at + 6]
            if unit != self.unit:
                if self.other_unit is None:
                    self.other_unit = unit
            elif transaction != self.transaction:
                if self.other_transaction is None:
                    self.other_transaction = transaction
            else:
                self.matching = True
            at += whole
        if 0 < len(data) - at < 8 and data[at + 2 : at + 4] in (b"", b"\0", b"\0\0"):
            self.incomplete = (len(data) - at, 0)  # a header's start


def _os_error_text(exc: OSError) -> str:
    """What an operating-system error on the meter's connection means, in a few words."""
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset by the meter or gateway (TCP RST)"
    if isinstance(exc, (BrokenPipeError, ConnectionAbortedError)):
        return "the connection was closed by the meter or gateway"
    return f"connection error ({exc.strerror or type(exc).__name__})"


def _with_attempts(exc: MeterError, attempts: int) -> MeterError:
    """The same error, its message noting how many attempts were made (when more than one)."""
    if attempts > 1:
        exc.message = f"{exc.message} (after {attempts} attempts)"
        exc.args = (exc.message,)
    return exc


__all__ = [
    "MeterConnectionError",
    "MeterDiscoveryError",
    "MeterError",
    "MeterExceptionResponse",
    "MeterFramingError",
    "MeterReader",
    "MeterSample",
    "MeterShortAnswer",
    "MeterTimeout",
    "MeterValueUnavailable",
    "MeterWrongAnswer",
    "SerialTarget",
    "TcpTarget",
    "PHASE_VALUES",
    "order_requests",
    "plan_requests",
    "Request",
]
