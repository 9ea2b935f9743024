"""Meter profiles: load and validate the register maps shipped as TOML data files.

A profile says how one kind of meter is read over Modbus: function code, how each value is
encoded (float32 / int32 / uint32 / int16 / uint16 / int64 / uint64 / string, word order,
scale), where it lives, which raw patterns mean "not available", and the transport defaults.
Profiles are data: a user adds a meter by writing a TOML file (see docs/meters.md), never code.

Two kinds exist:

* ``registers``: a fixed register map (Eastron SDM630/SDM120, Carlo Gavazzi EM340, Shelly).
* ``sunspec``: discovery-based; the profile says where to look for the 'SunS' marker and, per
  SunSpec model, where each value sits counted from the model's ID register (ID at +0, L at +1).

This module also holds the value codec (registers <-> numbers) that the reader and the
simulator share. Decoded measurements are Decimals; callers round once, explicitly.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pymodbus.client.mixin import ModbusClientMixin

DATATYPE = ModbusClientMixin.DATATYPE

# encoding name -> (registers per value, pymodbus datatype); "string" has a per-value count.
ENCODINGS: dict[str, tuple[int, Any]] = {
    "int16": (1, DATATYPE.INT16),
    "uint16": (1, DATATYPE.UINT16),
    "int32": (2, DATATYPE.INT32),
    "uint32": (2, DATATYPE.UINT32),
    "int64": (4, DATATYPE.INT64),
    "uint64": (4, DATATYPE.UINT64),
    "float32": (2, DATATYPE.FLOAT32),
    "acc32": (2, DATATYPE.UINT32),  # SunSpec accumulators: unsigned; 0 is 0 Wh (see below)
    "acc64": (4, DATATYPE.UINT64),
    "string": (0, DATATYPE.STRING),
}
INTEGER_ENCODINGS = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64", "acc32", "acc64"})

PHASE_VALUES = tuple(
    f"{quantity}_l{phase}_{unit}"
    for quantity, unit in (("voltage", "v"), ("current", "a"), ("power", "w"))
    for phase in (1, 2, 3)
)
REQUIRED_VALUES = ("power_w", "import_wh", "export_wh")
VALUE_NAMES = (*REQUIRED_VALUES, *PHASE_VALUES, "frequency_hz", "serial")
PROFILE_KINDS = ("registers", "sunspec")

# SunSpec "not implemented" patterns by point type (SunSpec Information Model Specification).
# Not for the accumulators (acc32/acc64), whose "not implemented" value is 0: a meter that
# implements a meter model implements its energy totals, and a counter that is really 0 Wh (a
# home without PV, a new meter) must read as 0, not as a permanent fault (found in a QA pass).
# A drop to 0 from a positive value is a glitch, which meter_agent/counters.py handles.
SUNSPEC_NOT_IMPLEMENTED = {
    "int16": frozenset({0x8000}),
    "uint16": frozenset({0xFFFF}),
    "int32": frozenset({0x80000000}),
    "uint32": frozenset({0xFFFFFFFF}),
    "int64": frozenset({0x8000000000000000}),
    "uint64": frozenset({0xFFFFFFFFFFFFFFFF}),
}
SUNSPEC_SF_NOT_IMPLEMENTED = 0x8000
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = 0xFFFF
SUNSPEC_COMMON_MN_OFFSET, SUNSPEC_COMMON_MN_COUNT = 2, 16  # common model 1: Mn (32 characters)
SUNSPEC_COMMON_MD_OFFSET = 18  # Md, 16 registers

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class ProfileError(ValueError):
    """A profile file is missing, unreadable or invalid; the message is one line naming file and key."""


@dataclass(frozen=True)
class ValueSpec:
    """Where one value lives and how its registers turn into a number.

    ``address`` is the register address for register maps, or the offset from the model's ID
    register for SunSpec. ``scale`` multiplies the raw value (0.1 for "x10" registers, 1000 for
    kWh -> Wh). ``not_available`` holds raw bit patterns (unsigned, after word order) that mean
    "no value". ``sf_offset`` is the SunSpec scale-factor register (offset from the model ID).
    """

    name: str
    address: int
    encoding: str
    word_order: str = "big"
    scale: Decimal = Decimal(1)
    function: int = 4
    count: int = 2
    not_available: frozenset[int] = frozenset()
    sf_offset: int | None = None
    byte_order: str = "big"  # strings: "little" = the first character in each register's low byte

    def raw(self, registers: Sequence[int]) -> int | float | str:
        """The raw value of exactly ``count`` registers (before scale)."""
        if self.encoding == "string":  # registers in order; word order applies to numbers only
            data = b"".join(int(r).to_bytes(2, self.byte_order) for r in registers)  # type: ignore[arg-type]
            return data.decode("ascii", errors="replace").strip("\x00 ").strip()
        return ModbusClientMixin.convert_from_registers(  # type: ignore[return-value]
            list(registers), ENCODINGS[self.encoding][1], word_order=self.word_order
        )

    def pattern(self, registers: Sequence[int]) -> int:
        """The registers as one unsigned integer in value order (word order applied)."""
        words = list(registers) if self.word_order == "big" else list(reversed(registers))
        out = 0
        for word in words:
            out = (out << 16) | (word & 0xFFFF)
        return out

    def is_unavailable(self, registers: Sequence[int]) -> bool:
        """True when the registers hold a "not available" sentinel or a NaN/infinite float."""
        if self.encoding == "string":
            return False
        if self.pattern(registers) in self.not_available:
            return True
        if self.encoding == "float32":
            return not math.isfinite(float(self.raw(registers)))
        return False

    def decode(self, registers: Sequence[int], scale_factor: int = 0) -> Decimal | str | None:
        """The value in the unit its name says, exactly (Decimal), or None when unavailable."""
        if self.is_unavailable(registers):
            return None
        raw = self.raw(registers)
        if isinstance(raw, str):
            return raw
        return (Decimal(raw) * self.scale).scaleb(scale_factor)

    def encode(self, value: float | int | str, scale_factor: int = 0) -> list[int]:
        """Registers for a value in the unit its name says (the inverse of ``decode``)."""
        if self.encoding == "string":
            data = str(value).encode("ascii")[: self.count * 2].ljust(self.count * 2, b"\x00")
            order = self.byte_order
            return [int.from_bytes(data[i : i + 2], order) for i in range(0, len(data), 2)]  # type: ignore[arg-type]
        raw: float | int = (Decimal(str(value)) / self.scale).scaleb(-scale_factor)  # type: ignore[assignment]
        if self.encoding in INTEGER_ENCODINGS:
            raw = int(Decimal(raw).to_integral_value())
        else:
            raw = float(raw)
        return ModbusClientMixin.convert_to_registers(
            raw, ENCODINGS[self.encoding][1], word_order=self.word_order
        )

    def encode_pattern(self, pattern: int) -> list[int]:
        """Registers holding a raw bit pattern (for serving "not available" sentinels)."""
        words = [(pattern >> (16 * i)) & 0xFFFF for i in reversed(range(self.count))]
        return words if self.word_order == "big" else list(reversed(words))


@dataclass(frozen=True)
class TransportDefaults:
    """How the meter is usually wired: TCP port, RS-485 line settings and unit id."""

    tcp_port: int = 502
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    unit_id: int = 1


@dataclass(frozen=True)
class SunSpecModel:
    """One SunSpec meter model: its id and where each value sits from the model's ID register."""

    model_id: int
    values: Mapping[str, ValueSpec]
    phases: int = 3


