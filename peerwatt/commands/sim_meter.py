"""`peerwatt sim-meter`: serve a simulated meter (PV + household load) over Modbus TCP."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime

import click
from click.core import ParameterSource

from peerwatt.errors import UserError


def parse_start(text: str | None) -> float | None:
    """An ISO 8601 time as Unix seconds (a time without offset is UTC); None stays None."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--start {text!r} is not an ISO time (e.g. 2025-06-21T06:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@click.command("sim-meter")
@click.option(
    "--source",
    type=click.Choice(["modbus", "p1", "sml", "shelly-http"]),
    default="modbus",
    show_default=True,
    help="modbus: a Modbus meter speaking --profile; p1: a DSMR 5 P1 port writing telegrams; "
    "sml: a German meter's optical port pushing SML files; shelly-http: a Shelly Pro 3EM's HTTP RPC API.",
)
@click.option("--profile", "profile_name", help="Profile to speak: a name (e.g. sdm630) or a .toml file.")
@click.option(
    "--pty", "use_pty", is_flag=True, help="For --source p1 or sml: write to a pseudo-terminal, not TCP."
)
@click.option("--profile-dir", "profile_dirs", multiple=True, help="Extra folder of profile files.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=5020,
    show_default=True,
    help="TCP port (0 = any free port).",
)
@click.option(
    "--unit",
    "unit_id",
    type=click.IntRange(1, 247),
    help="Modbus unit id (default: the profile's, e.g. 11 for dtsu666-h, 240 for fronius-smart-meter).",
)
@click.option(
    "--pv-kwp", type=click.FloatRange(0, 1000), default=5.0, show_default=True, help="PV peak power."
)
@click.option(
    "--annual-kwh",
    type=click.FloatRange(0, 1_000_000),
    default=3500.0,
    show_default=True,
    help="Yearly household consumption.",
)
@click.option("--lat", type=click.FloatRange(-90, 90), default=52.52, show_default=True, help="Latitude.")
@click.option("--lon", type=click.FloatRange(-180, 180), default=13.40, show_default=True, help="Longitude.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True, max=1_000_000),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of load noise and clouds.")
@click.option("--start", "start_text", help="Simulated start time, ISO 8601 (default: now).")
@click.option(
    "--sunspec-model",
    type=click.Choice(["201", "202", "203", "204", "211", "212", "213", "214"]),
    default="213",
    show_default=True,
    help="For --profile sunspec: the meter model, integer+scale-factor (20x) or float (21x); "
    "x = 1 single phase, 2 split phase, 3 wye, 4 delta.",
)
@click.option(
    "--sunspec-inverter",
    is_flag=True,
    help="For --profile sunspec: put an inverter's common block and model 103 before the meter "
    "(as SolarEdge inverters chain their meters).",
)
def sim_meter(
    source: str,
    profile_name: str | None,
    use_pty: bool,
    profile_dirs: tuple[str, ...],
    host: str,
    port: int,
    unit_id: int | None,
    pv_kwp: float,
    annual_kwh: float,
    lat: float,
    lon: float,
    speed: float,
    seed: int,
    start_text: str | None,
    sunspec_model: str,
    sunspec_inverter: bool,
) -> int:
    """Serve a simulated meter until Ctrl-C."""
    from meter_agent.household import Household
    from meter_agent.p1_simulator import P1Simulator
    from meter_agent.profile import ProfileError, find_profile
    from meter_agent.shelly_simulator import ShellySimulator
    from meter_agent.simulator import MeterSimulator
    from meter_agent.sml_simulator import SmlSimulator

    _check_source_options(source, use_pty)
    start = parse_start(start_text)
    household = Household(pv_kwp=pv_kwp, annual_kwh=annual_kwh, lat=lat, lon=lon, seed=seed)
    simulator: MeterSimulator | P1Simulator | SmlSimulator | ShellySimulator
    if source == "shelly-http":
        simulator = ShellySimulator(household, port=port, host=host, speed=speed, start_time=start, seed=seed)
        return _serve(simulator, pv_kwp, annual_kwh, lat, lon, speed)
    if source == "sml":
        simulator = SmlSimulator(
            household, port=port, host=host, pty=use_pty, speed=speed, start_time=start, seed=seed
        )
        return _serve(simulator, pv_kwp, annual_kwh, lat, lon, speed)
    if source == "p1":
        simulator = P1Simulator(
            household, port=port, host=host, pty=use_pty, speed=speed, start_time=start, seed=seed
        )
        return _serve(simulator, pv_kwp, annual_kwh, lat, lon, speed)
    if profile_name is None:
        raise UserError("give --profile NAME (e.g. sdm630), or --source p1 for a P1 port")
    try:
        profile = find_profile(profile_name, profile_dirs)
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    if unit_id is None:
        unit_id = profile.transport.unit_id
        if unit_id == 0:
            raise UserError(f"profile {profile.name} declares unit_id 0 (broadcast): give --unit 1..247")
    try:
        simulator = MeterSimulator(
            profile,
            household,
            port=port,
            unit_id=unit_id,
            speed=speed,
            start_time=start,
            seed=seed,
            host=host,
            sunspec_model=int(sunspec_model),
            sunspec_inverter=sunspec_inverter,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return _serve(simulator, pv_kwp, annual_kwh, lat, lon, speed)


# the options only --source modbus reads (found in a QA pass: --source p1 --profile sdm630
# served P1 without a word)
MODBUS_OPTIONS = ("profile_name", "profile_dirs", "unit_id", "sunspec_model", "sunspec_inverter")


def _check_source_options(source: str, use_pty: bool) -> None:
    """Refuse options the chosen --source does not read, in one line."""
    if use_pty and source not in ("p1", "sml"):
        raise UserError(f"--pty is for --source p1 or sml; --source {source} serves TCP (--host, --port)")
    context = click.get_current_context()
    given = [
        param.opts[0]
        for param in context.command.params
        if param.name in MODBUS_OPTIONS
        and context.get_parameter_source(param.name) is not ParameterSource.DEFAULT
    ]
    if source != "modbus" and given:
        raise UserError(f"{', '.join(given)} only with --source modbus (this meter's source is {source})")


def _serve(simulator, pv_kwp: float, annual_kwh: float, lat: float, lon: float, speed: float) -> int:  # noqa: ANN001
    """Run a started-on-demand simulator until Ctrl-C or SIGTERM."""
    from meter_agent.simulator import SimulatorError

    stop = threading.Event()
    # Own handlers for Ctrl-C and SIGTERM (also when started in the background, where the
    # shell leaves SIGINT ignored): the main thread just waits for the stop event.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            simulator.start()
        except (SimulatorError, OSError) as exc:
            raise UserError(f"{exc}; choose another --port or stop the program using it") from None
        began = datetime.fromtimestamp(simulator.clock.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(
            f"sim-meter: serving {simulator.describe()}; PV {pv_kwp:g} kWp, {annual_kwh:g} kWh/a "
            f"at {lat:g},{lon:g}; clock x{speed:g} from {began}; Ctrl-C stops"
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("sim-meter: stopped")
    return 0
