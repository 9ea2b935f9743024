"""Which meter answers on a line: try profiles and unit ids once each (by default unit 1 and each
profile's own unit id), judge whether the values are plausible for a household meter on a 230 V
grid, confirm the model with the profile's identification registers, and rank the answers
(``peerwatt meter probe`` and ``peerwatt agent setup`` call it; they parse and print). Also the
one-sentence advice after a meter error.

Imports only the standard library when loaded, so the meter readers take their bounds from here
and stay light (tests/meter_agent/test_imports_sources.py): chain's serial rule, peerwatt's error
type and the reader are imported when used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# Plausibility bounds for probe: what a household meter on a 230 V / 50-60 Hz grid reports.
VOLTAGE_RANGE_V = (180.0, 260.0)
FREQUENCY_RANGE_HZ = (45.0, 65.0)
MAX_POWER_W = 250_000
MAX_COUNTER_WH = 10_000_000_000  # 10 GWh: no meter's counter; the readers refuse a larger one too


def counter_problem(value_wh: Decimal | int) -> str | None:
    """Why a counter reading of ``value_wh`` (Wh) is no meter's (negative, or above
    MAX_COUNTER_WH), or None: the one rule every reader applies, each naming the value first."""
    if value_wh < 0:
        return "a counter cannot be negative"
    if value_wh > MAX_COUNTER_WH:
        return f"more than a meter counts ({MAX_COUNTER_WH // 10**9} GWh)"
    return None


def advice(exc: Exception, tcp: bool) -> str:
    """What to check after a meter error, in one sentence."""
    from meter_agent.modbus_reader import (
        MeterConnectionError,
        MeterDiscoveryError,
        MeterExceptionResponse,
        MeterFramingError,
        MeterShortAnswer,
        MeterTimeout,
        MeterValueUnavailable,
        MeterWrongAnswer,
    )

    if isinstance(exc, MeterWrongAnswer):  # a valid frame, for another request: not a limit to lower
        return (
            "the answer belonged to another request: a gateway that mixes up requests, another "
            "client or master polling the same device, or a late answer to an earlier request "
            "(a longer --timeout helps)"
        )
    if isinstance(exc, MeterShortAnswer):  # a valid frame: neither the port nor the line is wrong
        return (
            "the device answered a valid frame with fewer registers than asked: the wrong profile for "
            "this device (`peerwatt meter probe` finds the right one), or a gateway that limits the "
            "registers per request (copy the profile with a lower max_registers)"
        )
    if isinstance(exc, MeterConnectionError):
        if not tcp:
            return "check the device path, its permissions (dialout group) and that no other program holds it"
        if exc.closed_by_peer:
            return (
                "the device may accept only one client at a time: stop other pollers (evcc, Home "
                "Assistant); a gateway also drops connections when its RS-485 side fails"
            )
        return "check the host and port, and that Modbus TCP is enabled on the device"
    if isinstance(exc, MeterTimeout):
        if tcp:
            return (
                "check host, port and unit id, that Modbus TCP is enabled, and that no other "
                "client holds the device's only connection"
            )
        return (
            "check the A/B wiring, baud rate and parity, the unit id, and that no other master polls the bus"
        )
    if isinstance(exc, MeterFramingError):
        if not tcp:
            return "check the baud rate, parity, termination and that only one master polls the bus"
        if exc.cause == "other unit":  # found in a QA pass: "check the port" for a valid frame
            return (
                f"the device answered as unit {exc.answered}: check the unit id (--unit, or `unit` "
                "under [meter] in agent.toml) or the gateway's unit mapping"
            )
        if exc.cause == "other transaction":
            return (
                "the answer belonged to another request: another client polls the device (stop "
                "other pollers such as evcc or Home Assistant), or a gateway mixes up answers"
            )
        if exc.cause == "incomplete":
            return (
                "the answer stopped short of its frame's length: a slow device or gateway needs a "
                "longer --timeout; if that does not help, the gateway sends wrong frame lengths"
            )
        if exc.cause == "garbled":
            return (
                "the device or gateway answered a frame holding no valid answer: try again, or check "
                "--profile"
            )
        return (
            "the answer was no Modbus TCP frame: check the port (Modbus TCP, not RTU over TCP) "
            "and that only one client polls the device"
        )
    if isinstance(exc, MeterExceptionResponse):
        if exc.code in (1, 2):
            return "the meter does not have these registers: check --profile (try `peerwatt meter probe`)"
        if exc.code in (10, 11):
            return "the gateway got no answer from that unit: check --unit and the RS-485 side"
        return "the meter is busy or failing; try again"
    if isinstance(exc, MeterDiscoveryError):
        return "check that SunSpec is enabled on the device, or choose a register-map profile"
    if isinstance(exc, MeterValueUnavailable):
        return "the meter reports 'not available'; it may still be starting, or the profile is wrong"
    return "check the connection settings"


@dataclass(frozen=True)
class ProbeResult:
    """One (unit, profile) attempt of the probe."""

    unit_id: int
    profile: str
    verdict: str  # identified | match | plausible | other-model | implausible | error | silent
    detail: str
    checked: int = 0  # how many plausibility checks the reading passed


# What the running agent accepts (a fault otherwise): wide enough for any grid's sags and swells,
# narrow enough that another meter's register map (values like -1.9e8 V) is caught.
AGENT_VOLTAGE_RANGE_V = (80.0, 300.0)
# A phase carries at most what the total may (found in a QA pass: an L1 power of 3e38 W passed, as
# only the total was checked): MAX_POWER_W, and that power's current at the agent's lowest voltage.
MAX_CURRENT_A = MAX_POWER_W / AGENT_VOLTAGE_RANGE_V[0]
# Beyond this a number is shown in scientific notation: no plausible value (power, counter) reaches
# it, and an exact 39-digit number only hides the line it is on.
SHOWN_EXACTLY_BELOW = 10**12


def _as_float(value: float) -> float:
    """``value`` as a float; an integer too large for one is infinite (implausible either way)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _shown(value: object) -> str:
    """``value`` for a message: an integer of more than 30 digits by its size, as str() and repr()
    refuse one of more than 4300 (found in a QA pass: a traceback instead of 'implausible')."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"about {'-' if value < 0 else ''}10**{int(abs(value).bit_length() * math.log10(2))}"
    return repr(value)


def shown_number(value: float, spec: str = "") -> str:
    """``value`` formatted with ``spec`` when it is a number a meter could read; else bounded:
    '3e+38', 'inf', 'nan', or 'about 10**5000' for an integer too large for a float (found in a
    QA pass: `meter read` printed a power of 3e38 W as a 39-digit number)."""
    try:
        number = float(value)
    except OverflowError:
        return _shown(value)
    if math.isfinite(number) and abs(number) < SHOWN_EXACTLY_BELOW:
        return format(value, spec)
    return f"{number:.3g}"


def plausibility(sample, voltage_range_v: tuple[float, float] = VOLTAGE_RANGE_V) -> tuple[bool, int, str]:
    """(plausible, number of checks passed, reason) for a reading from an unknown meter."""
    from chain.genesis import GenesisError, check_serial

    passed = 0
    low, high = voltage_range_v
    voltages = [_as_float(v) for v in sample.voltage_v if v is not None and v != 0.0]
    for v in voltages:
        if not (math.isfinite(v) and low <= v <= high):
            return False, passed, f"voltage {v:.4g} V out of {low:g}-{high:g}"
    if sample.voltage_v and not voltages:
        return False, passed, "no phase voltage"
    passed += len(voltages)
    if sample.frequency_hz is not None:
        f = _as_float(sample.frequency_hz)
        if not (math.isfinite(f) and FREQUENCY_RANGE_HZ[0] <= f <= FREQUENCY_RANGE_HZ[1]):
            return (
                False,
                passed,
                f"frequency {f:.4g} Hz out of {FREQUENCY_RANGE_HZ[0]:g}-{FREQUENCY_RANGE_HZ[1]:g}",
            )
        passed += 1
    if abs(sample.power_w) > MAX_POWER_W:
        return False, passed, f"power {shown_number(sample.power_w)} W implausible"
    for quantity, values, bound, unit in (
        ("power", sample.phase_power_w, MAX_POWER_W, "W"),
        ("current", sample.current_a, MAX_CURRENT_A, "A"),
    ):
        for phase, value in enumerate(values, 1):
            if value is not None and not (math.isfinite(_as_float(value)) and abs(value) <= bound):
                return False, passed, f"L{phase} {quantity} {shown_number(value)} {unit} implausible"
    for name in ("import_wh", "export_wh"):
        value = getattr(sample, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER_WH:
            return False, passed, f"{name} {_shown(value)} implausible"
    if sample.serial is not None:
        try:
            check_serial(sample.serial, "serial")
        except GenesisError:  # a reading could not carry it: garbage, or the wrong registers
            return (
                False,
                passed,
                f"serial {sample.serial[:80]!r} is not a meter serial (1-64 printable ASCII "
                "characters, no spaces)",
            )
    return True, passed, "ok"


# The unit id most meters answer on; the default probe also tries each profile's own
# (``[transport] unit_id``: 240 for the Fronius Datamanager's meter, 11 for the DTSU666-H).
DEFAULT_UNIT = 1


def unit_plan(targets, units: Sequence[int] | None) -> list[tuple[int, list]]:
    """Which (profile, target) pairs to try on which unit id, in order. Given ``units``: every
    pair on each of them. None (the default): every pair on unit 1, then each profile on its
    own declared unit id; each distinct unit appears once."""
    if units is not None:
        return [(unit, list(targets)) for unit in dict.fromkeys(units)]
    plan: dict[int, list] = {DEFAULT_UNIT: list(targets)}
    for profile, target in targets:
        own = profile.transport.unit_id
        if own != DEFAULT_UNIT:
            plan.setdefault(own, []).append((profile, target))
    return list(plan.items())


def describe_units(plan: Sequence[tuple[int, list]]) -> str:
    """The units of a default plan for a message: '1, 11 (dtsu666-h), 240 (fronius-smart-meter)'."""
    parts = []
    for unit, pairs in plan:
        names = sorted({profile.name for profile, _ in pairs})
        parts.append(str(unit) if unit == DEFAULT_UNIT else f"{unit} ({', '.join(names)})")
    return ", ".join(parts)


def probe_meter(
    targets,
    units: Sequence[int] | None,
    timeout_s: float,
    max_time_s: float,
    log=lambda result: None,
) -> list[ProbeResult]:
    """Try each (unit, profile) once, within ``max_time_s`` overall. ``targets`` is a list of
    (profile, transport target) pairs; ``units`` the unit ids to try them all on, or None for
    unit 1 and each profile's own unit id (``unit_plan``). A unit that never answers is not
    asked again on the same line settings."""
    from meter_agent.modbus_reader import (
        MeterConnectionError,
        MeterDiscoveryError,
        MeterError,
        MeterExceptionResponse,
        MeterReader,
        MeterTimeout,
    )
    from peerwatt.errors import UserError

    deadline = time.monotonic() + max_time_s
    results: list[ProbeResult] = []
    for unit, pairs in unit_plan(targets, units):
        silent_lines: set = set()
        for profile, target in pairs:
            line = getattr(target, "baudrate", None), getattr(target, "parity", None)
            if line in silent_lines:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return results
            reader = MeterReader(
                profile, target, unit_id=unit, timeout_s=min(timeout_s, remaining), retries=0
            )
            try:
                result = _probe_one(reader, profile.name, unit)
            except MeterConnectionError as exc:
                if not exc.closed_by_peer:  # nothing at the address: no profile to blame
                    reason = str(exc).removeprefix(f"{reader.where}: ")
                    hint = advice(exc, hasattr(target, "host"))
                    raise UserError(f"{reason}: {hint}", exit_code=3) from None
                result = ProbeResult(unit, profile.name, "error", "connection closed by the device")
            except MeterTimeout:
                silent_lines.add(line)
                result = ProbeResult(unit, profile.name, "silent", "no answer")
            except MeterExceptionResponse as exc:
                if exc.code in (10, 11):
                    silent_lines.add(line)
                    result = ProbeResult(unit, profile.name, "silent", "gateway: no answer from this unit")
                else:
                    result = ProbeResult(unit, profile.name, "error", exception_label(exc.code))
            except MeterDiscoveryError as exc:
                seen = reader.sunspec_models_seen
                if seen:
                    detail = f"SunSpec models {', '.join(map(str, seen))}: none usable"
                else:
                    detail = (
                        "no SunSpec marker 'SunS'" if "marker" in str(exc) else "no usable SunSpec layout"
                    )
                result = ProbeResult(unit, profile.name, "error", detail)
            except MeterError as exc:
                detail = error_label(exc, hasattr(target, "host"), reader.where)
                result = ProbeResult(unit, profile.name, "error", detail)
            finally:
                reader.close()
            results.append(result)
            log(result)
    return results


def exception_label(code: int) -> str:
    """A probe's words for a Modbus exception: only 'no such register' means 'not this map'."""
    from meter_agent.modbus_reader import EXCEPTION_NAMES

    name = EXCEPTION_NAMES.get(code, "unknown exception")
    if code in (1, 2):
        return f"exception {code} ({name}: not this map)"
    return f"exception {code} ({name}: the device answered but failed; try again)"


