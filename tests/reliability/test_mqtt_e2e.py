"""MQTT source end to end: two simulated Tasmota-style SML publishers on a real Mosquitto (the
households' own broker) -> real agents reading them with MqttSource -> sequencer -> market app.
The readings carry the configured serials, which the genesis enrols, so trades settle; a silent
publisher is a stale (timeout) meter fault the agents ride out; money stays conserved and the
ledger verifies."""

from __future__ import annotations

import time

import pytest

from chain.engine import Ledger
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.mqtt_simulator import TasmotaPublisher
from meter_agent.mqtt_source import PROFILE_NAME, MqttQuantity, MqttSource, MqttSourceConfig
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from tests.support.localnet import make_community

pytestmark = pytest.mark.reliability
START = 1750500000 - 3600  # 2025-06-21 09:00 UTC: strong sun in Berlin
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}
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


def test_mqtt_meters_trade_and_settle(tmp_path, mosquitto):
    clock = SimClock(START, 1.0)
    clock.pause()
    c = make_community(
        validators=1,
        members=2,
        meters_per_member=1,
        app="market",
        app_params=PARAMS,
        time=START - 900,
        capacity_w=11_000,
        serials=SERIALS,
    )
    broker = MemoryBroker()
    Ledger.create(tmp_path / "seq", c.genesis, MarketApp()).close()
    node = Node(
        Ledger.open(tmp_path / "seq", MarketApp()),
        MemoryBus(broker, "seq"),
        role="sequencer",
        key=c.validators[0].key,
        clock=clock,
        block_s=0,
    )
    node.start()
    homes = [Household(pv_kwp=9.0, annual_kwh=2000, seed=1), Household(pv_kwp=0.0, annual_kwh=6000, seed=2)]
    sims, agents = [], []
    try:
        for i, (meter, household) in enumerate(zip(c.meters, homes, strict=True)):
            # publishes once at start; the test publishes after each clock step (publish_now)
            sim = TasmotaPublisher(
                household, mosquitto.host, mosquitto.port, device=f"home{i}", interval_s=3600, clock=clock
            ).start()
            sims.append(sim)
            reader = MqttSource(
                source_config(mosquitto.port, f"home{i}", SERIALS[i]), timeout_s=2.0, clock=clock.now
            )
            agent = Agent(
                key=meter.key,
                genesis=c.genesis,
                bus=MemoryBus(broker, f"agent-{i}"),
                reader=reader,
                outbox=Outbox(tmp_path / f"agent-{i}.sqlite"),
                strategy=StrategyConfig(),
                clock=clock.now,
                profile=PROFILE_NAME,
                heartbeat_s=float("inf"),
            )
            agent.order_margin_s = 180
            agent.start()
            agents.append(agent)

        def run(minutes: int) -> None:
            for _ in range(minutes):
                clock.advance(60)
                for sim in sims:
                    sim.publish_now()
                time.sleep(0.02)  # let Mosquitto deliver (a late message only makes a reading lag)
                for agent in agents:
                    agent.poll()
                for _ in range(50):
                    if not node.step():
                        break

        run(100)
        sims[0].inject("silent")  # the publisher stops: stale after 2 polls, a fault, never a reading
        run(3)
        assert agents[0].status()["meter_ok"] is False
        sims[0].clear_faults()
        run(110)
        assert all(agent.status()["meter_ok"] for agent in agents)
        results = [r for h in range(1, node.ledger.height + 1) for r in node.ledger.store.results(h)]
        trades = [r for r in results if r["kind"] == "trade"]
        settlements = [r for r in results if r["kind"] == "settlement"]
        assert trades, "the MQTT households must trade"
        settled = [s for s in settlements if s["status"] == "settled"]
        assert settled and all(s["settled_wh"] > 0 for s in settled)
        assert not [r for r in results if r["kind"] == "reading_flag"], "serials must match the enrolment"
        assert sum(node.ledger.state["app"]["balances"].values()) == 0
        assert verify_store(node.ledger.store, MarketApp()).blocks == node.ledger.height
    finally:
        for agent in agents:
            agent.outbox.close()
            agent.reader.close()
        for sim in sims:
            sim.stop()
        node.ledger.close()
