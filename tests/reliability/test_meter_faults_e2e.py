"""Meter faults end to end: simulated meters (Modbus) -> real agents -> sequencer -> market app.
A meter is swapped mid-day (new serial, counters from zero): its agent keeps running, and the
settlement flags that meter's trades of the affected interval as unsettled rather than guessing;
money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from chain.engine import Ledger
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.outbox import Outbox
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from tests.support.localnet import make_community

pytestmark = pytest.mark.reliability
START = 1750500000 - 3600  # 2025-06-21 09:00 UTC: strong sun in Berlin
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}


def test_meter_swap_is_flagged_not_guessed(tmp_path):
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
        serials=["70000", "70001"],  # the simulators' own serials (a reading must carry the enrolled one)
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
            sim = MeterSimulator("sdm630", household, port=0, clock=clock, meter_serial=f"{70000 + i}")
            sim.start()
            sims.append(sim)
            reader = MeterReader(
                find_profile("sdm630"), TcpTarget("127.0.0.1", sim.port), timeout_s=0.5, clock=clock.now
            )
            agent = Agent(
                key=meter.key,
                genesis=c.genesis,
                bus=MemoryBus(broker, f"agent-{i}"),
                reader=reader,
                outbox=Outbox(tmp_path / f"agent-{i}.sqlite"),
                strategy=StrategyConfig(),
                clock=clock.now,
                profile="sdm630",
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

        run(150)
        swapped_at = clock.now()
        sims[0].swap_meter()  # the seller's meter is replaced: new serial, counters from zero
        run(90)
        assert agents[0].status()["meter_ok"] is True  # the agent kept running through it
        results = [r for h in range(1, node.ledger.height + 1) for r in node.ledger.store.results(h)]
        trades = [r for r in results if r["kind"] == "trade"]
        settlements = [r for r in results if r["kind"] == "settlement"]
        assert trades and any(s["status"] == "settled" for s in settlements)
        flagged = [s for s in settlements if s["flag"] == "meter_replaced"]
        assert flagged, "the swap must be flagged"
        assert all(s["status"] == "unsettled" and s["settled_wh"] == 0 and s["value"] == 0 for s in flagged)
        assert all(s["seller"] == c.meters[0].id for s in flagged)
        assert all(s["interval"] <= swapped_at < s["interval"] + 2 * 900 for s in flagged)
        assert sum(node.ledger.state["app"]["balances"].values()) == 0
        assert verify_store(node.ledger.store, MarketApp()).blocks == node.ledger.height
    finally:
        for agent in agents:
            agent.outbox.close()
            agent.reader.close()
        for sim in sims:
            sim.stop()
        node.ledger.close()
