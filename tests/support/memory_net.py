"""A community of in-process validators on the in-memory bus (node 0 proposes first), for node tests.

Time is simulated: ``clock`` for block times and ``now`` (monotonic seconds) for the nodes'
timeouts, which ``advance`` moves on, so failover tests run in milliseconds."""

from __future__ import annotations

from chain.engine import Ledger
from chain.kvapp import KeyValueApp
from chain.store import LEDGER_TABLES
from meter_agent.clock import SimClock
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from peerwatt.node import Node
from peerwatt.node.mempool import Mempool
from tests.support.localnet import make_community

T0 = 1_764_000_000


class Net:
    def __init__(self, tmp_path, validators=4, app_factory=KeyValueApp, **community):
        """``community``: more of make_community's options (e.g. app="market", app_params)."""
        self.tmp = tmp_path
        self.app_factory = app_factory
        self.c = make_community(validators=validators, members=3, meters_per_member=2, time=T0, **community)
        self.broker = MemoryBroker()
        self.clock = SimClock(T0 + 10, 1.0)
        self.now = 1000.0
        self.nodes: list[Node | None] = [None] * validators
        for i in range(validators):
            Ledger.create(tmp_path / f"n{i}", self.c.genesis, app_factory()).close()
            self.start(i)
        self.publisher = MemoryBus(self.broker, "publisher")
        self.publisher.start()

    def start(self, i, peers=()):
        ledger = Ledger.open(self.tmp / f"n{i}", self.app_factory())
        role = "sequencer" if i == 0 else "validator"
        mempool = Mempool(self.tmp / f"n{i}" / "mempool.sqlite")
        node = Node(
            ledger,
            MemoryBus(self.broker, f"node-{i}"),
            role=role,
            key=self.c.validators[i].key,
            clock=self.clock,
            block_s=0,
            mempool=mempool,
            peers=peers,
            monotonic=lambda: self.now,
        )
        node.start()
        self.nodes[i] = node
        return node

    def crash(self, i):
        node = self.nodes[i]
        node.bus.crash()
        node.ledger.close()
        if node.mempool:
            node.mempool.close()
        self.nodes[i] = None

    def send(self, n_per_meter, first=0):
        sent = []
        for meter in self.c.meters:
            for k in range(n_per_meter):
                env = meter.sign(
                    self.c.community,
                    "reading",
                    {"interval": T0, "import_wh": first + k, "export_wh": 0, "serial": "S", "profile": "p"},
                    created=T0,
                )
                self.publisher.publish(Topics.readings(self.c.community, meter.id), env.to_bytes())
                sent.append(env)
        return sent

    def settle(self, rounds=200):
        """Step every live node until none has anything to do."""
        for _ in range(rounds):
            busy = False
            for node in self.nodes:
                if node is not None:
                    busy |= node.step()
            if not busy:
                return

    def advance(self, seconds, step_s=0.5):
        """Let ``seconds`` of the nodes' time pass, settling after each ``step_s``."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step_s)
            self.settle()


def selling_agent(net: Net, folder, reader):
    """A started agent on ``net``'s first meter (state in ``folder``), reading ``reader``, polling
    every 10 s of the nodes' clock, with a history that makes it sell about 640 Wh an interval."""
    from meter_agent.agent import Agent
    from meter_agent.outbox import Outbox
    from meter_agent.strategy import StrategyConfig

    meter = net.c.meters[0]
    agent = Agent(
        key=meter.key,
        genesis=net.c.genesis,
        bus=MemoryBus(net.broker, meter.id),
        reader=reader,
        outbox=Outbox(folder / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=lambda: int(net.clock.now()),
        heartbeat_s=3600,
    )
    agent.start()
    agent.poll_s = 10
    now = int(net.clock.now())
    agent.history = {str(now - now % 900 - 900 * k): 800 for k in range(1, 4)}
    return agent


def trade(net: Net, agent, polls: int) -> None:
    """``polls`` polls of ``agent``, 10 s of the nodes' clock apart, the nodes settling after each."""
    for _ in range(polls):
        net.clock.advance(10)
        agent.poll()
        net.advance(10, step_s=10)


def dump(ledger):
    return [ledger.store.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in LEDGER_TABLES]
