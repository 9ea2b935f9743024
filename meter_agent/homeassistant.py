"""Home Assistant MQTT discovery for the agent (device-based discovery, one config message).

Sensors: grid power (W, measurement), import/export energy (kWh, total_increasing), P2P sold and
bought energy (kWh, state_class total: a corrected reading or the grid operator's data can lower
what the ledger settled, and HA reads any decrease of a total_increasing sensor as a new meter
cycle, counting the whole total again), P2P earnings (monetary, state_class total — the only one
HA accepts for money). The P2P figures are the agent's totals as the ledger settled them
(meter_agent/agent.py, Agent.totals): a trade counts once its settlement arrives, at its settled
energy and money; one not settled yet, or left unsettled, counts nothing (found in a QA pass: a
trade never settled was counted as traded, as money bought). Availability follows the agent's
retained status topic and its last will; the meter's own sensors (power, import, export) are also
unavailable while the status says the meter cannot be read (``meter_ok`` false), so HA does not
show the last values read as current.
"""

from __future__ import annotations

import json
from typing import Any

# The status topic holds the agent's JSON status, or its last will "offline" (not JSON: HA sets
# value_json only for a JSON payload, so the templates test ``value`` first). The agent runs:
AGENT_AVAILABLE = "{{ 'offline' if value == 'offline' else 'online' }}"
# ... and it can read the meter (a component's availability options override the device's):
METER_AVAILABLE = "{{ 'online' if value != 'offline' and value_json.meter_ok else 'offline' }}"
# the meter's sensors: the values of its last reading, stale while it cannot be read
METER_SENSORS = ("power", "import", "export")
# a meter id (chain.keys.key_id: the hex of 16 bytes), in the discovery topic
METER_ID_CHARS = 32


def discovery_topic(prefix: str, meter_id: str) -> str:
    return f"{prefix}/device/peerwatt_{meter_id}/config"


def state_topic(community: str, meter_id: str) -> str:
    return f"peerwatt/{community}/ha/{meter_id}"


def discovery_payload(community: str, meter_id: str, status_topic: str, currency: str = "EUR") -> bytes:
    """The retained device discovery message."""
    state = state_topic(community, meter_id)

    def sensor(key: str, name: str, device_class: str, state_class: str, unit: str) -> dict[str, Any]:
        return {
            "p": "sensor",
            "name": name,
            "unique_id": f"peerwatt_{meter_id}_{key}",
            "device_class": device_class,
            "state_class": state_class,
            "unit_of_measurement": unit,
            "value_template": f"{{{{ value_json.{key} }}}}",
        }

    config = {
        "dev": {"ids": f"peerwatt_{meter_id}", "name": f"peerwatt meter {meter_id[:8]}", "mf": "peerwatt"},
        "o": {"name": "peerwatt"},
        "state_topic": state,
        "availability_topic": status_topic,
        "availability_template": AGENT_AVAILABLE,
        "cmps": {
            "power": sensor("power_w", "Grid power", "power", "measurement", "W"),
            "import": sensor("import_kwh", "Grid import", "energy", "total_increasing", "kWh"),
            "export": sensor("export_kwh", "Grid export", "energy", "total_increasing", "kWh"),
            "p2p_sold": sensor("p2p_sold_kwh", "Sold to neighbours", "energy", "total", "kWh"),
            "p2p_bought": sensor("p2p_bought_kwh", "Bought from neighbours", "energy", "total", "kWh"),
            "earnings": sensor("p2p_earnings", "P2P earnings", "monetary", "total", currency),
        },
    }
    for name in METER_SENSORS:
        config["cmps"][name].update(availability_topic=status_topic, availability_template=METER_AVAILABLE)
    return json.dumps(config, sort_keys=True).encode()


def state_payload(
    power_w: int, import_wh: int, export_wh: int, sold_wh: int, bought_wh: int, earnings_micro: int
) -> bytes:
    """One state message (kWh and currency units for display; the ledger keeps integers). The P2P
    figures are settled ones (Agent.totals' ``sold_wh``, ``bought_wh``, ``earnings``)."""
    return json.dumps(
        {
            "power_w": power_w,
            "import_kwh": import_wh / 1000,
            "export_kwh": export_wh / 1000,
            "p2p_sold_kwh": sold_wh / 1000,
            "p2p_bought_kwh": bought_wh / 1000,
            "p2p_earnings": earnings_micro / 1_000_000,
        },
        sort_keys=True,
    ).encode()