@dataclass(frozen=True)
class SunSpecLayout:
    """Where to find 'SunS', which models to use (in preference order), and the serial point."""

    base_addresses: tuple[int, ...]
    models: tuple[SunSpecModel, ...]
    serial: ValueSpec | None
    max_models: int = 32
    manufacturer: str | None = None  # the device's documented common-model Mn ([sunspec.common])
    device_model: str | None = None  # its documented Md (served by the simulator)

    def model(self, model_id: int) -> SunSpecModel | None:
        """The profile's definition of a model id, if it has one."""
        return next((m for m in self.models if m.model_id == model_id), None)


@dataclass(frozen=True)
class RegisterTable:
    """A documented register range the device answers, on each of ``functions``."""

    functions: tuple[int, ...]
    start: int
    end: int  # inclusive


@dataclass(frozen=True)
class DeviceConstant:
    """A documented register with a fixed value (model name, system type...)."""

    spec: ValueSpec
    value: float | int | str


@dataclass(frozen=True)
class IdentifyCheck:
    """A register that tells this meter from a look-alike: the device is this model only
    when the register decodes to one of ``values``."""

    spec: ValueSpec
    values: tuple[float | int | str, ...]
    what: str

    def matches(self, registers: Sequence[int]) -> bool:
        """True when the registers decode to one of the expected values."""
        value = self.spec.decode(registers)
        if value is None:
            return False
        if isinstance(value, str):
            return value in self.values
        return any(not isinstance(v, str) and value == Decimal(str(v)) for v in self.values)


