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


def dump(ledger):
    return [ledger.store.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in LEDGER_TABLES]
