"""Shelly Pro 3EM over HTTP RPC end to end: two simulated devices (http.server on loopback) ->
real agents reading them with ShellyHttpReader -> sequencer -> market app. The readings carry the
devices' MACs, which the genesis enrols, so trades settle; a stretch of HTTP 500 answers is a
meter fault the agents ride out; money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from chain.engine import Ledger
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.outbox import Outbox
from meter_agent.shelly_http import PROFILE_NAME, ShellyHttpReader
from meter_agent.shelly_simulator import ShellySimulator
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from tests.support.localnet import make_community

pytestmark = pytest.mark.reliability
START = 1750500000 - 3600  # 2025-06-21 09:00 UTC: strong sun in Berlin
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}
SERIALS = ["C8F09E000001", "C8F09E000002"]


def test_shelly_http_meters_trade_and_settle(tmp_path):
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
            sim = ShellySimulator(household, clock=clock, mac=SERIALS[i]).start()
            sims.append(sim)
            reader = ShellyHttpReader("127.0.0.1", sim.port, timeout_s=2.0, clock=clock.now)
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
                for agent in agents:
                    agent.poll()
                for _ in range(50):
                    if not node.step():
                        break

        run(100)
        sims[0].inject("error")  # the device fails for a few polls: faults, never readings
        run(3)
        assert agents[0].status()["meter_ok"] is False
        sims[0].clear_faults()
        run(110)
        assert all(agent.status()["meter_ok"] for agent in agents)
        results = [r for h in range(1, node.ledger.height + 1) for r in node.ledger.store.results(h)]
        trades = [r for r in results if r["kind"] == "trade"]
        settlements = [r for r in results if r["kind"] == "settlement"]
        assert trades, "the Shelly households must trade"
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
