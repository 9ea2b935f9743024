"""Per-phase values no meter reads are implausible as the total is, and no value is printed as a
39-digit number. Found in a QA pass: with an L1 power of 3e38 `meter read` printed `L1 ...
300000000549775575777803994281145270272 W` and exited 0 (only the total was checked); with a
total of 3e38 the 39 digits were printed before the `implausible reading` line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meter_agent.probe import AGENT_VOLTAGE_RANGE_V, MAX_POWER_W, plausibility
from meter_agent.profile import find_profile
from peerwatt.commands.meter import format_sample

from .test_cli import peerwatt
from .test_probe_huge_values import sample

LONG_NUMBER = re.compile(r"\d{13,}")  # more digits than any meter's value has


@pytest.mark.parametrize(
    "values, said",
    [
        ({"phase_power_w": (3e38, 10.0, 10.0)}, "L1 power 3e+38 W implausible"),
        ({"phase_power_w": (10.0, -(MAX_POWER_W + 1.0), None)}, "L2 power -250001.0 W implausible"),
        ({"phase_power_w": (10.0, 10.0, float("nan"))}, "L3 power nan W implausible"),
        ({"current_a": (1.0, 4e12, 1.0)}, "L2 current 4e+12 A implausible"),
    ],
)
def test_a_phase_value_beyond_the_totals_bound_is_implausible(values, said):
    plausible, _checks, why = plausibility(sample(**values), AGENT_VOLTAGE_RANGE_V)
    assert not plausible and why == said


def test_household_phase_values_are_still_plausible():
    values = {"phase_power_w": (3000.0, -2500.5, None), "current_a": (13.2, 11.0, None)}
    assert plausibility(sample(**values), AGENT_VOLTAGE_RANGE_V)[0]


def test_no_value_is_printed_as_a_39_digit_number():
    huge = sample(
        power_w=int(3e38),
        voltage_v=(230.0, 1e300, None),
        current_a=(2.0, -5e20, 1.0),
        phase_power_w=(3e38, float("inf"), 450.0),
        frequency_hz=1e40,
    )
    text = format_sample(huge, "here")
    assert not LONG_NUMBER.search(text), text
    assert "power          3e+38 W (import)" in text, text
    assert "L1        230.0 V  2.00 A  3e+38 W" in text, text
    assert "L2        1e+300 V  -5e+20 A  inf W" in text, text
    assert "frequency      1e+40 Hz" in text, text
    plain = format_sample(sample(voltage_v=(230.0, 231.0), phase_power_w=(450.4, -12.0)), "here")
    assert "power            100 W (import)" in plain and "L1        230.0 V  450 W" in plain, plain


def scaled_profile(tmp_path: Path, value: str) -> str:
    """The SDM630 map with ``value`` scaled by 1e36: the wrong scale of a profile of one's own."""
    text = Path(find_profile("sdm630").source).read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{value} = {{ address = "))
    path = tmp_path / "scaled.toml"
    path.write_text(text.replace(line, line.replace("}", ", scale = 1e36 }")))
    return str(path)


@pytest.mark.parametrize("value", ["power_l1_w", "power_w"])
def test_meter_read_of_an_absurd_value_is_one_error_line_and_no_long_number(start_sim, tmp_path, value):
    sim = start_sim("sdm630")
    out = peerwatt(
        "meter", "read", "--profile-file", scaled_profile(tmp_path, value),
        "--host", "127.0.0.1", "--port", str(sim.port),
    )  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "L1" in out.stdout and not LONG_NUMBER.search(out.stdout), out.stdout
    assert out.stderr.startswith("error: implausible reading: ") and out.stderr.count("\n") == 1, out.stderr
    # midday (conftest): the home exports, so the scaled values are negative
    said = ("L1 " if value == "power_l1_w" else "") + r"power -\d\.\d+e\+3[89] W"
    assert re.search(f"implausible reading: {said} implausible", out.stderr), out.stderr
