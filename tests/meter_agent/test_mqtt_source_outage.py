"""The MQTT source against a real Mosquitto that goes away and comes back, retained messages of a
publisher that died, payloads too large for a meter and a broker that refuses the account (found
in a QA pass: after an outage, and after every reconnect with retained messages, old counter
values read as fresh; "1e999999" was a decimal.Overflow traceback; a refusal named no reason)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from meter_agent.modbus_reader import MeterConnectionError, MeterTimeout, MeterValueUnavailable
from meter_agent.mqtt_source import MqttQuantity, MqttSource, MqttSourceConfig

pytestmark = pytest.mark.integration

IMPORT, EXPORT, POWER = "ha/import/state", "ha/export/state", "ha/power/state"


def config(port: int, **options) -> MqttSourceConfig:
    return MqttSourceConfig(
        host="127.0.0.1",
        port=port,
        quantities={
            "import_wh": MqttQuantity(IMPORT, "", "kWh"),
            "export_wh": MqttQuantity(EXPORT, "", "kWh"),
            "power_w": MqttQuantity(POWER, "", "W"),
        },
        serial="SN1",
        **options,
    )


def publish(broker, values: dict[str, bytes], retain: bool = False) -> None:
    """Publish with a client of its own (QoS 1, acknowledged), then disconnect."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-meter-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in values.items():
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


VALUES = {IMPORT: b"1000.0", EXPORT: b"400.0", POWER: b"100"}


def outcome(source: MqttSource) -> str:
    try:
        sample = source.read()
    except MeterConnectionError:
        return "disconnected"
    except MeterTimeout as exc:
        return "stale" if "stale" in str(exc) else f"timeout: {exc}"
    return f"ok {sample.import_wh}"


def until_connected(source: MqttSource, seconds: float = 20.0) -> str:
    """Poll (bounded) until a read is not 'disconnected' (paho reconnects within 1-10 s)."""
    deadline = time.monotonic() + seconds
    while True:
        result = outcome(source)
        if result != "disconnected" or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def until_disconnected(source: MqttSource, seconds: float = 10.0) -> None:
    """Poll (bounded) until a read says 'disconnected'; the reads before it serve the last value,
    which counts toward stale_polls as any poll without a new message does."""
    deadline = time.monotonic() + seconds
    while outcome(source) != "disconnected":
        assert time.monotonic() < deadline, "the source did not see the broker go"
        time.sleep(0.05)


def test_polls_during_a_broker_outage_count_and_old_values_are_not_served_after_it(mosquitto):
    with MqttSource(config(mosquitto.port, stale_polls=3), timeout_s=0.5) as source:
        assert outcome(source).startswith("timeout: ") and "no message yet" in outcome(source)
        publish(mosquitto, VALUES)
        time.sleep(0.3)
        assert outcome(source) == "ok 1000000"
        mosquitto.stop()  # the publisher is gone with it: nothing is published from here on
        until_disconnected(source)  # paho's thread sees the closed socket (late on a loaded machine)
        assert [outcome(source) for _ in range(3)] == ["disconnected"] * 3
        mosquitto.start()
        # the old code read ('ok 1000000') for stale_polls more polls
        assert until_connected(source) == "stale"
        assert outcome(source) == "stale"
        publish(mosquitto, {**VALUES, IMPORT: b"1000.5"})
        time.sleep(0.3)
        assert outcome(source) == "ok 1000500"


def test_retained_messages_replayed_on_reconnect_do_not_make_a_dead_publisher_fresh(mosquitto):
    publish(mosquitto, VALUES, retain=True)  # the device published, retained, and died
    with MqttSource(config(mosquitto.port, stale_polls=3), timeout_s=2) as source:
        # after a start the retained values are served for stale_polls - 1 polls
        assert [outcome(source) for _ in range(3)] == ["ok 1000000", "ok 1000000", "stale"]
        mosquitto.restart()  # persistence keeps the retained messages: replayed on subscribe
        assert until_connected(source) == "stale"
        time.sleep(0.5)  # let the replayed retained messages arrive
        assert [outcome(source) for _ in range(3)] == ["stale"] * 3  # the old code: ok, ok, stale
        publish(mosquitto, {**VALUES, IMPORT: b"1001"}, retain=True)  # live: forwarded without retain
        time.sleep(0.3)
        assert outcome(source) == "ok 1001000"


def test_retained_values_after_a_start_are_served_stale_polls_minus_one_polls(mosquitto):
    publish(mosquitto, VALUES, retain=True)
    for _ in range(2):  # an agent restart: a new source, the same retained messages
        with MqttSource(config(mosquitto.port, stale_polls=2), timeout_s=2) as source:
            assert [outcome(source) for _ in range(3)] == ["ok 1000000", "stale", "stale"]


@pytest.mark.parametrize("payload", [b'"1e999999"', b'"1e5000"', b"1" + b"0" * 5000, b"1e15"])
def test_a_number_too_large_for_a_meter_is_not_available_in_one_line(mosquitto, payload):
    with MqttSource(config(mosquitto.port), timeout_s=0.5) as source:
        outcome(source)  # subscribed
        publish(mosquitto, {**VALUES, IMPORT: payload})
        time.sleep(0.3)
        with pytest.raises(
            MeterValueUnavailable, match=r"import_wh on ha/import/state: payload is 1\.000e\+"
        ):
            source.read()
        publish(mosquitto, VALUES)
        time.sleep(0.3)
        assert outcome(source) == "ok 1000000"


def test_a_refused_account_names_the_broker_s_reason(mosquitto_factory):
    broker = mosquitto_factory(allow_anonymous=False)  # no password file: every account is refused
    broker.start()
    with MqttSource(config(broker.port, username="meter", password="wrong"), timeout_s=1) as source:
        for _ in range(2):  # the first connect and a retry
            with pytest.raises(MeterConnectionError, match="the broker refused the connection: not authori"):
                source.read()
