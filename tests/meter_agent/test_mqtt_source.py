"""The generic MQTT source against a real Mosquitto: Tasmota SML telemetry (published by the
simulator and by hand), Shelly Gen2 status topics, Home Assistant statestream, staleness, bad
payloads, units, and agent.toml's [meter] source = "mqtt"."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from meter_agent.household import Household
from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterError,
    MeterFramingError,
    MeterTimeout,
    MeterValueUnavailable,
)
from meter_agent.mqtt_simulator import TasmotaPublisher
from meter_agent.mqtt_source import MqttQuantity, MqttSource, MqttSourceConfig, extract
from peerwatt.errors import UserError
from peerwatt.ports import free_port

from .conftest import MIDDAY

pytestmark = pytest.mark.integration

TASMOTA = "tele/tasmota_sml/SENSOR"


def tasmota_config(port: int, **options) -> MqttSourceConfig:
    return MqttSourceConfig(
        host="127.0.0.1",
        port=port,
        quantities={
            "import_wh": MqttQuantity(TASMOTA, "SML.Total_in", "kWh"),
            "export_wh": MqttQuantity(TASMOTA, "SML.Total_out", "kWh"),
            "power_w": MqttQuantity(TASMOTA, "SML.Power_curr", "W"),
        },
        serial="1EBZ0100123456",
        **options,
    )


@pytest.fixture
def publisher(mosquitto):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()

    def publish(topic: str, payload: object, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    yield publish
    client.disconnect()
    client.loop_stop()


def wait_reading(source: MqttSource, check, seconds: float = 5.0, retry_on=(MeterTimeout,)):
    """Poll (bounded) until a reading passes ``check``; errors in ``retry_on`` mean 'not yet'."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            sample = source.read()
            if check(sample):
                return sample
        except retry_on:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no matching reading in time")
        time.sleep(0.05)


def test_hand_published_tasmota_telemetry_in_kwh_is_read_in_wh(mosquitto, publisher):
    publisher(
        TASMOTA,
        {
            "Time": "2025-06-21T12:00:00",
            "SML": {"Total_in": 1234.5678, "Total_out": 321.0005, "Power_curr": -1500},
        },
        retain=True,
    )
    with MqttSource(tasmota_config(mosquitto.port), timeout_s=3) as source:
        sample = source.read()
    assert sample.import_wh == 1_234_568 and sample.export_wh == 321_000  # 321000.5 -> half-even
    assert sample.power_w == -1500
    assert sample.serial == "1EBZ0100123456" and sample.profile == "mqtt"


def test_reader_follows_the_tasmota_simulator_and_detects_staleness(mosquitto):
    sim = TasmotaPublisher(
        Household(seed=7), mosquitto.host, mosquitto.port, interval_s=0.05, start_time=MIDDAY
    )
    sim.clock.pause()
    with sim, MqttSource(tasmota_config(mosquitto.port, stale_polls=3), timeout_s=3) as source:
        truth = sim.truth()
        sample = wait_reading(source, lambda s: True)
        assert sample.import_wh == pytest.approx(truth["import_wh"], abs=1)
        assert sample.export_wh == pytest.approx(truth["export_wh"], abs=1)
        assert sample.power_w == pytest.approx(truth["power_w"], abs=1)
        sim.clock.advance(900)
        later = sim.truth()
        sample = wait_reading(source, lambda s: abs(s.export_wh - later["export_wh"]) <= 1)
        sim.inject("silent")
        time.sleep(0.3)  # let messages in flight arrive
        source.read()  # the messages before silence still count as an update
        with pytest.raises(MeterTimeout, match="stale"):
            for _ in range(3):  # bounded: the third poll without an update is stale
                source.read()
        sim.clear_faults()
        wait_reading(source, lambda s: True, retry_on=(MeterError,))
        sim.inject("garbage")
        time.sleep(0.3)
        with pytest.raises(MeterFramingError, match="not JSON"):
            source.read()
        sim.clear_faults()
        sim.inject("missing")
        time.sleep(0.3)
        with pytest.raises(MeterValueUnavailable, match="import_wh"):
            source.read()
        sim.clear_faults()
        wait_reading(source, lambda s: True, retry_on=(MeterError,))


def test_shelly_gen2_status_topics_in_wh(mosquitto, publisher):
    prefix = "shellypro3em-c8f09e8a1b2c"
    config = MqttSourceConfig(
        host="127.0.0.1",
        port=mosquitto.port,
        quantities={
            "import_wh": MqttQuantity(f"{prefix}/status/emdata:0", "total_act", "Wh"),
            "export_wh": MqttQuantity(f"{prefix}/status/emdata:0", "total_act_ret", "Wh"),
            "power_w": MqttQuantity(f"{prefix}/status/em:0", "total_act_power", "W"),
        },
        serial="C8F09E8A1B2C",
    )
    publisher(f"{prefix}/status/emdata:0", {"id": 0, "total_act": 6000.4, "total_act_ret": 60.6}, retain=True)
    publisher(
        f"{prefix}/status/em:0", {"id": 0, "a_act_power": 400.0, "total_act_power": 1200.7}, retain=True
    )
    with MqttSource(config, timeout_s=3) as source:
        sample = source.read()
    assert (sample.import_wh, sample.export_wh, sample.power_w) == (6000, 61, 1201)