@dataclass(frozen=True)
class DeviceModel:
    """How the real device answers beyond the values peerwatt reads: its documented register
    tables (unmapped registers in them read 0) and fixed registers. Used by the simulator."""

    tables: tuple[RegisterTable, ...] = ()
    constants: tuple[DeviceConstant, ...] = ()


@dataclass(frozen=True)
class MeterProfile:
    """A validated meter profile (see the module docstring)."""

    name: str
    description: str
    kind: str
    function: int
    max_registers: int
    invert: bool
    phases: int
    transport: TransportDefaults
    values: Mapping[str, ValueSpec] = field(default_factory=dict)
    sunspec: SunSpecLayout | None = None
    source: str = ""
    device: DeviceModel = DeviceModel()
    identify: tuple[IdentifyCheck, ...] = ()

    @property
    def value_names(self) -> tuple[str, ...]:
        """Every value this profile can deliver (for SunSpec: what any of its models has)."""
        if self.sunspec is None:
            return tuple(n for n in VALUE_NAMES if n in self.values)
        names = {n for m in self.sunspec.models for n in m.values}
        if self.sunspec.serial is not None:
            names.add("serial")
        return tuple(n for n in VALUE_NAMES if n in names)


# --------------------------------------------------------------------------------------------
# Loading and validation


