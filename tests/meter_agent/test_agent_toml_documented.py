"""Every key agent.toml takes is documented where docs/agent.md lists them (step 4, "Config"):
found in a QA pass, `passphrase_file`, the top-level `client_id` and `[broker] keepalive` were
accepted and documented nowhere, though the docs said "The keys are the ones above, ..."."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meter_agent.config import HOMEASSISTANT_KEYS, MARKET_KEYS, METER_KEYS, MQTT_METER_KEYS, load_agent_config
from peerwatt.settings import BROKER_KEYS

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
TOP_LEVEL = [
    "community", "key", "passphrase_file", "genesis", "state_dir", "client_id", "heartbeat_s", "metrics_port",
]  # fmt: skip


def config_section() -> str:
    """docs/agent.md from step 4 (the agent.toml example and its keys) to step 5."""
    text = DOC.read_text()
    return text[text.index("4. **Config**") : text.index("5. **Run it**")]


@pytest.mark.parametrize(
    "key",
    sorted({*TOP_LEVEL, *METER_KEYS, *MQTT_METER_KEYS, *MARKET_KEYS, *HOMEASSISTANT_KEYS, *BROKER_KEYS}),
)
def test_each_key_is_documented_with_the_keys(key):
    assert re.search(rf"\b{key}\b", config_section()), f"{key} is not in docs/agent.md's step 4"


def test_the_top_level_keys_listed_here_are_the_ones_the_agent_takes(tmp_path):
    """(So the list above is the loader's: each is accepted, and a made-up one is not.)"""
    from peerwatt.errors import UserError

    path = tmp_path / "agent.toml"
    (tmp_path / "pass.txt").write_text("secret\n")
    path.write_text(
        'community = "oak"\nkey = "meter.key"\npassphrase_file = "pass.txt"\ngenesis = "genesis.toml"\n'
        'state_dir = "state"\nclient_id = "x"\nheartbeat_s = 60\nmetrics_port = 9101\n'
        '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\nkeepalive = 120\n'
    )
    cfg = load_agent_config(path)
    assert cfg.client_id == "x" and cfg.passphrase_file == tmp_path / "pass.txt"
    assert cfg.broker.keepalive == 120
    path.write_text(path.read_text().replace("client_id", "client_idd"))
    with pytest.raises(UserError, match="client_idd"):
        load_agent_config(path)
