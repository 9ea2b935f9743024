"""Two households whose real agents read simulated meters, trading through an in-process sequencer.

The set-up the meter-source end-to-end tests share (tests/reliability/test_*_e2e.py): a market
community of one validator and two members with one meter each (the serials the meters report are
enrolled), a sequencer ``Node`` on the ``MemoryBus``, a paused ``SimClock`` at 09:00 UTC on a
sunny June day, and one ``Agent`` with its own durable outbox per meter. Each test brings only
its meter: ``make_meter(i, household, clock)`` starts meter ``i``'s simulator and returns it with
the reader the agent uses. Household 0 has 9 kWp of PV and sells, household 1 buys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chain.engine import Ledger
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from tests.support.localnet import make_community

START = 1750500000 - 3600  # 2025-06-21 09:00 UTC: strong sun in Berlin
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}

MakeMeter = Callable[[int, Household, SimClock], tuple[Any, Any]]  # -> (started simulator, reader)


class MeterCommunity:
    def __init__(
        self,
        clock: SimClock,
        community: Any,
        node: Node,
        on_tick: Callable[[MeterCommunity], None] | None,
    ) -> None:
        self.clock = clock
        self.c = community
        self.node = node
        self.on_tick = on_tick
        self.sims: list[Any] = []
        self.agents: list[Agent] = []

    def run(self, minutes: int) -> None:
        """Advance the clock a minute at a time; each minute every agent polls its meter and the
        sequencer works off what arrived."""
        for _ in range(minutes):
            self.clock.advance(60)
            if self.on_tick is not None:
                self.on_tick(self)
            for agent in self.agents:
                agent.poll()
            for _ in range(50):
                if not self.node.step():
                    break

    def results(self) -> list[dict[str, Any]]:
        ledger = self.node.ledger
        return [r for h in range(1, ledger.height + 1) for r in ledger.store.results(h)]

    def ride_out_fault(self, kind: str) -> None:
        """100 minutes of trading, then meter 0 has fault ``kind`` for 3 polls (its agent reports
        the meter not ok), then 110 minutes after it cleared (every meter ok again)."""
        self.run(100)
        self.sims[0].inject(kind)
        self.run(3)
        assert self.agents[0].status()["meter_ok"] is False
        self.sims[0].clear_faults()
        self.run(110)
        assert all(agent.status()["meter_ok"] for agent in self.agents)

    def assert_trades_settle(self, label: str) -> None:
        """The households traded, trades settled with energy, no reading was flagged (the
        serials match the enrolment); money conserved and the ledger verifies."""
        results = self.results()
        trades = [r for r in results if r["kind"] == "trade"]
        settlements = [r for r in results if r["kind"] == "settlement"]
        assert trades, f"the {label} households must trade"
        settled = [s for s in settlements if s["status"] == "settled"]
        assert settled and all(s["settled_wh"] > 0 for s in settled)
        assert not [r for r in results if r["kind"] == "reading_flag"], "serials must match the enrolment"
        self.assert_conserved_and_verified()

    def assert_conserved_and_verified(self) -> None:
        ledger = self.node.ledger
        assert sum(ledger.state["app"]["balances"].values()) == 0
        assert verify_store(ledger.store, MarketApp()).blocks == ledger.height


@contextmanager
def meter_community(
    tmp_path: Path,
    serials: list[str],
    make_meter: MakeMeter,
    profile: str,
    on_tick: Callable[[MeterCommunity], None] | None = None,
) -> Iterator[MeterCommunity]:
    """The community with its agents started; on exit closes the agents' outboxes and readers,
    stops the simulators and closes the ledger. ``on_tick`` runs after each clock step, before
    the agents poll."""
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
        serials=serials,
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
    m = MeterCommunity(clock, c, node, on_tick)
    try:
        for i, (meter, household) in enumerate(zip(c.meters, homes, strict=True)):
            sim, reader = make_meter(i, household, clock)
            m.sims.append(sim)
            agent = Agent(
                key=meter.key,
                genesis=c.genesis,
                bus=MemoryBus(broker, f"agent-{i}"),
                reader=reader,
                outbox=Outbox(tmp_path / f"agent-{i}.sqlite"),
                strategy=StrategyConfig(),
                clock=clock.now,
                profile=profile,
                heartbeat_s=float("inf"),
            )
            agent.order_margin_s = 180
            agent.start()
            m.agents.append(agent)
        yield m
    finally:
        for agent in m.agents:
            agent.outbox.close()
            agent.reader.close()
        for sim in m.sims:
            sim.stop()
        node.ledger.close()