class _Checker:
    """Walks a parsed TOML document, reporting the first problem as file + dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(f"profile {self.source}: {key}: {problem}")

    def table(self, data: Any, key: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, "must be a table")
        return data

    def only(self, data: Mapping[str, Any], key: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for name in data:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (allowed: {', '.join(allowed)})")

    def get(self, data: Mapping[str, Any], key: str, name: str, kind: type | tuple, default: Any):
        where = f"{key}.{name}" if key else name
        if name not in data:
            if default is _REQUIRED:
                raise self.fail(where, "missing")
            return default
        value = data[name]
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            raise self.fail(where, f"must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.fail(where, f"must be {_kind_name(kind)}")
        return value

    def integer(self, data, key, name, default, low: int, high: int) -> int:
        value = self.get(data, key, name, int, default)
        if not low <= value <= high:
            raise self.fail(f"{key}.{name}" if key else name, f"must be {low}..{high}")
        return value


_REQUIRED = object()


def _as_tuple(kind: type | tuple) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names[list] = "a list"
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


_VALUE_KEYS = (
    "address",
    "encoding",
    "word_order",
    "byte_order",
    "scale",
    "function",
    "count",
    "not_available",
)
_SUNSPEC_VALUE_KEYS = ("offset", "encoding", "word_order", "scale", "count", "sf_offset")
_DEFAULT_KEYS = ("encoding", "word_order", "scale", "not_available")


def _value_spec(
    check: _Checker,
    name: str,
    data: Any,
    key: str,
    defaults: Mapping[str, Any],
    function: int,
    sunspec: bool,
) -> ValueSpec:
    data = check.table(data, key)
    check.only(data, key, _SUNSPEC_VALUE_KEYS if sunspec else _VALUE_KEYS)
    merged = {**defaults, **data}
    address = check.integer(data, key, "offset" if sunspec else "address", _REQUIRED, 0, 65535)
    encoding = check.get(merged, key, "encoding", str, _REQUIRED)
    if encoding not in ENCODINGS:
        raise check.fail(f"{key}.encoding", f"unknown encoding {encoding!r} (use {', '.join(ENCODINGS)})")
    if encoding == "string" and name != "serial":
        raise check.fail(f"{key}.encoding", "only 'serial' may be a string; measurements are numbers")
    if name == "serial" and encoding not in INTEGER_ENCODINGS and encoding != "string":
        raise check.fail(f"{key}.encoding", "a serial number is a string or an unsigned integer")
    word_order = check.get(merged, key, "word_order", str, "big")
    if word_order not in ("big", "little"):
        raise check.fail(f"{key}.word_order", "must be 'big' (high word first) or 'little'")
    byte_order = _byte_order(check, data, key, encoding)
    scale_raw = check.get(merged, key, "scale", (int, float), 1)
    if not math.isfinite(scale_raw) or scale_raw <= 0:
        raise check.fail(f"{key}.scale", "must be a positive number (use 'invert' for the sign)")
    if encoding == "string":
        count = check.integer(data, key, "count", _REQUIRED, 1, 64)
    else:
        if "count" in data:
            raise check.fail(f"{key}.count", f"only strings take a count ({encoding} is fixed)")
        count = ENCODINGS[encoding][0]
    fn = function if sunspec else check.get(data, key, "function", int, function)
    if fn not in (3, 4):
        raise check.fail(f"{key}.function", "must be 3 (holding) or 4 (input registers)")
    if address + count - 1 > 65535:
        raise check.fail(key, "registers run past address 65535")
    if sunspec:
        not_available = SUNSPEC_NOT_IMPLEMENTED.get(encoding, frozenset())
        sf_offset = data.get("sf_offset")
        if sf_offset is not None:
            sf_offset = check.integer(data, key, "sf_offset", None, 2, 65535)
            if encoding not in INTEGER_ENCODINGS:
                raise check.fail(f"{key}.sf_offset", "only integer points take a scale factor")
    else:
        sf_offset = None
        patterns = check.get(merged, key, "not_available", list, [])
        bits = 16 * count
        for p in patterns:
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < (1 << bits):
                raise check.fail(f"{key}.not_available", f"must list {bits}-bit raw patterns")
        not_available = frozenset(patterns)
    return ValueSpec(
        name=name,
        address=address,
        encoding=encoding,
        word_order=word_order,
        scale=Decimal(str(scale_raw)),
        function=fn,
        count=count,
        not_available=not_available,
        sf_offset=sf_offset,
        byte_order=byte_order,
    )


def _byte_order(check: _Checker, data: Mapping[str, Any], key: str, encoding: str) -> str:
    byte_order = check.get(data, key, "byte_order", str, "big")
    if byte_order not in ("big", "little"):
        raise check.fail(f"{key}.byte_order", "must be 'big' (first character in the high byte) or 'little'")
    if "byte_order" in data and encoding != "string":
        raise check.fail(f"{key}.byte_order", "only strings take a byte order (numbers use word_order)")
    return byte_order


_PLAIN_KEYS = ("function", "address", "encoding", "word_order", "byte_order", "count")


def _plain_spec(check: _Checker, data: Mapping[str, Any], key: str, name: str) -> ValueSpec:
    """A register outside the measured values (a constant, an identification register)."""
    function = check.get(data, key, "function", int, _REQUIRED)
    if function not in (3, 4):
        raise check.fail(f"{key}.function", "must be 3 (holding) or 4 (input registers)")
    encoding = check.get(data, key, "encoding", str, _REQUIRED)
    if encoding not in ENCODINGS:
        raise check.fail(f"{key}.encoding", f"unknown encoding {encoding!r} (use {', '.join(ENCODINGS)})")
    word_order = check.get(data, key, "word_order", str, "big")
    if word_order not in ("big", "little"):
        raise check.fail(f"{key}.word_order", "must be 'big' (high word first) or 'little'")
    if encoding == "string":
        count = check.integer(data, key, "count", _REQUIRED, 1, 64)
    else:
        if "count" in data:
            raise check.fail(f"{key}.count", f"only strings take a count ({encoding} is fixed)")
        count = ENCODINGS[encoding][0]
    address = check.integer(data, key, "address", _REQUIRED, 0, 65536 - count)
    return ValueSpec(
        name=name,
        address=address,
        encoding=encoding,
        word_order=word_order,
        function=function,
        count=count,
        byte_order=_byte_order(check, data, key, encoding),
    )


def _device(check: _Checker, data: Any) -> DeviceModel:
    data = check.table(data, "device")
    check.only(data, "device", ("tables", "constants"))
    tables = []
    for i, entry in enumerate(check.get(data, "device", "tables", list, [])):
        key = f"device.tables[{i}]"
        entry = check.table(entry, key)
        check.only(entry, key, ("functions", "start", "end"))
        functions = check.get(entry, key, "functions", list, _REQUIRED)
        if not functions or any(f not in (3, 4) or isinstance(f, bool) for f in functions):
            raise check.fail(f"{key}.functions", "must list 3 (holding) and/or 4 (input registers)")
        start = check.integer(entry, key, "start", _REQUIRED, 0, 65535)
        end = check.integer(entry, key, "end", _REQUIRED, start, 65535)
        tables.append(RegisterTable(tuple(functions), start, end))
    constants = []
    for i, entry in enumerate(check.get(data, "device", "constants", list, [])):
        key = f"device.constants[{i}]"
        entry = check.table(entry, key)
        check.only(entry, key, (*_PLAIN_KEYS, "value", "what"))
        spec = _plain_spec(check, entry, key, check.get(entry, key, "what", str, f"constant {i}"))
        value = check.get(entry, key, "value", (int, float, str), _REQUIRED)
        if isinstance(value, str) != (spec.encoding == "string"):
            raise check.fail(f"{key}.value", f"does not fit encoding {spec.encoding}")
        constants.append(DeviceConstant(spec, value))
    return DeviceModel(tuple(tables), tuple(constants))


def _identify(check: _Checker, data: Any) -> tuple[IdentifyCheck, ...]:
    if not isinstance(data, list):
        raise check.fail("identify", "must be a list of tables ([[identify]])")
    out = []
    for i, entry in enumerate(data):
        key = f"identify[{i}]"
        entry = check.table(entry, key)
        check.only(entry, key, (*_PLAIN_KEYS, "values", "what"))
        what = check.get(entry, key, "what", str, _REQUIRED)
        spec = _plain_spec(check, entry, key, what)
        values = check.get(entry, key, "values", list, _REQUIRED)
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in values):
            raise check.fail(f"{key}.values", "must list the values this model reads")
        out.append(IdentifyCheck(spec, tuple(values), what))
    return tuple(out)


def _values(
    check: _Checker, data: Any, key: str, defaults: Mapping[str, Any], function: int, sunspec: bool
) -> dict[str, ValueSpec]:
    data = check.table(data, key)
    check.only(data, key, VALUE_NAMES if not sunspec else tuple(n for n in VALUE_NAMES if n != "serial"))
    out = {
        name: _value_spec(check, name, spec, f"{key}.{name}", defaults, function, sunspec)
        for name, spec in data.items()
    }
    for name in REQUIRED_VALUES:
        if name not in out:
            raise check.fail(f"{key}.{name}", "missing (every profile needs power_w, import_wh, export_wh)")
    _check_overlaps(check, out, key, sunspec)
    return out


def _check_overlaps(check: _Checker, values: Mapping[str, ValueSpec], key: str, sunspec: bool) -> None:
    """No two values share a register of the same register space (function code; for SunSpec the
    model's block), and no value covers a scale-factor register: a copied line whose address was
    not changed would read import as export (found in a QA pass: signed readings had
    export = import)."""
    specs = list(values.values())
    for i, spec in enumerate(specs):
        end = spec.address + spec.count - 1
        for other in specs[:i]:
            shared = other.address <= end and spec.address < other.address + other.count
            if shared and other.function == spec.function:
                theirs = _registers(other, sunspec, space=False)
                raise check.fail(
                    f"{key}.{spec.name}",
                    f"{_registers(spec, sunspec)} overlap {key}.{other.name}'s {theirs} "
                    "(two values cannot share a register)",
                )
        for other in specs:
            if other.sf_offset is not None and spec.address <= other.sf_offset <= end:
                raise check.fail(
                    f"{key}.{spec.name}",
                    f"{_registers(spec, sunspec)} cover {key}.{other.name}'s scale factor "
                    f"(sf_offset = {other.sf_offset})",
                )


def _registers(spec: ValueSpec, sunspec: bool, space: bool = True) -> str:
    """'input registers 72..73 (0x0048..0x0049)', or 'offsets 46..47' in a SunSpec model."""
    end = spec.address + spec.count - 1
    if sunspec:
        return f"offsets {spec.address}..{end}"
    kind = f"{'holding' if spec.function == 3 else 'input'} registers " if space else ""
    return f"{kind}{spec.address}..{end} (0x{spec.address:04X}..0x{end:04X})"


def _check_phases(check: _Checker, values: Mapping[str, ValueSpec], phases: int, key: str) -> None:
    for name in values:
        if name in PHASE_VALUES and int(name.split("_l")[1][0]) > phases:
            raise check.fail(f"{key}.{name}", f"profile declares phases = {phases}")


def _transport(check: _Checker, data: Any) -> TransportDefaults:
    data = check.table(data, "transport")
    check.only(data, "transport", ("tcp_port", "baudrate", "parity", "stopbits", "unit_id"))
    parity = check.get(data, "transport", "parity", str, "N")
    if parity not in ("N", "E", "O"):
        raise check.fail("transport.parity", "must be 'N', 'E' or 'O'")
    stopbits = check.get(data, "transport", "stopbits", int, 1)
    if stopbits not in (1, 2):
        raise check.fail("transport.stopbits", "must be 1 or 2")
    return TransportDefaults(
        tcp_port=check.integer(data, "transport", "tcp_port", 502, 1, 65535),
        baudrate=check.integer(data, "transport", "baudrate", 9600, 300, 921600),
        parity=parity,
        stopbits=stopbits,
        unit_id=check.integer(data, "transport", "unit_id", 1, 0, 247),
    )


def _sunspec(check: _Checker, data: Any, defaults: Mapping[str, Any], function: int) -> SunSpecLayout:
    data = check.table(data, "sunspec")
    check.only(data, "sunspec", ("base_addresses", "models", "serial", "model", "max_models", "common"))
    bases = check.get(data, "sunspec", "base_addresses", list, [40000, 0, 50000])
    if not bases or any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 65534 for b in bases):
        raise check.fail("sunspec.base_addresses", "must list register addresses 0..65534")
    order = check.get(data, "sunspec", "models", list, _REQUIRED)
    tables = check.table(data.get("model", {}), "sunspec.model")
    parsed: dict[int, SunSpecModel] = {}
    likes: dict[int, tuple[int, int]] = {}
    for model_id in order:
        if isinstance(model_id, bool) or not isinstance(model_id, int) or not 1 <= model_id < 0xFFFF:
            raise check.fail("sunspec.models", "must list SunSpec model ids")
        key = f"sunspec.model.{model_id}"
        if str(model_id) not in tables:
            raise check.fail(key, "missing (every model in sunspec.models needs its value offsets)")
        table = check.table(tables[str(model_id)], key)
        phases = check.get(table, key, "phases", int, 3)
        if phases not in (1, 2, 3):
            raise check.fail(f"{key}.phases", "must be 1, 2 or 3")
        if "like" in table:  # same point layout as another model (SunSpec 201-204, 211-214)
            check.only(table, key, ("like", "phases"))
            likes[model_id] = (check.get(table, key, "like", int, _REQUIRED), phases)
            continue
        table = {k: v for k, v in table.items() if k != "phases"}
        values = _values(check, table, key, defaults, function, sunspec=True)
        parsed[model_id] = SunSpecModel(model_id, MappingProxyType(values), phases)
    for model_id, (like, phases) in likes.items():
        if like not in parsed:
            raise check.fail(
                f"sunspec.model.{model_id}.like", f"model {like} is not defined with offsets here"
            )
        keep = {
            n: v
            for n, v in parsed[like].values.items()
            if n not in PHASE_VALUES or int(n.split("_l")[1][0]) <= phases
        }
        parsed[model_id] = SunSpecModel(model_id, MappingProxyType(keep), phases)
    models = [parsed[m] for m in order]
    for extra in tables:
        if not extra.isdigit() or int(extra) not in order:
            raise check.fail(f"sunspec.model.{extra}", "not listed in sunspec.models")
    serial = None
    if "serial" in data:
        sdata = check.table(data["serial"], "sunspec.serial")
        check.only(sdata, "sunspec.serial", ("model", "offset", "count"))
        if check.get(sdata, "sunspec.serial", "model", int, 1) != 1:
            raise check.fail("sunspec.serial.model", "the serial number is read from the common model 1")
        serial = ValueSpec(
            name="serial",
            address=check.integer(sdata, "sunspec.serial", "offset", _REQUIRED, 2, 65535),
            encoding="string",
            function=function,
            count=check.integer(sdata, "sunspec.serial", "count", 16, 1, 64),
        )
    common = check.table(data.get("common", {}), "sunspec.common")
    check.only(common, "sunspec.common", ("manufacturer", "model"))
    manufacturer = check.get(common, "sunspec.common", "manufacturer", str, None)
    device_model = check.get(common, "sunspec.common", "model", str, None)
    for key, text in (("manufacturer", manufacturer), ("model", device_model)):
        if text is not None and not (0 < len(text) <= 32 and text.isascii() and text.isprintable()):
            raise check.fail(f"sunspec.common.{key}", "must be 1-32 printable ASCII characters")
    return SunSpecLayout(
        base_addresses=tuple(bases),
        models=tuple(models),
        serial=serial,
        max_models=check.integer(data, "sunspec", "max_models", 32, 1, 1000),
        manufacturer=manufacturer,
        device_model=device_model,
    )


def parse_profile(data: Mapping[str, Any], source: str) -> MeterProfile:
    """Validate a parsed TOML document as a profile; ``source`` names it in error messages."""
    check = _Checker(source)
    check.only(
        data,
        "",
        (
            "name",
            "description",
            "kind",
            "function",
            "max_registers",
            "invert",
            "phases",
            "transport",
            "defaults",
            "values",
            "sunspec",
            "device",
            "identify",
        ),
    )
    name = check.get(data, "", "name", str, _REQUIRED)
    if not _NAME_RE.fullmatch(name):
        raise check.fail("name", "must be lower-case letters, digits, '.', '_' or '-'")
    kind = check.get(data, "", "kind", str, "registers")
    if kind not in PROFILE_KINDS:
        raise check.fail("kind", f"must be one of {', '.join(PROFILE_KINDS)}")
    function = check.get(data, "", "function", int, _REQUIRED)
    if function not in (3, 4):
        raise check.fail("function", "must be 3 (holding) or 4 (input registers)")
    phases = check.get(data, "", "phases", int, 3)
    if phases not in (1, 3):
        raise check.fail("phases", "must be 1 or 3")
    defaults = check.table(data.get("defaults", {}), "defaults")
    check.only(defaults, "defaults", _DEFAULT_KEYS)
    values: dict[str, ValueSpec] = {}
    sunspec = None
    if kind == "registers":
        if "sunspec" in data:
            raise check.fail("sunspec", "only for kind = 'sunspec'")
        values = _values(check, data.get("values"), "values", defaults, function, sunspec=False)
        _check_phases(check, values, phases, "values")
    else:
        if "values" in data:
            raise check.fail("values", "a sunspec profile lists its values per model under sunspec.model")
        if function != 3:
            raise check.fail("function", "SunSpec devices are read with function 3 (holding registers)")
        sunspec = _sunspec(check, data.get("sunspec"), defaults, function)
        for model in sunspec.models:
            _check_phases(check, model.values, phases, f"sunspec.model.{model.model_id}")
    description = check.get(data, "", "description", str, "")
    max_registers = check.integer(data, "", "max_registers", 125, 1, 125)
    invert = check.get(data, "", "invert", bool, False)
    transport = _transport(check, data.get("transport", {}))
    device = _device(check, data.get("device", {}))
    identify = _identify(check, data.get("identify", []))
    one_request = {f"values.{n}": s for n, s in values.items()}  # each is read in one request
    one_request.update((f"identify[{i}]", c.spec) for i, c in enumerate(identify))
    for key, spec in one_request.items():
        if spec.count > max_registers:
            raise check.fail(
                "max_registers",
                f"is {max_registers}, but {key} needs {spec.count} registers in one request",
            )
    return MeterProfile(
        name=name,
        description=description,
        kind=kind,
        function=function,
        max_registers=max_registers,
        invert=invert,
        phases=phases,
        transport=transport,
        values=MappingProxyType(values),
        sunspec=sunspec,
        source=source,
        device=device,
        identify=identify,
    )


def load_profile(path: str | Path) -> MeterProfile:
    """Read and validate one profile file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {path}: file not found") from None
    except OSError as exc:
        raise ProfileError(f"profile {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"profile {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {path}: not valid TOML: {exc}") from None
    return parse_profile(data, str(path))


def builtin_profile_dir() -> Path:
    """The folder of profiles shipped with peerwatt (package data beside this module: pip installs
    packages as plain folders; not ``importlib.resources``, whose import costs the agent ~1.5 MB)."""
    return Path(__file__).resolve().parent / "profiles"


def _search_dirs(extra_dirs: Iterable[str | Path]) -> list[Path]:
    return [*(Path(d) for d in extra_dirs), builtin_profile_dir()]


def profile_names(extra_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Names of all profiles found (user folders first, then the shipped ones)."""
    names: list[str] = []
    for folder in _search_dirs(extra_dirs):
        if folder.is_dir():
            names.extend(p.stem for p in sorted(folder.glob("*.toml")) if p.stem not in names)
    return names


def find_profile(name_or_path: str | Path, extra_dirs: Iterable[str | Path] = ()) -> MeterProfile:
    """Load a profile by name (user folders first, then the shipped ones) or by file path."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return load_profile(text)
    dirs = _search_dirs(extra_dirs)
    for folder in dirs:
        path = folder / f"{text}.toml"
        if path.is_file():
            profile = load_profile(path)
            if profile.name != text:
                raise ProfileError(f"profile {path}: name: is {profile.name!r}, the file says {text!r}")
            return profile
    known = ", ".join(profile_names(extra_dirs)) or "none"
    raise ProfileError(f"unknown meter profile {text!r} (known: {known}; or give a .toml file)")


def builtin_profiles() -> list[MeterProfile]:
    """Every shipped profile, validated (used by probe and the tests)."""
    return [find_profile(name) for name in profile_names()]
