"""The optional sources (SML, MQTT, Shelly HTTP) keep the agent light: importing and opening them
pulls in no heavy or upper layer, and their libraries load only when a reader is made."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("pandas", "numpy", "flask", "chain", "market", "dashboard", "peerwatt")


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sml_modules_stay_light_and_load_smllib_lazily():
    loaded = _loaded(
        "import json, sys\n"
        "import meter_agent.sml, meter_agent.sml_simulator\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "smllib" not in loaded
    loaded = _loaded(
        "import json, sys\n"
        "from meter_agent.modbus_reader import TcpTarget\n"
        "from meter_agent.sml import SmlReader\n"
        "SmlReader(TcpTarget('127.0.0.1', 9))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "smllib" in loaded
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []


def test_shelly_http_modules_stay_light():
    loaded = _loaded(
        "import json, sys\n"
        "import meter_agent.shelly_http, meter_agent.shelly_simulator\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []


def test_mqtt_source_loads_paho_only_when_reading():
    loaded = _loaded(
        "import json, sys\n"
        "import meter_agent.mqtt_source, meter_agent.mqtt_simulator\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "paho" not in loaded
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []


def test_the_agent_finds_its_profiles_without_importlib_resources():
    """importlib.resources (and the zipfile/tempfile it pulls in) cost a running agent ~0.4 MB of
    its 43 MB RSS (bench_agent); the shipped profiles are package data beside the module."""
    loaded = _loaded(
        "import json, sys\n"
        "import peerwatt.cli, peerwatt.commands.agent, meter_agent.agent\n"
        "from meter_agent.profile import builtin_profile_dir, find_profile\n"
        "assert (builtin_profile_dir() / 'sdm630.toml').is_file()\n"
        "find_profile('sdm630')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert "importlib.resources" not in loaded
