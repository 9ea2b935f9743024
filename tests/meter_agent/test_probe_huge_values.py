"""The plausibility check judges a reading with integers too large to print (str() and repr()
refuse over 4300 digits) or to make a float: 'implausible' in one line, no exception (found in a
QA pass: a 5000-digit counter from an MQTT payload gave a ValueError traceback in the agent)."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import MeterSample
from meter_agent.probe import AGENT_VOLTAGE_RANGE_V, plausibility

HUGE = 10**5000


def sample(**values) -> MeterSample:
    fields = dict(
        time=0, power_w=100, import_wh=1000, export_wh=400, voltage_v=(230.0,), current_a=(),
        phase_power_w=(), frequency_hz=50.0, serial=None, profile="x", unit_id=1,
    )  # fmt: skip
    return MeterSample(**{**fields, **values})


@pytest.mark.parametrize(
    "values, said",
    [
        ({"import_wh": HUGE}, "import_wh about 10**5000 implausible"),
        ({"export_wh": -HUGE}, "export_wh about -10**5000 implausible"),
        ({"power_w": HUGE}, "power about 10**5000 W implausible"),
        ({"voltage_v": (HUGE,)}, "voltage inf V out of 80-300"),
        ({"frequency_hz": -HUGE}, "frequency -inf Hz out of 45-65"),
        ({"import_wh": 10**11}, "import_wh 100000000000 implausible"),
    ],
)
def test_huge_values_are_implausible_in_one_line(values, said):
    plausible, _checks, why = plausibility(sample(**values), AGENT_VOLTAGE_RANGE_V)
    assert not plausible and why == said


def test_a_household_reading_is_still_plausible():
    assert plausibility(sample(), AGENT_VOLTAGE_RANGE_V)[0]
