"""Home Assistant discovery: device classes, state classes and units HA accepts for the Energy dashboard."""

from __future__ import annotations

import json

from meter_agent.homeassistant import discovery_payload, discovery_topic, state_payload


def test_discovery_message_is_what_home_assistant_expects():
    assert discovery_topic("homeassistant", "ab" * 16) == f"homeassistant/device/peerwatt_{'ab' * 16}/config"
    config = json.loads(discovery_payload("oak", "ab" * 16, "peerwatt/oak/status/" + "ab" * 16))
    components = config["cmps"]
    assert (
        components["power"]["device_class"] == "power" and components["power"]["state_class"] == "measurement"
    )
    for energy in ("import", "export", "p2p_sold", "p2p_bought"):
        assert components[energy]["device_class"] == "energy"
        assert components[energy]["unit_of_measurement"] == "kWh"
    # the meter's counters only grow; what the ledger settled can go down by a negative adjustment,
    # which HA would read of a total_increasing sensor as a new meter cycle (the whole total again)
    assert components["import"]["state_class"] == components["export"]["state_class"] == "total_increasing"
    assert components["p2p_sold"]["state_class"] == components["p2p_bought"]["state_class"] == "total"
    assert (
        components["earnings"]["device_class"] == "monetary"
        and components["earnings"]["state_class"] == "total"
    )
    assert config["availability_topic"].startswith("peerwatt/oak/status/")
    assert len({c["unique_id"] for c in components.values()}) == len(components)


def test_state_payload_units():
    state = json.loads(state_payload(-1200, 1_234_500, 654_000, 2500, 1500, 1_250_000))
    assert state == {
        "power_w": -1200,
        "import_kwh": 1234.5,
        "export_kwh": 654.0,
        "p2p_sold_kwh": 2.5,
        "p2p_bought_kwh": 1.5,
        "p2p_earnings": 1.25,
    }