def error_label(exc: Exception, tcp: bool, where: str = "") -> str:
    """A probe's words for a failed read other than an exception code, silence or SunSpec
    discovery: what it means, not the error's class name (found in a QA pass: lines said
    `error  FramingError` and `error  ValueUnavailable`)."""
    from meter_agent.modbus_reader import (
        MeterFramingError,
        MeterShortAnswer,
        MeterValueUnavailable,
        MeterWrongAnswer,
    )

    if isinstance(exc, MeterWrongAnswer):
        return f"answer to another request ({exc.mismatch}; a gateway mixing up requests, or another client)"
    if isinstance(exc, MeterShortAnswer):
        return (
            f"short answer ({exc.received} of {exc.asked} registers: not this map, or a gateway's "
            "limit per request)"
        )
    if isinstance(exc, MeterFramingError):
        if not tcp:
            return "garbled answer (CRC or framing error: check baud rate, parity and wiring)"
        what = {
            "other unit": f"a frame for another unit id, {exc.answered}",
            "other transaction": (
                "a frame for another request, not for another unit id: another client, or a gateway "
                "mixing up answers"
            ),
            "incomplete": "a frame not complete within the timeout: a slow device or gateway",
            "no frame": "no Modbus TCP frame: RTU over TCP, or another protocol on this port",
        }.get(exc.cause, "a frame holding no valid answer")
        return f"no valid Modbus TCP answer ({what})"
    if isinstance(exc, MeterValueUnavailable):
        names = ", ".join(exc.names) or "a value"
        return (
            f"not available ({names}: NaN or a 'not available' value; the device may be starting, "
            "or this is not its map)"
        )
    return str(exc).removeprefix(f"{where}: ") if where else str(exc)


