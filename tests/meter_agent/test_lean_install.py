"""The base install (`pip install peerwatt`) is the household agent's: it declares what the agent
imports and nothing the agent does not (pyproject.toml; nodes, dashboard, reports and the demo
come as extras)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires

# What the agent's commands import: the run path, setup, meter tools, keys and messages.
AGENT_PATH = """
import json, sys
import peerwatt.cli, peerwatt.commands.agent, peerwatt.commands.meter, peerwatt.commands.sim_meter
import peerwatt.commands.keys, peerwatt.commands.msg, peerwatt.commands.process
import meter_agent.agent, meter_agent.sources, meter_agent.config, meter_agent.homeassistant
import meter_agent.simulator, meter_agent.p1_simulator, peerwatt.bus, peerwatt.metrics
from meter_agent.modbus_reader import TcpTarget
import meter_agent.p1
meter_agent.p1.P1Reader(TcpTarget("127.0.0.1", 9))  # loads dsmr-parser
import meter_agent.sml
meter_agent.sml.SmlReader(TcpTarget("127.0.0.1", 9))  # loads smllib
import segno  # only when the join request's QR code is shown
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""
# Base requirements the agent path need not import: tzdata is data zoneinfo reads only where
# the system has no zone files.
NOT_IMPORTED = {"tzdata"}


def _name(requirement: str) -> str:
    return re.split(r"[ <>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    base, extras = set(), set()
    for requirement in requires("peerwatt") or []:
        name = _name(requirement)
        if name == "peerwatt":
            continue
        (extras if "extra ==" in requirement else base).add(name)
    return base, extras - base


def _imported_distributions() -> set[str]:
    out = subprocess.run([sys.executable, "-c", AGENT_PATH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout)
    dists = packages_distributions()
    return {d.lower().replace("_", "-") for m in modules for d in dists.get(m, [])}


def test_the_agent_imports_nothing_that_only_an_extra_installs():
    base, extras_only = _declared()
    imported = _imported_distributions()
    assert not imported & extras_only, f"the agent imports extras-only packages: {imported & extras_only}"
    assert {"pandas", "numpy", "flask", "matplotlib", "amqtt", "rich"} <= extras_only


def test_every_base_requirement_is_used_by_the_agent():
    base, _ = _declared()
    imported = _imported_distributions()
    assert base - imported - NOT_IMPORTED == set()
