"""QA pass on meter reading, finding 7: without --units the probe also tries each profile's own
unit id (Fronius Smart Meter 240, DTSU666-H 11), each distinct unit once; `sim-meter` serves on
the profile's unit id unless --unit is given, so `meter read --profile NAME` reads it with its
defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from meter_agent.modbus_reader import TcpTarget
from meter_agent.probe import best, probe_meter
from meter_agent.profile import builtin_profiles, find_profile
from tests.support.cli import peerwatt
from tests.support.sim_meter import sim_meter_process


@pytest.mark.parametrize(
    ("name", "unit", "options"),
    [("fronius-smart-meter", 240, {"sunspec_model": 213}), ("dtsu666-h", 11, {})],
)
def test_the_default_probe_finds_a_meter_on_its_profiles_own_unit(start_sim, name, unit, options):
    """Found in a QA pass: `meter probe` tried unit 1 only, so a Fronius Smart Meter (unit 240
    behind the Datamanager) or a DTSU666-H (unit 11) was never found with the defaults."""
    sim = start_sim(name, unit_id=unit, **options)
    out = peerwatt("meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--timeout", "0.3")
    assert out.returncode == 0, out.stdout + out.stderr
    found = out.stdout.strip().splitlines()[-1]
    assert found.startswith(f"found: {name} at unit {unit}"), out.stdout
    assert f"--unit {unit}" in found
    tried = [line.split()[1:3] for line in out.stdout.splitlines() if line.startswith("unit ")]
    assert tried[0][0] == "1"  # unit 1 first (silent: asked once)
    assert [t for t in tried if t[0] == str(unit)] == [[str(unit), name]]  # only the profile naming it


def test_the_default_units_are_each_tried_once_and_named_when_nothing_answers(start_sim):
    sim = start_sim("sdm630")
    sim.inject("timeout")
    profiles = builtin_profiles()
    target = TcpTarget("127.0.0.1", sim.port)
    results = probe_meter([(p, target) for p in profiles], None, 0.2, 20)
    assert best(results) is None
    units = sorted({r.unit_id for r in results})
    assert units == sorted({1, *(p.transport.unit_id for p in profiles)})
    assert [r.unit_id for r in results].count(240) == 1  # silent: asked once
    out = peerwatt("meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--timeout", "0.2")
    assert out.returncode == 1
    assert "(units 1, 11 (dtsu666-h), 240 (fronius-smart-meter)," in out.stderr, out.stderr


def test_explicit_units_are_the_only_ones_tried(start_sim):
    sim = start_sim("fronius-smart-meter", unit_id=240)
    target = TcpTarget("127.0.0.1", sim.port)
    results = probe_meter([(p, target) for p in builtin_profiles()], [1], 0.2, 20)
    assert {r.unit_id for r in results} == {1} and best(results) is None


@pytest.mark.parametrize(("name", "unit"), [("dtsu666-h", 11), ("fronius-smart-meter", 240)])
def test_sim_meter_serves_on_the_profiles_own_unit(name, unit):
    """Found in a QA pass: `sim-meter --profile dtsu666-h` served unit 1, so `meter read --profile
    dtsu666-h` with its defaults (unit 11) got no answer."""
    with sim_meter_process("--profile", name) as (_proc, line, port):
        assert f", unit {unit}," in line, line
        out = peerwatt("meter", "read", "--profile", name, "--host", "127.0.0.1", "--port", str(port))
    assert out.returncode == 0, out.stderr
    assert f"unit {unit}" in out.stdout.splitlines()[0]


def test_sim_meter_unit_option_still_wins():
    with sim_meter_process("--profile", "dtsu666-h", "--unit", "3") as (_proc, line, _port):
        assert ", unit 3," in line, line


def test_sim_meter_with_a_profile_declaring_unit_0_asks_for_unit(tmp_path):
    text = Path(find_profile("sdm630").source).read_text().replace("unit_id = 1", "unit_id = 0")
    path = tmp_path / "sdm630.toml"
    path.write_text(text)
    out = peerwatt("sim-meter", "--profile", str(path), "--port", "0", timeout=30)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: profile sdm630 declares unit_id 0 (broadcast): give --unit 1..247"
    ], out.stderr