def _probe_one(reader, name: str, unit: int) -> ProbeResult:
    """Read once, judge plausibility, then ask the profile's identification registers."""
    sample = reader.read()
    ok, checks, reason = plausibility(sample)
    summary = _summary(sample, reader.sunspec_models_seen)
    if not ok:
        return ProbeResult(unit, name, "implausible", f"{reason} ({summary})", checks)
    identified = reader.identify()
    wrong = [(check, shown) for check, matched, shown in identified if not matched]
    if wrong:
        check, shown = wrong[0]
        return ProbeResult(unit, name, "other-model", f"{check.what} reads {shown} ({summary})", checks)
    if identified:
        names = ", ".join(f"{check.what} {shown}" for check, _, shown in identified)
        return ProbeResult(unit, name, "identified", f"{summary}; {names}", checks)
    return ProbeResult(unit, name, "match" if checks else "plausible", summary, checks)


def _summary(sample, sunspec_chain: Sequence[int] = ()) -> str:
    parts = [
        f"{shown_number(sample.power_w)} W",
        f"import {shown_number(sample.import_wh)} Wh",
        f"export {shown_number(sample.export_wh)} Wh",
    ]
    volts = [shown_number(v, ".1f") for v in sample.voltage_v if v is not None]
    if volts:
        parts.append("/".join(volts) + " V")
    if sample.frequency_hz is not None:
        parts.append(f"{shown_number(sample.frequency_hz, '.2f')} Hz")
    if sample.serial:
        parts.append(f"serial {sample.serial}")
    if sample.sunspec_model:
        parts.append(f"SunSpec model {sample.sunspec_model} (chain {', '.join(map(str, sunspec_chain))})")
    return ", ".join(parts)


VERDICT_RANK = {"identified": 2, "match": 1, "plausible": 0}


def best(results: Sequence[ProbeResult]) -> ProbeResult | None:
    """The most convincing answer: a profile whose identification registers confirm the model,
    else a match with the most passed checks, else a plausible one. A remaining tie is reported
    as ambiguous by the caller, never settled by name."""
    ranked = [r for r in results if r.verdict in VERDICT_RANK]
    ranked.sort(key=lambda r: (VERDICT_RANK[r.verdict], r.checked), reverse=True)
    return ranked[0] if ranked else None


def ties(results: Sequence[ProbeResult], found: ProbeResult) -> list[ProbeResult]:
    """Other answers exactly as convincing as ``found`` (same unit, verdict and checks)."""
    return [
        r
        for r in results
        if r is not found
        and r.unit_id == found.unit_id
        and r.verdict == found.verdict
        and r.checked == found.checked
    ]
