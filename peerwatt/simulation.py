"""`peerwatt simulate`: a virtual-clock study of a community ("what if 40 homes join, 15 with PV?").

The same agent strategy, signing, ledger engine, market app and settlement code as a real install,
but meters are simulated in process (the household model integrated into cumulative counters),
the bus is in memory, and the clock jumps from one poll to the next instead of waiting. Keys and
households derive from the seed and signatures are deterministic (RFC 6979), so a seed gives the
same ledger and the same report every time.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from chain.engine import Ledger
from chain.genesis import genesis_from_dict
from chain.keys import key_id, public_key_sec1
from chain.signature import CURVE_ORDER
from chain.store import Store
from chain.verify import VerifyReport, verify_store
from chain.verify_workers import default_workers
from market.app import MarketApp
from market.params import check_params
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household, SolarSite, Weather, integrate_net_energy
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.node import Node
from peerwatt.reports import build_report

COMMUNITY = "sim-community"
INTEGRATION_STEP_S = 60.0


@dataclass
class SimOptions:
    homes: int = 20
    pv_share: float = 0.5
    pv_min_kwp: float = 3.0
    pv_max_kwp: float = 9.0
    days: float = 1.0
    start: date = date(2026, 6, 21)
    lat: float = 52.52
    lon: float = 13.40
    feed_in_price: int = 80_000
    retail_price: int = 300_000
    grid_fee_per_kwh: int = 20_000
    levies_per_kwh: int = 5_000
    mechanism: str = "uniform"
    community_price: int = 150_000
    seed: int = 1
    validators: int = 2
    step_s: int = 300
    out: Path = Path("simulation")


def derived_key(seed: int, role: str, index: int) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from the seed (simulation only: real keys come from the OS's RNG)."""
    digest = hashlib.sha256(f"peerwatt-simulate/{seed}/{role}/{index}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (CURVE_ORDER - 1) + 1, ec.SECP256R1())


class InProcessMeter:
    """A meter read without Modbus: the household's cumulative counters at the clock's time."""

    def __init__(
        self, household: Household, clock: SimClock, serial: str, import_wh: float, export_wh: float
    ):
        self.household = household
        self.clock = clock
        self.serial = serial
        self.import_wh = import_wh
        self.export_wh = export_wh
        self.integrated_to = clock.now()

    def read(self) -> MeterSample:
        now = self.clock.now()
        imported, exported = integrate_net_energy(self.household, self.integrated_to, now, INTEGRATION_STEP_S)
        self.import_wh += imported
        self.export_wh += exported
        self.integrated_to = now
        return MeterSample(
            time=int(now),
            power_w=round(self.household.net_power_w(now)),
            import_wh=round(self.import_wh),
            export_wh=round(self.export_wh),
            voltage_v=(),
            current_a=(),
            phase_power_w=(),
            frequency_hz=None,
            serial=self.serial,
            profile="sim",
            unit_id=1,
        )


@dataclass
class SimResult:
    tables: dict[str, Any]
    verify: VerifyReport
    homes: list[dict[str, Any]]
    out: Path
    memory: list[tuple[float, float]]  # (simulated days done, this process's RSS in MB) per day


def rss_mb() -> float:
    """This process's resident memory now (MB); the peak where /proc is missing (not Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


def _market_params(o: SimOptions) -> dict[str, Any]:
    """The community's market parameters for the study (checked)."""
    params = {
        "interval_s": 900,
        "gate_s": 300,
        "horizon_s": 86_400,
        "settle_after_intervals": 2,
        "feed_in_price": o.feed_in_price,
        "retail_price": o.retail_price,
        "grid_fee_per_kwh": o.grid_fee_per_kwh,
        "levies_per_kwh": o.levies_per_kwh,
        "mechanism": o.mechanism,
        "community_price": o.community_price,
    }
    check_params(params)
    return params


def _make_homes(o: SimOptions) -> list[dict[str, Any]]:
    """The households, drawn from the seed: PV for a share of them, consumption, keys, limits."""
    import random

    rng = random.Random(o.seed)
    homes = []
    with_pv = set(rng.sample(range(o.homes), round(o.homes * o.pv_share)))
    for i in range(o.homes):
        pv = round(rng.uniform(o.pv_min_kwp, o.pv_max_kwp), 1) if i in with_pv else 0.0
        homes.append(
            {
                "name": f"home-{i + 1:03d}",
                "pv_kwp": pv,
                "annual_kwh": round(rng.uniform(2000, 6000)),
                "meter": derived_key(o.seed, "meter", i),
                "owner": derived_key(o.seed, "owner", i),
                "sell": rng.randrange(85_000, 140_000, 1000),
                "buy": rng.randrange(160_000, 280_000, 1000),
            }
        )
    return homes


def _genesis(start: int, params: dict[str, Any], validators: list, homes: list[dict[str, Any]]):
    """The study community's genesis: validator 0 sequences, every home a member with one meter."""
    return genesis_from_dict(
        {
            "community": {"id": COMMUNITY, "time": start - 900, "app": "market", "timezone": "UTC"},
            "chain": {"sequencer": key_id(validators[0].public_key()), "block_s": 1},
            "app": params,
            "validators": [{"key": public_key_sec1(k.public_key()).hex()} for k in validators],
            "members": [
                {"key": public_key_sec1(h["owner"].public_key()).hex(), "name": h["name"]} for h in homes
            ],
            "meters": [
                {
                    "key": public_key_sec1(h["meter"].public_key()).hex(),
                    "name": h["name"],
                    "serial": f"SIM{i:05d}",
                    "owner": key_id(h["owner"].public_key()),
                    "capacity_w": 15_000,
                }
                for i, h in enumerate(homes)
            ],
        }
    )


def _make_nodes(
    o: SimOptions, genesis, validators: list, broker: MemoryBroker, clock: SimClock
) -> list[Node]:
    """A store and a node per validator (the first is the sequencer) on the in-memory bus.

    The stores run with ``synchronous=NORMAL`` instead of FULL: WAL still keeps them consistent
    if the study is killed, but a block is not flushed to the disk before the next one (a study
    is re-run, never resumed); the fsync per block and node was most of a study's wall time."""
    nodes = []
    for i, key in enumerate(validators):
        node_dir = o.out / "ledger" / ("sequencer" if i == 0 else f"validator-{i}")
        Ledger.create(node_dir, genesis, MarketApp()).close()
        ledger = Ledger.open(node_dir, MarketApp())
        ledger.store.conn.execute("PRAGMA synchronous=NORMAL")
        nodes.append(
            Node(
                ledger,
                MemoryBus(broker, f"node-{i}"),
                role="sequencer" if i == 0 else "validator",
                key=key,
                clock=clock,
                block_s=0,
            )
        )
    return nodes


def _make_agents(
    o: SimOptions, genesis, homes: list[dict[str, Any]], broker: MemoryBroker, clock: SimClock
) -> list[Agent]:
    """The real agent of every home, reading an in-process meter that follows its household."""
    site, weather = SolarSite(o.lat, o.lon, 30.0, None), Weather(o.seed)
    agents = []
    sealed_headers: set[bytes] = set()
    for i, h in enumerate(homes):
        household = Household(
            pv_kwp=h["pv_kwp"],
            annual_kwh=h["annual_kwh"],
            seed=o.seed * 100_003 + i,
            site=site,
            weather=weather,
        )
        meter = InProcessMeter(household, clock, f"SIM{i:05d}", 1_000_000.0, 100_000.0)
        agent = Agent(
            key=h["meter"],
            genesis=genesis,
            bus=MemoryBus(broker, f"agent-{i}"),
            reader=meter,
            outbox=Outbox(":memory:", first_seq=1),
            strategy=StrategyConfig(sell_limit_price=h["sell"], buy_limit_price=h["buy"]),
            clock=clock.now,
            profile="sim",
            heartbeat_s=float("inf"),
        )
        agent.order_margin_s = 3 * o.step_s
        # every agent checks the seals of a block's receipts; in one process they can share which
        # headers were already checked (on real devices each agent checks each header once)
        agent._sealed_headers = sealed_headers
        agents.append(agent)
    return agents


def _run_steps(
    nodes: list[Node],
    agents: list[Agent],
    clock: SimClock,
    steps: int,
    step_s: int,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[float, float]]:
    """Advance the virtual clock step by step: every agent polls, then the nodes settle.
    Returns (simulated days, RSS in MB) at the end of each simulated day and of the run."""
    memory: list[tuple[float, float]] = []
    steps_per_day = 86_400 // step_s
    for node in nodes:
        node.start()
    for agent in agents:
        agent.start()
    try:
        for step in range(steps):
            clock.advance(step_s)
            for agent in agents:
                agent.poll()
            for _ in range(1000):
                if not any([node.step() for node in nodes]):
                    break
            if (step + 1) % steps_per_day == 0 or step + 1 == steps:
                memory.append(((step + 1) * step_s / 86_400, rss_mb()))
            if progress is not None:
                progress(step + 1, steps)
    finally:
        for agent in agents:
            agent.outbox.close()
        for node in nodes:
            node.ledger.close()
    return memory


def run_simulation(o: SimOptions, progress: Callable[[int, int], None] | None = None) -> SimResult:
    """Run the study; write the ledger, the report CSVs and the plots into ``o.out``."""
    params = _market_params(o)
    if o.out.exists():
        shutil.rmtree(o.out / "ledger", ignore_errors=True)
    o.out.mkdir(parents=True, exist_ok=True)
    start = int(datetime(o.start.year, o.start.month, o.start.day, tzinfo=UTC).timestamp())
    validators = [derived_key(o.seed, "validator", i) for i in range(o.validators + 1)]
    homes = _make_homes(o)
    genesis = _genesis(start, params, validators, homes)
    clock = SimClock(start, 1.0)
    clock.pause()
    broker = MemoryBroker()
    nodes = _make_nodes(o, genesis, validators, broker, clock)
    agents = _make_agents(o, genesis, homes, broker, clock)
    memory = _run_steps(nodes, agents, clock, int(o.days * 86_400) // o.step_s, o.step_s, progress)
    store = Store.open(o.out / "ledger" / "sequencer", readonly=True)
    try:
        report = verify_store(store, MarketApp(), workers=default_workers())  # as `peerwatt verify`
        tables = build_report(store)
    finally:
        store.close()
    for name, frame in tables.items():
        frame.to_csv(o.out / f"{name}.csv", index=False)
    write_plots(tables, o.out, start)
    return SimResult(
        tables,
        report,
        [{k: v for k, v in h.items() if k not in ("meter", "owner")} for h in homes],
        o.out,
        memory,
    )


def write_plots(tables: dict[str, Any], out: Path, start: int) -> None:
    """Daily P2P volume, clearing price over time, savings per household (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    trades = tables["trades"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(trades):
        day = pd.to_datetime(trades["interval"], unit="s", utc=True).dt.date
        (trades.groupby(day)["energy_wh"].sum() / 1000).plot.bar(ax=ax, color="#2a9d8f")
    ax.set_title("P2P energy traded per day")
    ax.set_ylabel("kWh")
    fig.tight_layout()
    fig.savefig(out / "daily_p2p_volume.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    if len(trades):
        prices = trades.groupby("interval")["price"].mean() / 10_000
        ax.plot(pd.to_datetime(prices.index, unit="s", utc=True), prices.values, marker=".", color="#e76f51")
    ax.set_title("Clearing price per interval")
    ax.set_ylabel("ct/kWh")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "price.png", dpi=100)
    plt.close(fig)

    households = tables["households"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if "savings" in households:
        (households.set_index("name")["savings"].sort_values() / 1e6).plot.bar(ax=ax, color="#264653")
    ax.set_title("Savings per household against the grid-only baseline")
    ax.set_ylabel("currency units")
    fig.tight_layout()
    fig.savefig(out / "savings.png", dpi=100)
    plt.close(fig)
