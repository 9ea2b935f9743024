"""Read peerwatt's meter simulators with the third-party clients people use on the real devices.

    .venv/bin/python scripts/check_third_party_meters.py [--venvs /tmp/peerwatt-third-party]

Starts our simulators (SDM630, SDM120, SunSpec models 201-204/211-214, plain and behind an
inverter's blocks) on loopback, then reads them with

* ``sdm_modbus`` 0.7.0 (``read_all()`` of input and holding registers), which needs pymodbus
  < 3.7, so it runs in a virtualenv of its own with pymodbus 3.6.9;
* ``pysunspec2`` 1.3.7 (``scan()`` and the meter model's points), in another virtualenv.

The virtualenvs are created under ``--venvs`` on the first run (pip needs the package index).
Each client prints what it read as JSON; this script compares it with the simulator's truth and
prints one line per check. Exit code 0 when every value matches, 1 otherwise. Not part of the
test suite (it downloads packages); tests/meter_agent/test_published_maps.py does the same
reads with pymodbus inside the project's own environment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meter_agent.household import Household  # noqa: E402
from meter_agent.simulator import MeterSimulator  # noqa: E402

MIDDAY = 1750500000  # 2025-06-21 10:00 UTC: the simulated home exports
CLIENTS = {
    "sdm": ["sdm_modbus==0.7.0", "pymodbus==3.6.9"],
    "sunspec": ["pysunspec2==1.3.7"],
}

SDM_CLIENT = """
import json, sys
import sdm_modbus
cls = getattr(sdm_modbus, sys.argv[1])
meter = cls(host="127.0.0.1", port=int(sys.argv[2]), unit=1, timeout=2)
out = {"input": meter.read_all(sdm_modbus.registerType.INPUT)}
if sys.argv[1] != "SDM72V2":  # its holding batch spans 0x000A-0xF011: no meter answers that
    out["holding"] = meter.read_all(sdm_modbus.registerType.HOLDING)
print(json.dumps(out))
"""

SUNSPEC_CLIENT = """
import json, sys
import sunspec2.modbus.client as client
device = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=int(sys.argv[1]))
device.scan()
out = {"models": [m.model_id for m in device.model_list]}
common = device.models[1][-1]
meter = device.models[int(sys.argv[2])][0]
for name in ("W", "TotWhImp", "TotWhExp", "Hz", "PhVphA"):
    point = getattr(meter, name)
    out[name] = point.cvalue
out["SN"] = common.SN.cvalue
device.close()
print(json.dumps(out))
"""


def ensure_venv(root: Path, name: str) -> Path:
    python = root / name / "bin" / "python"
    if not python.exists():
        print(f"creating {root / name} with {' '.join(CLIENTS[name])}", flush=True)
        venv.create(root / name, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *CLIENTS[name]], check=True)
    return python


def run(python: Path, code: str, *args: object) -> dict:
    out = subprocess.run(
        [str(python), "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return json.loads(out.stdout)


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, what: str, got: float | str | None, want: float | str, tolerance: float = 0.0) -> None:
        if isinstance(want, str) or got is None or isinstance(got, str):
            good = got == want
        else:
            good = abs(float(got) - float(want)) <= tolerance
        self.failures += not good
        print(f"{'ok  ' if good else 'FAIL'} {what}: read {got!r}, simulator {want!r}")


def check_sdm(python: Path, report: Report) -> None:
    pairs = (("sdm630", "SDM630"), ("sdm120", "SDM120"), ("sdm230", "SDM230"), ("sdm72dm", "SDM72V2"))
    for profile, cls in pairs:
        with MeterSimulator(profile, Household(seed=3), start_time=MIDDAY) as sim:
            sim.clock.pause()
            data = run(python, SDM_CLIENT, cls, sim.port)
            truth = sim.truth()
        inp, hold = data["input"], data.get("holding")
        three_phase = profile in ("sdm630", "sdm72dm")
        power = {"sdm630": "total_power_active", "sdm72dm": "total_power"}.get(profile, "power_active")
        voltage = "l1_voltage" if three_phase else "voltage"
        where = f"sdm_modbus {cls}.read_all()"
        report.check(f"{where} {power}", inp.get(power), truth.power_w, 0.01)
        report.check(f"{where} import kWh", inp.get("import_energy_active"), truth.import_wh / 1000, 0.001)
        report.check(f"{where} export kWh", inp.get("export_energy_active"), truth.export_wh / 1000, 0.001)
        report.check(f"{where} {voltage}", inp.get(voltage), truth.voltage_v[0], 0.01)
        report.check(f"{where} frequency", inp.get("frequency"), truth.frequency_hz, 0.01)
        if hold is not None and "serial_number" in hold:  # 0.7.0's SDM230 map has no serial
            report.check(f"{where} serial_number", str(hold.get("serial_number")), truth.serial)
        if profile == "sdm630":
            report.check(f"{where} system_type (holding)", hold.get("system_type"), 3)


def check_sunspec(python: Path, report: Report) -> None:
    for model in (201, 202, 203, 204, 211, 212, 213, 214):
        for inverter in (False, True):
            options = {"sunspec_model": model, "sunspec_inverter": inverter}
            with MeterSimulator("sunspec", Household(seed=3), start_time=MIDDAY, **options) as sim:
                sim.clock.pause()
                data = run(python, SUNSPEC_CLIENT, sim.port, model)
                truth = sim.truth()
            where = f"pysunspec2 model {model}{' behind an inverter' if inverter else ''}"
            chain = [1, 103, 1, model] if inverter else [1, model]
            report.check(f"{where} chain", str(data["models"]), str(chain))
            report.check(f"{where} W", data["W"], truth.power_w, 1.0)
            report.check(f"{where} TotWhImp", data["TotWhImp"], truth.import_wh, 1.0)
            report.check(f"{where} TotWhExp", data["TotWhExp"], truth.export_wh, 1.0)
            report.check(f"{where} Hz", data["Hz"], truth.frequency_hz, 0.01)
            report.check(f"{where} PhVphA", data["PhVphA"], truth.voltage_v[0], 0.1)
            report.check(f"{where} meter SN (last common block)", data["SN"], truth.serial)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venvs", default="/tmp/peerwatt-third-party", help="where the client venvs live")
    args = parser.parse_args()
    root = Path(args.venvs)
    root.mkdir(parents=True, exist_ok=True)
    report = Report()
    check_sdm(ensure_venv(root, "sdm"), report)
    check_sunspec(ensure_venv(root, "sunspec"), report)
    print(f"{report.failures} mismatches")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
