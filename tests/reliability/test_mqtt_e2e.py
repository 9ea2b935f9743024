"""MQTT source end to end: two simulated Tasmota-style SML publishers on a real Mosquitto (the
households' own broker) -> real agents reading them with MqttSource -> sequencer -> market app.
The readings carry the configured serials, which the genesis enrols, so trades settle; a silent
publisher is a stale (timeout) meter fault the agents ride out; money stays conserved and the
ledger verifies."""

from __future__ import annotations

import time

import pytest

from meter_agent.mqtt_simulator import TasmotaPublisher
from meter_agent.mqtt_source import PROFILE_NAME, MqttQuantity, MqttSource, MqttSourceConfig
from tests.support.meter_community import meter_community

pytestmark = pytest.mark.reliability
SERIALS = ["1EBZ0100000001", "1EBZ0100000002"]


def source_config(port: int, device: str, serial: str) -> MqttSourceConfig:
    topic = f"tele/{device}/SENSOR"
    return MqttSourceConfig(
        host="127.0.0.1",
        port=port,
        quantities={
            "import_wh": MqttQuantity(topic, "SML.Total_in", "kWh"),
            "export_wh": MqttQuantity(topic, "SML.Total_out", "kWh"),
            "power_w": MqttQuantity(topic, "SML.Power_curr", "W"),
        },
        serial=serial,
        stale_polls=2,
    )


def publish_all(m) -> None:
    for sim in m.sims:
        sim.publish_now()
    time.sleep(0.02)  # let Mosquitto deliver (a late message only makes a reading lag)


def test_mqtt_meters_trade_and_settle(tmp_path, mosquitto):
    def mqtt_meter(i, household, clock):
        # publishes once at start; the test publishes after each clock step (publish_all)
        sim = TasmotaPublisher(
            household, mosquitto.host, mosquitto.port, device=f"home{i}", interval_s=3600, clock=clock
        ).start()
        reader = MqttSource(
            source_config(mosquitto.port, f"home{i}", SERIALS[i]), timeout_s=2.0, clock=clock.now
        )
        return sim, reader

    with meter_community(tmp_path, SERIALS, mqtt_meter, PROFILE_NAME, on_tick=publish_all) as m:
        m.ride_out_fault("silent")  # the publisher stops: stale after 2 polls, a fault, never a reading
        m.assert_trades_settle("MQTT")
