"""agent.toml [meter] values that load but cannot work are refused in one line at load (found in a
QA pass, all accepted before): an MQTT ``stale_polls = 10**9`` (a staleness check that never
fires), a JSON path with an empty part (``SML..x``: "no 'SML..x' in the payload" at every poll),
import and export on the same topic and path (one value read as both), and a ``serial`` the
ledger's reading schema refuses (``"S 1"``: the agent started, and every reading was refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meter_agent.config import load_agent_config
from meter_agent.mqtt_source import MAX_STALE_POLLS
from peerwatt.errors import UserError
from tests.meter_agent.test_config_source_keys import HEAD, MQTT


def refused(tmp_path: Path, meter: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(f"{HEAD}[meter]\n{meter}")
    with pytest.raises(UserError) as caught:
        load_agent_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} [meter]: ")
    return message


def loads(tmp_path: Path, meter: str):
    path = tmp_path / "agent.toml"
    path.write_text(f"{HEAD}[meter]\n{meter}")
    return load_agent_config(path).meter


@pytest.mark.parametrize("stale_polls", [10**9, MAX_STALE_POLLS + 1, 0])
def test_stale_polls_out_of_bounds_is_refused(tmp_path, stale_polls):
    message = refused(tmp_path, f"{MQTT}stale_polls = {stale_polls}\n")
    assert f"stale_polls must be 1 to {MAX_STALE_POLLS}" in message and f"not {stale_polls}" in message


def test_stale_polls_bound_is_a_day_of_the_shortest_polls(tmp_path):
    from meter_agent.config import POLL_S

    assert MAX_STALE_POLLS == round(24 * 3600 / POLL_S[0])
    assert loads(tmp_path, f"{MQTT}stale_polls = {MAX_STALE_POLLS}\n").mqtt.stale_polls == MAX_STALE_POLLS


@pytest.mark.parametrize("path", ["SML..x", ".x", "x.", "."])
def test_a_path_with_an_empty_part_is_refused(tmp_path, path):
    meter = MQTT.replace('topic = "a", path = ""', f'topic = "a", path = "{path}"')
    message = refused(tmp_path, meter)
    assert f"import_wh: path {path!r} has an empty part" in message


@pytest.mark.parametrize(
    ("meter", "pair"),
    [
        (MQTT.replace('topic = "b"', 'topic = "a"'), "import_wh and export_wh"),
        (
            MQTT.replace('"a", path = ""', '"t", path = "SML.In"').replace(
                '"c", path = ""', '"t", path = "SML.In"'
            ),
            "import_wh and power_w",
        ),
    ],
)
def test_one_value_read_as_two_quantities_is_refused(tmp_path, meter, pair):
    message = refused(tmp_path, meter)
    assert f"{pair} read the same value" in message


def test_one_topic_with_a_path_per_quantity_loads(tmp_path):
    meter = (
        MQTT.replace('"a", path = ""', '"t", path = "SML.In"')
        .replace('"b", path = ""', '"t", path = "SML.Out"')
        .replace('"c", path = ""', '"t", path = "SML.Power"')
    )
    assert loads(tmp_path, meter).mqtt.quantities["export_wh"].path == "SML.Out"


@pytest.mark.parametrize(
    "meter",
    [
        'profile = "sdm630"\nhost = "h"\n',
        'source = "p1"\nhost = "h"\n',
        'source = "sml"\nhost = "h"\nport = 8888\n',
        'source = "shelly-http"\nhost = "h"\n',
        MQTT.replace('serial = "S1"\n', ""),
    ],
)
@pytest.mark.parametrize("serial", ["S 1", "", "x" * 65, "Zähler1", "S\t1"])
def test_a_serial_no_reading_could_carry_is_refused_for_every_source(tmp_path, meter, serial):
    message = refused(tmp_path, f"{meter}serial = {json.dumps(serial)}\n")  # a TOML basic string
    assert f"[meter]: serial {serial!r} " in message
    assert message.endswith(
        "(1-64 printable ASCII characters, no spaces): the ledger would refuse every reading"
    )


def test_a_good_serial_still_loads(tmp_path):
    assert loads(tmp_path, 'source = "p1"\nhost = "h"\nserial = "E0053003771331616"\n').serial == (
        "E0053003771331616"
    )
