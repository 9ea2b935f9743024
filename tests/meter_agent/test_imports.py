"""The meter code runs on a Raspberry Pi inside the agent: it must not pull in heavy or upper layers."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("pandas", "numpy", "flask", "chain", "market", "dashboard", "peerwatt")


def test_meter_agent_imports_stay_light():
    code = (
        "import json, sys\n"
        "import meter_agent.profile, meter_agent.modbus_reader, meter_agent.counters\n"
        "import meter_agent.household, meter_agent.simulator, meter_agent.p1, meter_agent.p1_simulator\n"
        "from meter_agent.modbus_reader import TcpTarget\n"
        "meter_agent.p1.P1Reader(TcpTarget('127.0.0.1', 9))  # loads dsmr-parser\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []
