"""`peerwatt meter`: read a real meter once (`read`) or find out which meter answers (`probe`).

The probe itself is meter_agent/probe.py; this module parses, calls it and prints."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import click

from meter_agent.probe import (
    ProbeResult,
    advice,
    best,
    describe_units,
    probe_meter,
    shown_number,
    ties,
    unit_plan,
)
from peerwatt.errors import UserError


def _profiles(names: Sequence[str], profile_file: str | None, profile_dirs: Sequence[str]):
    from meter_agent.profile import ProfileError, find_profile, profile_names

    try:
        if profile_file:
            return [find_profile(profile_file)]
        return [find_profile(n, profile_dirs) for n in (names or profile_names(profile_dirs))]
    except ProfileError as exc:
        raise UserError(str(exc)) from None


def _target(
    host: str | None,
    serial: str | None,
    port: int | None,
    baud: int | None,
    parity: str | None,
    stopbits: int | None,
    profile,
):
    from meter_agent.modbus_reader import SerialTarget, TcpTarget

    if (host is None) == (serial is None):
        raise UserError("give exactly one of --host (Modbus TCP) or --serial (Modbus RTU device)")
    defaults = profile.transport
    if host is not None:
        return TcpTarget(host, port or defaults.tcp_port)
    return SerialTarget(
        serial,  # type: ignore[arg-type]
        baudrate=baud or defaults.baudrate,
        parity=parity or defaults.parity,
        stopbits=stopbits or defaults.stopbits,
    )


@click.group()
def meter() -> None:
    """Read a meter (Modbus, P1, SML, Shelly HTTP), or find out which Modbus meter answers."""


_connection_options = [
    click.option("--host", help="Modbus TCP device or RTU-over-TCP gateway."),
    click.option("--port", type=click.IntRange(1, 65535), help="TCP port (default: the profile's, 502)."),
    click.option("--serial", "serial_device", help="Serial device for Modbus RTU, e.g. /dev/ttyUSB0."),
    click.option("--baud", type=click.IntRange(300, 921600), help="RTU baud rate (default: the profile's)."),
    click.option("--parity", type=click.Choice(["N", "E", "O"]), help="RTU parity (default: the profile's)."),
    click.option("--stopbits", type=click.IntRange(1, 2), help="RTU stop bits (default: the profile's)."),
    click.option("--profile-dir", "profile_dirs", multiple=True, help="Extra folder of profile files."),
]


def connection_options(func):
    for option in reversed(_connection_options):
        func = option(func)
    return func


@meter.command("read")
@click.option(
    "--source",
    type=click.Choice(["modbus", "p1", "sml", "shelly-http"]),
    default="modbus",
    show_default=True,
    help="modbus: a meter read with a profile; p1: a DSMR smart meter's P1 port (serial or TCP dongle); "
    "sml: a German meter's optical SML port (IR head on --serial, or an IR-head bridge's --host/--port); "
    "shelly-http: a Shelly Pro 3EM's RPC API (--host, --port default 80).",
)
@click.option("--profile", "profile_name", help="Meter profile name (see docs/meters.md).")
@click.option("--profile-file", type=click.Path(dir_okay=False), help="A profile TOML file of your own.")
@connection_options
@click.option(
    "--unit", "unit_id", type=click.IntRange(0, 247), help="Modbus unit id (default: the profile's)."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--retries", type=click.IntRange(0, 10), default=1, show_default=True, help="Further attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print the reading as JSON.")
def read(
    source: str,
    profile_name: str | None,
    profile_file: str | None,
    host: str | None,
    port: int | None,
    serial_device: str | None,
    baud: int | None,
    parity: str | None,
    stopbits: int | None,
    profile_dirs: tuple[str, ...],
    unit_id: int | None,
    timeout_s: float,
    retries: int,
    as_json: bool,
) -> None:
    """Read the meter once and print power, counters and per-phase values."""
    from meter_agent.modbus_reader import MeterError, MeterReader

    if source == "p1":
        _read_p1(host, port, serial_device, baud, timeout_s, retries, as_json)
        return
    if source == "sml":
        _read_sml(host, port, serial_device, baud, timeout_s, retries, as_json)
        return
    if source == "shelly-http":
        _read_shelly_http(host, port, serial_device, timeout_s, retries, as_json)
        return
    if (profile_name is None) == (profile_file is None):
        raise UserError(
            "give --profile NAME or --profile-file FILE (unsure which? run `peerwatt meter probe`)"
        )
    (profile,) = _profiles([profile_name] if profile_name else [], profile_file, profile_dirs)
    target = _target(host, serial_device, port, baud, parity, stopbits, profile)
    reader = MeterReader(profile, target, unit_id=unit_id, timeout_s=timeout_s, retries=retries)
    try:
        sample = reader.read()
    except MeterError as exc:
        raise UserError(f"{exc}: {advice(exc, host is not None)}", exit_code=3) from None
    finally:
        reader.close()
    _show(sample, target.describe(), as_json, "the wrong profile? `peerwatt meter probe` finds the right one")


def _show(sample, where: str, as_json: bool, hint: str) -> None:
    """Print a reading; then exit 1 with one line if it is one the agent would refuse to trade on
    (meter_agent/probe.py's bounds), with ``hint`` saying what to check."""
    from meter_agent.probe import AGENT_VOLTAGE_RANGE_V, plausibility

    if as_json:
        click.echo(json.dumps(sample.to_dict(), sort_keys=True))
    else:
        click.echo(format_sample(sample, where))
    plausible, _checks, why = plausibility(sample, AGENT_VOLTAGE_RANGE_V)
    if not plausible:
        raise UserError(f"implausible reading: {why}: {hint}", exit_code=1)


def _read_p1(
    host: str | None,
    port: int | None,
    serial_device: str | None,
    baud: int | None,
    timeout_s: float,
    retries: int,
    as_json: bool,
) -> None:
    """`meter read --source p1`: wait for one DSMR telegram (CRC checked) and print it."""
    from meter_agent.modbus_reader import MeterError, TcpTarget
    from meter_agent.p1 import P1_BAUDRATE, TELEGRAM_WAIT_S, P1Reader, P1SerialTarget
    from meter_agent.sources import P1_DEFAULT_PORT

    if (host is None) == (serial_device is None):
        raise UserError("give --host (a P1 Wi-Fi dongle) or --serial (a P1 cable), not both")
    target = (
        TcpTarget(host, port or P1_DEFAULT_PORT)
        if host is not None
        else P1SerialTarget(serial_device, baud or P1_BAUDRATE)  # type: ignore[arg-type]
    )
    # a DSMR 5 meter sends a telegram every second, DSMR 4 every 10 s: the agent's wait
    reader = P1Reader(target, timeout_s=max(timeout_s, TELEGRAM_WAIT_S), retries=retries)
    try:
        sample = reader.read()
    except MeterError as exc:
        raise UserError(
            f"{exc}: check the cable or the dongle's address and port, and that the P1 port is enabled",
            exit_code=3,
        ) from None
    finally:
        reader.close()
    _show(sample, target.describe(), as_json, "not a household meter's values: check the device")


def _read_sml(
    host: str | None,
    port: int | None,
    serial_device: str | None,
    baud: int | None,
    timeout_s: float,
    retries: int,
    as_json: bool,
) -> None:
    """`meter read --source sml`: wait for one SML file (CRC checked) and print it."""
    from meter_agent.modbus_reader import MeterError, TcpTarget
    from meter_agent.sml import SML_BAUDRATE, SmlReader, SmlSerialTarget

    if (host is None) == (serial_device is None):
        raise UserError("give --host and --port (an IR-head bridge) or --serial (an IR head), not both")
    if host is not None and port is None:
        raise UserError("--source sml --host needs --port (the bridge's raw TCP port)")
    target = (
        TcpTarget(host, port)  # type: ignore[arg-type]
        if host is not None
        else SmlSerialTarget(serial_device, baud or SML_BAUDRATE)  # type: ignore[arg-type]
    )
    reader = SmlReader(target, timeout_s=max(timeout_s, 5.0), retries=retries)  # files every 1-4 s
    try:
        sample = reader.read()
    except MeterError as exc:
        raise UserError(
            f"{exc}: check the IR head's position on the optical port, the baud rate (--baud), "
            "or the bridge's address and port",
            exit_code=3,
        ) from None
    finally:
        reader.close()
    _show(sample, target.describe(), as_json, "not a household meter's values: check the device")


def _read_shelly_http(
    host: str | None,
    port: int | None,
    serial_device: str | None,
    timeout_s: float,
    retries: int,
    as_json: bool,
) -> None:
    """`meter read --source shelly-http`: Shelly.GetDeviceInfo, EM.GetStatus, EMData.GetStatus."""
    from meter_agent.modbus_reader import MeterError
    from meter_agent.shelly_http import DEFAULT_PORT, ShellyHttpReader

    if host is None or serial_device is not None:
        raise UserError("--source shelly-http needs --host (the Shelly's address) and no --serial")
    reader = ShellyHttpReader(host, port or DEFAULT_PORT, timeout_s=max(timeout_s, 2.0), retries=retries)
    try:
        sample = reader.read()
    except MeterError as exc:
        raise UserError(
            f"{exc}: check the address, that the device is a Shelly Pro 3EM on the network, and that "
            "authentication is off",
            exit_code=3,
        ) from None
    where = reader.where.removeprefix("Shelly Pro 3EM at ")
    _show(sample, where, as_json, "not a household meter's values: check the device")


def format_sample(sample, where: str) -> str:
    """A reading as a few human lines; a value no meter reads is shown bounded (3e+38), not as a
    39-digit number (`_show` then says it is implausible)."""
    direction = "import" if sample.power_w > 0 else "export" if sample.power_w < 0 else "idle"
    lines = [
        f"{sample.profile} at {where} unit {sample.unit_id}"
        + (f", serial {sample.serial}" if sample.serial else "")
        + (f", SunSpec model {sample.sunspec_model}" if sample.sunspec_model else ""),
        f"power     {shown_number(sample.power_w):>10} W ({direction})",
        f"import    {shown_number(sample.import_wh):>10} Wh",
        f"export    {shown_number(sample.export_wh):>10} Wh",
    ]

    def cell(values, i, fmt, unit):
        if not values:
            return ""
        if i >= len(values) or values[i] is None:
            return "n/a"
        return f"{shown_number(values[i], fmt)} {unit}"

    phases = max(len(sample.voltage_v), len(sample.current_a), len(sample.phase_power_w))
    for i in range(phases):
        parts = [
            cell(sample.voltage_v, i, ".1f", "V"),
            cell(sample.current_a, i, ".2f", "A"),
            cell(sample.phase_power_w, i, ".0f", "W"),
        ]
        lines.append(f"L{i + 1}        " + "  ".join(p for p in parts if p))
    if sample.frequency_hz is not None:
        lines.append(f"frequency {shown_number(sample.frequency_hz, '.2f'):>10} Hz")
    return "\n".join(lines)


@meter.command("probe")
@connection_options
@click.option(
    "--units",
    help="Unit ids to try, e.g. 1,2,3 or 1-5 (default: 1, and each profile's own unit id, e.g. 240 "
    "for fronius-smart-meter).",
)
@click.option("--profiles", "profile_list", help="Profiles to try (default: all known).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.05, 10),
    default=0.5,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--max-time",
    "max_time_s",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Give up after this many seconds in total.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the attempts as JSON.")
def probe(
    host: str | None,
    port: int | None,
    serial_device: str | None,
    baud: int | None,
    parity: str | None,
    stopbits: int | None,
    profile_dirs: tuple[str, ...],
    units: str | None,
    profile_list: str | None,
    timeout_s: float,
    max_time_s: float,
    as_json: bool,
) -> int:
    """Try the known profiles and unit ids; say which meter answers with plausible values."""
    unit_ids = parse_units(units)
    names = [n.strip() for n in profile_list.split(",") if n.strip()] if profile_list else []
    profiles = _profiles(names, None, profile_dirs)
    targets = [(p, _target(host, serial_device, port, baud, parity, stopbits, p)) for p in profiles]
    if serial_device is not None:  # try the common line settings together
        targets.sort(key=lambda pt: (pt[1].baudrate, pt[1].parity))

    def log(result: ProbeResult) -> None:
        if not as_json:
            click.echo(f"unit {result.unit_id:<3} {result.profile:<16} {result.verdict:<11} {result.detail}")

    tried_units = units if units is not None else describe_units(unit_plan(targets, None))
    started = time.monotonic()
    results = probe_meter(targets, unit_ids, timeout_s, max_time_s, log)
    elapsed = time.monotonic() - started
    found = best(results)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "attempts": [r.__dict__ for r in results],
                    "found": None if found is None else {"unit_id": found.unit_id, "profile": found.profile},
                    "seconds": round(elapsed, 2),
                },
                sort_keys=True,
            )
        )
    if host:
        where = f"--host {host}" + (f" --port {port}" if port else "")
    else:
        where = f"--serial {serial_device}" + (f" --baud {baud}" if baud else "")
    tried = len({(r.unit_id, r.profile) for r in results})
    if found is None:
        slow = any(r.verdict == "silent" for r in results)
        hint = f"; a slow device or gateway may need a longer --timeout (now {timeout_s:g} s)" if slow else ""
        raise UserError(
            f"no known meter answered with plausible values at {where} (units {tried_units}, {tried} "
            f"attempts in {elapsed:.1f} s): check wiring and settings, try more --units, or write a profile "
            f"(docs/meters.md){hint}",
            exit_code=1,
        )
    if not as_json:
        others = ties(results, found)
        strength = {
            "identified": "",
            "match": "",
            "plausible": " (plausible: this profile has no voltage/frequency to confirm it)",
        }[found.verdict]
        if others:
            names = ", ".join(r.profile for r in others)
            strength += f" (ambiguous: {names} answered the same; no register tells them apart)"
        click.echo(
            f"found: {found.profile} at unit {found.unit_id}{strength}; read it with: "
            f"peerwatt meter read --profile {found.profile} {where} --unit {found.unit_id}"
        )
    return 0


def parse_units(text: str | None) -> list[int] | None:
    """'1,2,5-7' -> [1, 2, 5, 6, 7] (unit ids 0..247, at most 247 of them); None (no --units)
    stays None: probe's default, unit 1 and each profile's own unit id."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                out.extend(range(low, high + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--units {text!r}: use numbers like 1,2,5-7") from None
    if not out or any(not 0 <= u <= 247 for u in out):
        raise UserError(f"--units {text!r}: unit ids are 0..247")
    return list(dict.fromkeys(out))
