"""agent.toml's [meter] keys must fit its source, the MQTT source's broker and topics must be
usable, and [homeassistant] prefix must be a topic to publish to: each is refused in one line at
load (found in a QA pass: source = "p1" with profile = "sdm630", "mqtt" with port = 1884, a
broker "mqtt://host:0" (port 1883 used), baudrate = 10**12, a topic with NUL (reported forever
as "not connected") and prefix "ha/#" (a traceback at start) were all accepted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meter_agent.config import load_agent_config
from peerwatt.errors import UserError

DOCS = Path(__file__).resolve().parents[2] / "docs"
HEAD = 'community = "c"\nkey = "k"\ngenesis = "g"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
MQTT = (
    'source = "mqtt"\nbroker = "mqtt://127.0.0.1:1883"\nserial = "S1"\n'
    'import = { topic = "a", path = "", unit = "kWh" }\n'
    'export = { topic = "b", path = "", unit = "kWh" }\n'
    'power = { topic = "c", path = "", unit = "W" }\n'
)


def load(tmp_path: Path, meter: str, tail: str = ""):
    path = tmp_path / "agent.toml"
    path.write_text(f"{HEAD}[meter]\n{meter}{tail}")
    return load_agent_config(path)


def meter_examples() -> list[str]:
    """The [meter] tables of docs/meters.md's agent.toml examples."""
    text = (DOCS / "meters.md").read_text()
    return [block for block in re.findall(r"```toml\n(.*?)```", text, re.S) if block.startswith("[meter]\n")]


@pytest.mark.parametrize("block", meter_examples())
def test_the_documented_meter_tables_load(tmp_path, block):
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + block)
    load_agent_config(path)


@pytest.mark.parametrize(
    "meter",
    [
        'profile = "sdm630"\nhost = "h"\nport = 502\nunit = 1\nclose_between_polls = true\nserial = "S"\n',
        'profile = "sdm630"\nserial_device = "/dev/ttyUSB0"\nbaudrate = 9600\nunit = 2\n',
        'source = "p1"\nhost = "h"\nport = 23\npoll_s = 1\ntimeout_s = 2\n',
        'source = "p1"\nserial_device = "/dev/ttyUSB0"\nbaudrate = 115200\n',
        'source = "sml"\nhost = "h"\nport = 8888\n',
        'source = "sml"\nserial_device = "/dev/ttyUSB0"\nbaudrate = 9600\n',
        'source = "shelly-http"\nhost = "h"\nport = 8080\nserial = "C8F09E8A1B2C"\n',
        MQTT,
        MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://broker.local"),
        MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883/"),
    ],
)
def test_consistent_meter_tables_still_load(tmp_path, meter):
    load(tmp_path, meter)


@pytest.mark.parametrize(
    "meter, said",
    [
        ('source = "p1"\nhost = "h"\nprofile = "sdm630"\n', 'profile not read with source = "p1"'),
        ('source = "p1"\nhost = "h"\nunit = 5\n', 'unit not read with source = "p1"'),
        ('source = "p1"\nserial_device = "/dev/ttyUSB0"\nport = 23\n', "port is for host"),
        ('source = "p1"\nhost = "h"\nbaudrate = 9600\n', "baudrate is for serial_device"),
        ('source = "sml"\nserial_device = "/dev/ttyUSB0"\nport = 5\n', "port is for host"),
        (
            'source = "shelly-http"\nhost = "h"\nbaudrate = 9600\nunit = 3\nclose_between_polls = true\n',
            'baudrate, close_between_polls, unit not read with source = "shelly-http"',
        ),
        ('source = "shelly-http"\nhost = "h"\nprofile = "sdm630"\n', "profile not read"),
        ('profile = "sdm630"\nhost = "h"\nbaudrate = 9600\n', "baudrate is for serial_device"),
        ('profile = "sdm630"\nserial_device = "/dev/ttyUSB0"\nport = 502\n', "port is for host"),
        (
            'source = "p1"\nserial_device = "/dev/x"\nbaudrate = 1000000000000\n',
            "baudrate must be positive and at most 4000000",
        ),
        ('source = "p1"\nhost = ""\n', "host is empty"),
        ("port = 1884\n" + MQTT, 'port not read with source = "mqtt"'),
        ('profile = "sdm630"\n' + MQTT, 'profile not read with source = "mqtt"'),
        ("unit = 2\n" + MQTT, 'unit not read with source = "mqtt"'),
        (MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:0"), "broker: .*port 0"),
        (MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883/x?y=1"), "broker: .*unexpected path"),
        (MQTT.replace("mqtt://127.0.0.1:1883", "mqtts://127.0.0.1:8883"), 'broker must be "mqtt://host'),
        (MQTT.replace('topic = "a"', 'topic = "a\\u0000b"'), r"\[meter\] import: topic .* contains a NUL"),
        (
            MQTT.replace('topic = "b"', 'topic = "' + "x" * 70000 + '"'),
            r"\[meter\] export: topic is 70000 bytes",
        ),
    ],
)
def test_a_contradictory_or_broken_meter_table_is_refused_in_one_line(tmp_path, meter, said):
    with pytest.raises(UserError, match=said) as refused:
        load(tmp_path, meter)
    assert "\n" not in str(refused.value) and "[meter]" in str(refused.value)


@pytest.mark.parametrize("prefix", ["ha/#", "ha/+/x", "#", "", "ha\\u0000"])
def test_a_homeassistant_prefix_that_is_no_topic_is_refused(tmp_path, prefix):
    with pytest.raises(UserError, match=r"\[homeassistant\]: prefix .* is not a topic prefix to publish to"):
        load(
            tmp_path,
            'profile = "sdm630"\nhost = "h"\n',
            f'[homeassistant]\nenabled = true\nprefix = "{prefix}"\n',
        )


def test_a_homeassistant_prefix_with_levels_loads(tmp_path):
    cfg = load(
        tmp_path, 'profile = "sdm630"\nhost = "h"\n', '[homeassistant]\nenabled = true\nprefix = "ha/home"\n'
    )
    assert cfg.homeassistant_prefix == "ha/home"
