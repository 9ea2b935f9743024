"""`peerwatt agent -c agent.toml` as a real process reading each non-Modbus source that
``[meter] source`` names (through meter_agent.sources.open_reader): it reports the meter as read."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from meter_agent.household import Household
from tests.meter_agent.test_agent_cli import write_genesis_and_key
from tests.support.localnet import make_community
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration


def run_agent_until_meter_ok(tmp_path, mosquitto, meter_table: str) -> None:
    now = int(time.time())
    c = make_community(validators=1, members=1, app="market", time=now - now % 900 - 900)
    meter = c.meters[0]
    write_genesis_and_key(tmp_path, c, meter)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'community = "{c.community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f"heartbeat_s = 0.5\n[meter]\n{meter_table}poll_s = 0.5\n"
        f'[broker]\nurl = "{mosquitto.url}"\n'
    )
    from peerwatt.bus import BrokerConfig, MqttBus, Topics

    statuses: list[dict] = []
    watcher = MqttBus(BrokerConfig.from_url(mosquitto.url), "watcher")
    watcher.subscribe(
        Topics.status(c.community, meter.id),
        lambda t, p: statuses.append({"raw": p}) if p == b"offline" else statuses.append(json.loads(p)),
    )
    watcher.start()
    agent = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(s.get("meter_ok") for s in statuses), 30, "a status with the meter read")
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        watcher.stop()
    assert agent.returncode == 0, err
    assert "Traceback" not in err


def test_agent_reads_an_sml_meter(tmp_path, mosquitto):
    from meter_agent.sml_simulator import SmlSimulator

    with SmlSimulator(Household(seed=3), interval_s=0.2) as sim:
        run_agent_until_meter_ok(
            tmp_path, mosquitto, f'source = "sml"\nhost = "127.0.0.1"\nport = {sim.port}\n'
        )


def test_agent_reads_a_shelly_pro_3em_over_http(tmp_path, mosquitto):
    from meter_agent.shelly_simulator import ShellySimulator

    with ShellySimulator(Household(seed=4)) as sim:
        run_agent_until_meter_ok(
            tmp_path, mosquitto, f'source = "shelly-http"\nhost = "127.0.0.1"\nport = {sim.port}\n'
        )


def test_agent_reads_a_meter_from_mqtt_topics(tmp_path, mosquitto):
    from meter_agent.mqtt_simulator import TasmotaPublisher

    topic = "tele/tasmota_sml/SENSOR"
    with TasmotaPublisher(Household(seed=5), mosquitto.host, mosquitto.port, interval_s=0.2):
        run_agent_until_meter_ok(
            tmp_path,
            mosquitto,
            f'source = "mqtt"\nbroker = "{mosquitto.url}"\nserial = "SN1"\n'
            f'import = {{ topic = "{topic}", path = "SML.Total_in", unit = "kWh" }}\n'
            f'export = {{ topic = "{topic}", path = "SML.Total_out", unit = "kWh" }}\n'
            f'power = {{ topic = "{topic}", path = "SML.Power_curr", unit = "W" }}\n',
        )
