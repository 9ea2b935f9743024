"""Found in a QA pass: a 65,500-character `[homeassistant] prefix` passed the config check, then
Agent.start() raised `ValueError: topic is 65556 bytes long; MQTT allows at most 65535` and
`peerwatt agent` printed a traceback (agent.start() was outside its ValueError handling). The
prefix is now checked at load with the discovery topic it makes, in one line naming the key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meter_agent.config import load_agent_config
from peerwatt.errors import UserError
from tests.meter_agent.test_agent_cli import write_genesis_and_key
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

# homeassistant/device/peerwatt_<32 hex>/config: the prefix may take what the rest leaves
LONGEST_PREFIX = 65535 - len("/device/peerwatt_") - 32 - len("/config")


def write_config(folder: Path, prefix: str, community: str = "c", port: int = 1) -> Path:
    path = folder / "agent.toml"
    path.write_text(
        f'community = "{community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = {port}\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[homeassistant]\nenabled = true\nprefix = "{prefix}"\n'
    )
    return path


def test_a_prefix_whose_discovery_topic_mqtt_cannot_carry_is_refused_at_load(tmp_path):
    with pytest.raises(UserError) as refused:
        load_agent_config(write_config(tmp_path, "h" * (LONGEST_PREFIX + 1)))
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400, message
    assert "[homeassistant]" in message and "prefix" in message and "65535" in message, message
    assert load_agent_config(write_config(tmp_path, "h" * LONGEST_PREFIX)).homeassistant_prefix


def test_the_agent_command_says_it_in_one_line(tmp_path):
    c = make_community(validators=1, members=1, app="market", time=1_750_000_000)
    write_genesis_and_key(tmp_path, c, c.meters[0])
    with socket.create_server(("127.0.0.1", 0)) as closed:  # a port nothing answers on after this
        port = closed.getsockname()[1]
    config = write_config(tmp_path, "h" * 65500, community=c.community, port=port)
    out = peerwatt("agent", "-c", str(config), timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "prefix" in lines[0] and "65535" in lines[0]
