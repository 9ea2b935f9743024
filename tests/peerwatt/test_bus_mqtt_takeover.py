"""Two clients with one client id (a copied agent folder running beside the real one: the same
client certificate, so the same account and client id) push each other off the broker, each as
soon as the other reconnects. Found in a QA pass: both agents logged "lost the connection ..."
and "connected ... again" every second, forever, and nothing said plainly that another agent
with this account was running. The bus now recognises the pattern (connections lost right after
they were made, several in a row), says it once in plain words, and stops logging each lost
connection while it lasts; when a connection holds again it says so.

Also found there: an agent started before its broker logged "connected to the MQTT broker at
... again" on its very first connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from peerwatt.bus import BrokerConfig, MqttBus
from peerwatt.bus import mqtt as bus_mqtt
from tests.support.mosquitto import Mosquitto
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration

WAIT_S = 10.0


@pytest.fixture
def buses() -> Iterator[Callable[..., MqttBus]]:
    made: list[MqttBus] = []

    def make(config: BrokerConfig, client_id: str) -> MqttBus:
        bus = MqttBus(config, client_id)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.stop(flush_timeout_s=0)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_second_client_with_the_same_id_is_said_once_in_plain_words(
    mosquitto: Mosquitto,
    buses: Callable[..., MqttBus],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bus_mqtt, "TAKEOVER_SHORT_S", 3.0, raising=False)  # a connection that held 3 s holds
    caplog.set_level(logging.INFO, logger="peerwatt.bus")
    config = BrokerConfig.from_url(mosquitto.url)
    first, second = buses(config, "peerwatt-agent-copied"), buses(config, "peerwatt-agent-copied")
    first.start()
    assert first.wait_connected(WAIT_S), first.last_error
    second.start()
    said = "another client is using this account's client id (peerwatt-agent-copied)"
    wait_for(lambda: len(_lines(caplog, said)) >= 2, timeout_s=30, what="both buses saying it")
    assert said in (first.contested or "") and said in (second.contested or "")
    time.sleep(8)  # about 8 more take-overs each: none is logged line by line
    warnings = _lines(caplog, said)
    assert len(warnings) == 2, warnings  # once per bus
    assert "A copy of this agent" in warnings[0] and "running elsewhere?" in warnings[0]
    lost = _lines(caplog, "lost the connection")
    assert len(lost) <= 2 * bus_mqtt.TAKEOVER_REPEATS, lost  # before the pattern was recognised
    assert len(_lines(caplog, "connected to the MQTT broker")) <= 2 * bus_mqtt.TAKEOVER_REPEATS
    # the copy stops: the first one's connection holds, and it says so once
    second.stop(flush_timeout_s=0)
    wait_for(lambda: _lines(caplog, "has held for"), timeout_s=20, what="the line that the connection holds")
    assert first.connected and first.last_error is None and first.contested is None
    [held] = _lines(caplog, "has held for")
    assert "peerwatt-agent-copied" in held


def test_the_first_connection_is_not_called_again(
    mosquitto: Mosquitto, buses: Callable[..., MqttBus], caplog: pytest.LogCaptureFixture
) -> None:
    """An agent started before its broker: "cannot reach ...; retrying", then "connected"."""
    mosquitto.stop()
    bus = buses(BrokerConfig.from_url(mosquitto.url), "peerwatt-agent-early")
    caplog.set_level(logging.WARNING, logger="peerwatt.bus")
    bus.start()
    wait_for(lambda: "cannot reach" in (bus.last_error or ""), what="the line that it cannot connect")
    mosquitto.start()
    assert bus.wait_connected(WAIT_S + 30), bus.last_error
    connected = _lines(caplog, "connected to the MQTT broker")
    assert connected == [f"connected to the MQTT broker at {bus.config.address}"], connected