def test_home_assistant_statestream_plain_states_with_units_and_invert(mosquitto, publisher):
    base = "homeassistant/sensor"
    config = MqttSourceConfig(
        host="127.0.0.1",
        port=mosquitto.port,
        quantities={
            "import_wh": MqttQuantity(f"{base}/grid_import/state", "", "kWh"),
            "export_wh": MqttQuantity(f"{base}/grid_export/state", "", "kWh"),
            "power_w": MqttQuantity(f"{base}/grid_power/state", "", "kW", invert=True),
        },
        serial="SN-42",
    )
    publisher(f"{base}/grid_import/state", b"4321.001", retain=True)
    publisher(f"{base}/grid_export/state", b'"12.5"', retain=True)  # statestream quotes strings
    publisher(f"{base}/grid_power/state", b"0.75", retain=True)  # exporting 0.75 kW, reported positive
    with MqttSource(config, timeout_s=3) as source:
        sample = source.read()
        assert (sample.import_wh, sample.export_wh, sample.power_w) == (4_321_001, 12_500, -750)
        publisher(f"{base}/grid_power/state", b"unavailable")
        with pytest.raises(MeterValueUnavailable, match="power_w"):
            wait_reading(source, lambda s: False, seconds=2)


def test_no_message_yet_is_a_timeout_and_no_broker_a_connection_error(mosquitto):
    with MqttSource(tasmota_config(mosquitto.port), timeout_s=0.3) as source:
        with pytest.raises(MeterTimeout, match="no message yet on tele/tasmota_sml/SENSOR"):
            source.read()
    with pytest.raises(MeterConnectionError, match="cannot connect"):
        MqttSource(tasmota_config(free_port("127.0.0.1")), timeout_s=0.3).read()


def test_extract_paths_and_numbers():
    assert extract(b'{"a": {"b": [1, {"c": 2.5}]}}', "a.b.1.c") == 2.5
    assert extract(b"17", "") == 17
    with pytest.raises(MeterValueUnavailable):
        extract(b'{"a": true}', "a")
    with pytest.raises(MeterValueUnavailable):
        extract(b'{"a": 1}', "b")
    with pytest.raises(MeterValueUnavailable):
        extract(b"nan", "")
    with pytest.raises(MeterFramingError):
        extract(b"{oops", "a")


def test_config_values_are_checked():
    with pytest.raises(ValueError, match="unit"):
        MqttQuantity("t", "p", "MWh").check("import_wh")
    with pytest.raises(ValueError, match="wildcards"):
        MqttQuantity("tele/+/SENSOR", "p", "kWh").check("import_wh")
    with pytest.raises(ValueError, match="serial"):
        tasmota_config(1883, stale_polls=1).__class__(
            host="h", port=1, quantities=tasmota_config(1883).quantities, serial=""
        )


def test_agent_toml_mqtt_meter_table(tmp_path):
    from meter_agent.config import load_agent_config
    from meter_agent.sources import open_reader

    (tmp_path / "broker.pw").write_text("secret\n")
    (tmp_path / "broker.pw").chmod(0o600)
    base = (
        'community = "c"\nkey = "k"\ngenesis = "g"\n[meter]\nsource = "mqtt"\n'
        'broker = "mqtt://192.0.2.1:1884"\nserial = "1EBZ0100123456"\nusername = "meter"\n'
        'password_file = "broker.pw"\nstale_polls = 4\n'
        f'import = {{ topic = "{TASMOTA}", path = "SML.Total_in", unit = "kWh" }}\n'
        f'export = {{ topic = "{TASMOTA}", path = "SML.Total_out", unit = "kWh" }}\n'
    )
    good = base + f'power = {{ topic = "{TASMOTA}", path = "SML.Power_curr", unit = "W" }}\n'
    (tmp_path / "agent.toml").write_text(good)
    meter = load_agent_config(tmp_path / "agent.toml").meter
    assert meter.mqtt.host == "192.0.2.1" and meter.mqtt.port == 1884 and meter.mqtt.password == "secret"
    assert meter.mqtt.stale_polls == 4 and meter.serial == "1EBZ0100123456"
    reader, profile = open_reader(meter)
    assert isinstance(reader, MqttSource) and profile == "mqtt"
    for bad, words in [
        (base, "'power' is missing"),
        (good.replace('unit = "W"', 'unit = "Wh"'), "unit must be one of W, kW"),
        (good.replace('serial = "1EBZ0100123456"\n', ""), "'serial' is missing"),
        (good.replace("mqtt://192.0.2.1:1884", "http://x"), "mqtt://host"),
    ]:
        (tmp_path / "agent.toml").write_text(bad)
        with pytest.raises(UserError, match=words):
            load_agent_config(tmp_path / "agent.toml")
