"""Found in a QA pass: Home Assistant kept showing the last power value as current while the
meter could not be read: every heartbeat published the old `power_w` on the HA state topic, and
the availability template took only the literal `offline` (the last will) as unavailable. Now the
meter's sensors (power, import, export) follow the status's `meter_ok` and go unavailable while
the meter cannot be read; the P2P sensors (the ledger's, not the meter's) stay available while the
agent runs. The templates are rendered here as Home Assistant does (MQTT availability: `value`,
and `value_json` when the payload is JSON; a component's options override the device's shared
ones in device discovery), with jinja2's strict undefined so that a template may not touch
`value_json` of the non-JSON last will."""

from __future__ import annotations

import json

import jinja2

from meter_agent.agent import Agent
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from tests.meter_agent.conftest import community_of

MORNING = 1750489200  # 2025-06-21 07:00 UTC: a sunny morning in Berlin
SHARED = ("availability_topic", "availability_template", "payload_available", "payload_not_available")
METER_SENSORS = ("power", "import", "export")
P2P_SENSORS = ("p2p_sold", "p2p_bought", "earnings")


def availability(config: dict, component: str, retained: dict[str, bytes]) -> str:
    """What Home Assistant makes of the component's availability, given the retained messages."""
    options = {k: v for k, v in config.items() if k in SHARED} | config["cmps"][component]
    value = retained[options["availability_topic"]].decode()
    variables = {"value": value}
    try:
        variables["value_json"] = json.loads(value)
    except ValueError:
        pass  # Home Assistant sets value_json only for a JSON payload
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        options["availability_template"]
    )
    rendered = template.render(**variables).strip()
    if rendered == options.get("payload_available", "online"):
        return "available"
    assert rendered == options.get("payload_not_available", "offline"), rendered
    return "unavailable"


def test_the_meters_sensors_are_unavailable_while_the_meter_cannot_be_read(tmp_path, start_sim, reader_for):
    sim = start_sim("sdm630", start_time=MORNING)
    c = community_of(sim)
    broker = MemoryBroker()
    retained: dict[str, bytes] = {}
    watcher = MemoryBus(broker, "watcher")
    watcher.subscribe("#", lambda t, p: retained.__setitem__(t, p))
    watcher.start()
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(broker, "agent"),
        reader=reader_for(sim),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=sim.clock.now,
        profile="sdm630",
        heartbeat_s=0,
        homeassistant_prefix="homeassistant",
    )
    agent.start()
    config = json.loads(retained[f"homeassistant/device/peerwatt_{agent.meter_id}/config"])

    def shown() -> dict[str, str]:
        return {name: availability(config, name, retained) for name in config["cmps"]}

    for _ in range(3):
        sim.clock.advance(5)
        agent.poll()
    assert set(shown().values()) == {"available"}
    sim.inject("timeout")
    for _ in range(3):
        sim.clock.advance(5)
        agent.poll()
    now = shown()
    assert all(now[name] == "unavailable" for name in METER_SENSORS), now
    assert all(now[name] == "available" for name in P2P_SENSORS), now
    status = json.loads(retained[agent.status_topic])  # the agent's own status is as before
    assert status["state"] == "online" and status["meter_ok"] is False and status["power_w"] is not None
    sim.clear_faults()
    sim.clock.advance(5)
    agent.poll()
    assert set(shown().values()) == {"available"}
    agent.stop()  # the last will's `offline`: everything unavailable
    assert set(shown().values()) == {"unavailable"}
