"""A counter above 10 GWh (meter_agent/probe.py's MAX_COUNTER_WH, which no real meter reaches) is
refused by the reader in one line naming the value, as a negative one is. Found in a QA pass: a
Shelly counter of 1e300 and an SML scaler of +100 were read; only the agent's plausibility check
stopped them later, as "implausible reading: import_wh about 10**300 implausible (the wrong
profile for this meter? ...)", a Modbus hint for a meter that has no profile."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import pytest

from meter_agent import sml_simulator as S
from meter_agent.modbus_reader import MeterValueUnavailable
from meter_agent.mqtt_source import MqttQuantity, MqttSource, MqttSourceConfig
from meter_agent.probe import MAX_COUNTER_WH
from meter_agent.shelly_http import ShellyHttpReader
from tests.meter_agent.test_p1_values import read_once as read_p1
from tests.meter_agent.test_p1_values import with_line
from tests.meter_agent.test_shelly_http import FixedDevice
from tests.meter_agent.test_sml import read_once as read_sml
from tests.meter_agent.test_sml_values import sml_file

TOO_MUCH = "more than a meter counts (10 GWh)"


def read_shelly(total_act: object):
    device = FixedDevice(
        {
            "/rpc/Shelly.GetDeviceInfo": {"mac": "C8F09E8A1B2C", "model": "SPEM-003CEBEU"},
            "/rpc/EM.GetStatus": {"total_act_power": 100.0},
            "/rpc/EMData.GetStatus": {"total_act": total_act, "total_act_ret": 5.0},
        }
    )
    try:
        return ShellyHttpReader("127.0.0.1", device.port, timeout_s=2, retries=0).read()
    finally:
        device.close()


def test_a_shelly_counter_of_1e300_is_refused_by_the_reader():
    with pytest.raises(MeterValueUnavailable) as caught:
        read_shelly(1e300)
    assert f"import_wh (EMData.GetStatus total_act) is 1e+300 Wh: {TOO_MUCH}" in str(caught.value)
    assert caught.value.names == ("import_wh",)


def test_a_shelly_counter_at_the_bound_still_reads():
    assert read_shelly(MAX_COUNTER_WH).import_wh == MAX_COUNTER_WH


@pytest.mark.parametrize(("scaler", "value", "shown"), [(100, 1, "1.0000E+100"), (7, 1001, "1.0010E+10")])
def test_an_sml_counter_scaled_past_the_bound_is_refused_by_the_reader(scaler, value, shown):
    with pytest.raises(MeterValueUnavailable) as caught:
        read_sml(sml_file(exp=(S.UNIT_WH, scaler, value)))
    assert f"export_wh: 1-0:2.8.0 is {shown} Wh: {TOO_MUCH}" in str(caught.value)
    assert caught.value.names == ("export_wh",)


def test_an_sml_counter_at_the_bound_still_reads():
    assert read_sml(sml_file(imp=(S.UNIT_WH, 9, 10))).import_wh == MAX_COUNTER_WH


def test_a_p1_counter_past_the_bound_is_refused_by_the_reader():
    telegram = with_line("1-0:1.8.2(000654.321*kWh)", "1-0:1.8.2(10000000.001*kWh)")
    with pytest.raises(MeterValueUnavailable) as caught:
        read_p1(telegram)
    assert f"import_wh: 1-0:1.8.2 is 10000000.001 kWh: {TOO_MUCH}" in str(caught.value)


@pytest.mark.integration
def test_an_mqtt_counter_past_the_bound_is_refused_by_the_reader(mosquitto):
    topic = "tele/meter/SENSOR"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-upper-bound")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:  # 10**11 kWh: under the payload bound (10**15 in any unit), 10**14 Wh after the unit
        payload = {"SML": {"In": 1e11, "Out": 1.5, "Power": 100}}
        client.publish(topic, json.dumps(payload), qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    config = MqttSourceConfig(
        host="127.0.0.1",
        port=mosquitto.port,
        quantities={
            "import_wh": MqttQuantity(topic, "SML.In", "kWh"),
            "export_wh": MqttQuantity(topic, "SML.Out", "kWh"),
            "power_w": MqttQuantity(topic, "SML.Power", "W"),
        },
        serial="S1",
    )
    with MqttSource(config, timeout_s=3) as source, pytest.raises(MeterValueUnavailable) as caught:
        source.read()
    assert f"import_wh is 1.0000E+14 Wh: {TOO_MUCH}" in str(caught.value)
    assert caught.value.names == ("import_wh",)
