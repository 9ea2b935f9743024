"""The agent against the meter simulator and a real Mosquitto: the broker is killed mid-run and
every signed message still reaches the community's side (exactly once after (signer, seq) dedupe)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from meter_agent.agent import Agent
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from tests.support.localnet import make_community
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration
MORNING = 1750489200  # 2025-06-21 07:00 UTC


def test_broker_killed_and_restarted_nothing_lost(tmp_path, mosquitto, start_sim, reader_for):
    c = make_community(validators=1, members=1, app="market", time=MORNING - 86400)
    sim = start_sim("sdm630", start_time=MORNING)
    received: list[dict] = []
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        with lock:
            received.append(json.loads(payload))

    watcher = MqttBus(BrokerConfig.from_url(mosquitto.url), "watcher")
    watcher.subscribe(Topics.pattern(c.community, "readings"), on_message)
    watcher.subscribe(Topics.pattern(c.community, "orders"), on_message)
    watcher.start()
    assert watcher.wait_connected(10)
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MqttBus(BrokerConfig.from_url(mosquitto.url), "agent"),
        reader=reader_for(sim),
        outbox=Outbox(tmp_path / "agent.sqlite", first_seq=1),
        strategy=StrategyConfig(),
        clock=sim.clock.now,
        profile="sdm630",
        heartbeat_s=3600,
    )
    agent.start()
    assert agent.bus.wait_connected(10)
    agent.confirm_after_s = 1.0  # no sequencer here confirms anything: unconfirmed messages are resent

    def run(polls: int) -> None:
        for _ in range(polls):
            sim.clock.advance(60)
            agent.poll()

    run(40)
    mosquitto.kill()  # right after the last acknowledgements: the broker may lose its last second
    run(40)  # messages go to the outbox (and paho's queue) while the broker is down
    assert agent.outbox.depth() > 0
    mosquitto.start()
    wait_for(lambda: agent.outbox.depth() == 0, 60, "outbox drained after the broker came back")
    run(20)
    wait_for(lambda: agent.outbox.depth() == 0, 30, "outbox drained")
    time.sleep(1.2)
    run(1)  # resends whatever the killed broker had acknowledged and then lost
    wait_for(lambda: agent.outbox.depth() == 0, 30, "resends acknowledged")
    last_seq = agent.outbox.last_seq()
    first = 1

    def all_arrived() -> bool:
        return {m["seq"] for m in list(received)} == set(range(first, last_seq + 1))

    # every seq arrived (the resends fill what the killed broker lost; duplicates are deduped by seq)
    wait_for(all_arrived, 30, "every message delivered")
    agent.bus.stop()
    watcher.stop()
    agent.outbox.close()
    # an agent restarted on the same state continues the seq
    again = Outbox(tmp_path / "agent.sqlite")
    assert again.last_seq() == last_seq
    again.close()
