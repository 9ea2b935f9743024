"""The community of a `peerwatt simulate` study, built from its options alone.

Keys derive from the seed, households are drawn from the seed, and signatures are deterministic
(RFC 6979), so every process of a study (the coordinator and each worker of peerwatt/sim_host.py)
builds the same genesis, and the node or agent it hosts, from the same :class:`SimOptions`,
without being sent any of it. Nothing here runs the study: it only builds its parts.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import ec

from chain.engine import Ledger
from chain.genesis import RULES_NEW, Genesis, genesis_from_dict
from chain.keys import key_id, public_key_sec1
from chain.signature import CURVE_ORDER
from market.app import MarketApp
from market.params import check_params
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household, SolarSite, Weather, integrate_net_energy
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import Bus
from peerwatt.node import Node

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
    # the community's time zone (IANA name, genesis community.timezone): where its days, months
    # and statements begin; the study starts at midnight of ``start`` there
    timezone: str = "UTC"
    # processes the study runs in: 1 = this one only; None = one per core (the outcome is the
    # same for any number: see docs/simulate.md, "All cores")
    workers: int | None = None


def derived_key(seed: int, role: str, index: int) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from the seed (simulation only: real keys come from the OS's RNG)."""
    digest = hashlib.sha256(f"peerwatt-simulate/{seed}/{role}/{index}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (CURVE_ORDER - 1) + 1, ec.SECP256R1())


def rss_mb() -> float:
    """This process's resident memory now (MB); the peak where /proc is missing (not Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


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


def start_time(o: SimOptions) -> int:
    """The study's first instant (Unix seconds): midnight of its first day in the community's
    time zone (``o.timezone``, UTC by default); in a zone whose offset then was not whole quarter
    hours (local mean time, before about 1900), the interval boundary just before it."""
    midnight = datetime(o.start.year, o.start.month, o.start.day, tzinfo=ZoneInfo(o.timezone))
    start = int(midnight.timestamp())
    return start - start % 900


def market_params(o: SimOptions) -> dict[str, Any]:
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
        "fee_rates_at": "clearing",
        "max_reading_corrections": 3,
        "max_orders_per_interval": 12,
    }
    check_params(params, bounded=True, rules=RULES_NEW)  # as the genesis it goes into
    return params


def make_homes(o: SimOptions) -> list[dict[str, Any]]:
    """The households, drawn from the seed: PV for a share of them, consumption, keys, limits
    (the agent's strategy keeps them within what can pay: meter_agent/strategy.py plan_order)."""
    rng = random.Random(o.seed)
    homes = []
    with_pv = set(rng.sample(range(o.homes), round(o.homes * o.pv_share)))
    for i in range(o.homes):
        pv = round(rng.uniform(o.pv_min_kwp, o.pv_max_kwp), 1) if i in with_pv else 0.0
        home = {
            "name": f"home-{i + 1:03d}",
            "pv_kwp": pv,
            "annual_kwh": round(rng.uniform(2000, 6000)),
            "meter": derived_key(o.seed, "meter", i),
            "owner": derived_key(o.seed, "owner", i),
            "sell": rng.randrange(85_000, 140_000, 1000),
            "buy": rng.randrange(160_000, 280_000, 1000),
        }
        homes.append(home)
    return homes


def validator_keys(o: SimOptions) -> list[ec.EllipticCurvePrivateKey]:
    """The keys of the study's nodes: the sequencer (0) and ``o.validators`` validators."""
    return [derived_key(o.seed, "validator", i) for i in range(o.validators + 1)]


def make_genesis(o: SimOptions, validators: list, homes: list[dict[str, Any]]) -> Genesis:
    """The study community's genesis: validator 0 sequences, every home a member with one meter."""
    start = start_time(o)
    return genesis_from_dict(
        {
            "community": {"id": COMMUNITY, "time": start - 900, "app": "market", "timezone": o.timezone},
            "chain": {
                "sequencer": key_id(validators[0].public_key()),
                "block_s": 1,
                "max_open_proposals": 32,  # docs/governance.md, "Bounds"
                "rules": RULES_NEW,  # docs/ledger.md, "Rules"
            },
            "app": market_params(o),
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


def node_name(index: int) -> str:
    """The node's name in messages and in ``out/ledger/``: the sequencer, then validator-1..n."""
    return "sequencer" if index == 0 else f"validator-{index}"


def make_node(
    o: SimOptions,
    genesis: Genesis,
    index: int,
    key: ec.EllipticCurvePrivateKey,
    bus: Bus,
    clock: SimClock,
    monotonic: Callable[[], float],
) -> Node:
    """Node ``index`` (0 is the sequencer) with its own new store in ``out/ledger/<name>``.

    ``monotonic`` is the study's virtual time, not the machine's: consensus timeouts, republishing
    and stall warnings then depend on simulated time only, so a slow machine cannot change the
    ledger. The store runs with ``synchronous=NORMAL`` instead of FULL: WAL still keeps it
    consistent if the study is killed, but a block is not flushed to the disk before the next one
    (a study is re-run, never resumed); the fsync per block and node was most of a study's wall
    time."""
    node_dir = o.out / "ledger" / node_name(index)
    Ledger.create(node_dir, genesis, MarketApp()).close()
    ledger = Ledger.open(node_dir, MarketApp())
    ledger.store.conn.execute("PRAGMA synchronous=NORMAL")
    return Node(
        ledger,
        bus,
        role="sequencer" if index == 0 else "validator",
        key=key,
        clock=clock,
        block_s=0,
        monotonic=monotonic,
    )


class AgentsShared:
    """What the agents of one process share: the site and the sky (both memoise the last time
    they computed, so many homes at one time cost one computation; the weather is a function of
    the seed and the time, so every process sees the same sky), and the headers whose seals an
    agent here already checked (on real devices each agent checks each header once)."""

    def __init__(self, o: SimOptions) -> None:
        self.site = SolarSite(o.lat, o.lon, 30.0, None)
        self.weather = Weather(o.seed)
        self.sealed_headers: set[bytes] = set()


def make_agent(
    o: SimOptions,
    genesis: Genesis,
    homes: list[dict[str, Any]],
    index: int,
    bus: Bus,
    clock: SimClock,
    shared: AgentsShared,
) -> Agent:
    """The real agent of home ``index``, reading an in-process meter that follows its household."""
    h = homes[index]
    household = Household(
        pv_kwp=h["pv_kwp"],
        annual_kwh=h["annual_kwh"],
        seed=o.seed * 100_003 + index,
        site=shared.site,
        weather=shared.weather,
    )
    meter = InProcessMeter(household, clock, f"SIM{index:05d}", 1_000_000.0, 100_000.0)
    agent = Agent(
        key=h["meter"],
        genesis=genesis,
        bus=bus,
        reader=meter,
        outbox=Outbox(":memory:", first_seq=1),
        strategy=StrategyConfig(sell_limit_price=h["sell"], buy_limit_price=h["buy"]),
        clock=clock.now,
        profile="sim",
        heartbeat_s=float("inf"),
    )
    agent.poll_s = o.step_s
    agent.order_margin_s = 3 * o.step_s
    agent._sealed_headers = shared.sealed_headers
    return agent
