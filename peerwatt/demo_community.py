"""The one-command demo: a live community on this machine, with the same code as a real install.

An embedded MQTT broker (or a given one, or with ``mosquitto=True`` a real Mosquitto run from the
community's generated per-account config and certificates: ``DemoMosquitto``), N simulated
households — each a Modbus TCP meter simulator on a loopback port with its own PV size and load,
read by its own real agent with its own key — one sequencer and three validators with their own
keys and stores, and (unless headless) the dashboard. Everything shares one accelerated clock
(``speed`` simulated seconds per real second) that starts on a sunny June morning, so offers,
trades and settlements come at once.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chain.engine import Ledger
from chain.genesis import RULES_NEW, Genesis, genesis_from_dict
from chain.keys import generate_private_key, key_id, public_key_sec1
from chain.store import Store
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.clock import SimClock
from meter_agent.household import Household, SolarSite, Weather
from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.outbox import Outbox
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from meter_agent.strategy import StrategyConfig
from peerwatt.broker.embedded import EmbeddedBroker
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from peerwatt.dashboard_server import run_until_closed
from peerwatt.errors import UserError
from peerwatt.node import Node
from peerwatt.node.http_api import NodeHttpApi
from peerwatt.node.mempool import Mempool
from peerwatt.ports import free_port

log = logging.getLogger("peerwatt.demo")

COMMUNITY = "demo-street"
# 2026-06-21 05:30 UTC = 07:30 in Berlin: a sunny midsummer morning.
DEFAULT_START = int(datetime(2026, 6, 21, 5, 30, tzinfo=UTC).timestamp())
PROFILES = ("sdm630", "em340", "shelly-pro-3em", "sunspec", "sdm120")
MARKER = "peerwatt-demo.txt"
PARAMS = {
    "interval_s": 900,
    "gate_s": 300,
    "horizon_s": 86_400,
    "settle_after_intervals": 2,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
    "grid_fee_per_kwh": 20_000,
    "levies_per_kwh": 5_000,
    "mechanism": "uniform",
    "fee_rates_at": "clearing",
    "max_reading_corrections": 3,
    "max_orders_per_interval": 12,
}
# the genesis [chain] besides the sequencer (docs/governance.md, "Bounds")
CHAIN = {"block_s": 1, "max_open_proposals": 32, "rules": RULES_NEW}


@dataclass
class DemoOptions:
    homes: int = 12
    speed: float = 300.0
    hours: float | None = None
    headless: bool = False
    data: Path | None = None
    broker: str | None = None
    mosquitto: bool = False  # a real Mosquitto with one certificate account per node and meter
    port: int = 8050
    seed: int = 1
    start: int = DEFAULT_START
    validators: int = 3


@dataclass
class Home:
    name: str
    key: Any
    owner: Any
    household: Household
    profile: str
    sim: MeterSimulator | None = None
    agent: Agent | None = None
    reader: MeterReader | None = None


@dataclass
class Stats:
    """Running totals read from the sequencer's store."""

    height: int = 0
    intervals: int = 0
    trades: int = 0
    volume_wh: int = 0
    value: int = 0
    last_price: int | None = None
    settled: int = 0
    seals: int = 0
    _seen: int = 0
    prices: list[int] = field(default_factory=list)

    def update(self, store: Store) -> None:
        top = store.height()
        for height in range(self._seen + 1, top + 1):
            for result in store.results(height):
                kind = result["kind"]
                if kind == "clearing":
                    self.intervals += 1
                    if result["price"] is not None and result["volume_wh"]:
                        self.last_price = result["price"]
                        self.prices.append(result["price"])
                elif kind == "trade":
                    self.trades += 1
                    self.volume_wh += result["energy_wh"]
                    self.value += result["value"]
                elif kind == "settlement" and result["status"] == "settled":
                    self.settled += 1
            self.seals = len(store.seal_rows(height))
        self._seen = top
        self.height = top

    @property
    def average_price(self) -> int | None:
        return None if not self.volume_wh else round(self.value * 1000 / self.volume_wh)


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(
                f"port {port} for the {what} is in use: stop what uses it or pass --port"
            ) from None


MOSQUITTO_BINARY = "/usr/sbin/mosquitto"  # Debian's
MOSQUITTO_READY_S = 10.0
# Mosquitto runs in a session of its own, so no signal to the demo's process group reaches it, and
# a demo killed outright (SIGKILL, the OOM killer) stops nothing. On Linux it is started through
# this (`python -c TIED PARENT_PID MOSQUITTO ARGS...`): the child asks the kernel for SIGTERM when
# its parent (the thread that started it) ends (PR_SET_PDEATHSIG, kept across exec for a binary
# that is not set-user-ID), checks that the parent is still there (else it ended before the
# request and no signal would come), and becomes Mosquitto. A Python child rather than a
# preexec_fn: nothing runs in a forked copy of the multithreaded demo.
TIED = """
import ctypes, os, signal, sys
prctl = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1
if prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), *[ctypes.c_ulong(0)] * 3) != 0:
    sys.exit("error: cannot tie Mosquitto to the demo: prctl: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    sys.exit("error: the demo ended before its Mosquitto started")
os.execv(sys.argv[2], sys.argv[2:])
"""


class DemoMosquitto:
    """The community's broker as production runs it, on a free loopback port, for the demo.

    ``peerwatt broker certs`` and ``peerwatt broker config`` (their functions) write a community CA,
    a broker certificate for 127.0.0.1, one client certificate per account, the CRL, the ACL (one
    block per node and meter, docs/privacy.md) and a cert-mode mosquitto.conf into ``folder``; the
    demo adds only where Mosquitto logs, and ``user root`` when run as root (the demo's folder is
    private to its user, unlike /etc/mosquitto). ``config_for(account)`` is that account's
    BrokerConfig (TLS with its own certificate); the broker names each client by its account.
    """

    def __init__(self, folder: Path, community: str, accounts: list) -> None:
        self.folder = folder
        self.community = community
        self.accounts = accounts
        self.certs = folder / "certs"
        self.log_path = folder / "mosquitto.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("mosquitto") or (MOSQUITTO_BINARY if os.path.exists(MOSQUITTO_BINARY) else None)
        if found is None:
            raise UserError(
                "--mosquitto needs Mosquitto (Debian: apt install mosquitto); "
                "without --mosquitto the demo runs its embedded broker"
            )
        return found

    def write(self) -> None:
        from peerwatt.broker.certs import make_certs
        from peerwatt.broker.mosquitto import write_config

        make_certs(self.certs, community=self.community, hosts=("127.0.0.1",), accounts=self.accounts)
        persistence = self.folder / "persistence"
        persistence.mkdir(parents=True, exist_ok=True)
        result = write_config(
            self.folder,
            self.community,
            self.accounts,
            certs_dir=self.certs,
            persistence_dir=persistence,
            auth="cert",
            port=self.port,
            bind="127.0.0.1",
        )
        demo_lines = [
            "",
            "# demo only (peerwatt demo --mosquitto): log to a file in the demo's folder",
            f"log_dest file {self.log_path}",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # the demo's folder is private to root (Mosquitto would drop to 'mosquitto'); loopback only
            demo_lines.append("user root")
        with open(result.conf, "a") as conf:
            conf.write("\n".join(demo_lines) + "\n")
        self.conf = result.conf

    def start(self) -> None:
        """Start Mosquitto and wait until it listens. Call it from a thread that outlives the
        broker (the main thread): on Linux it gets SIGTERM when that thread ends (``TIED``)."""
        binary = self.binary()
        self.write()
        command = [binary, "-c", str(self.conf)]
        if sys.platform.startswith("linux") and sys.executable:
            command = [sys.executable, "-I", "-S", "-c", TIED, str(os.getpid()), *command]
        with open(self.folder / "mosquitto.stderr", "wb") as stderr:
            # its own session: a Ctrl-C in the terminal (SIGINT to the foreground process group)
            # stops the demo, which stops its nodes and then the broker, not the broker under them
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + MOSQUITTO_READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"Mosquitto stopped at start: {self._last_error()}")
            # its log says when it listens (a probe connection would log a failed TLS handshake)
            if self.log_path.exists() and " running" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        self.stop()
        raise UserError(f"Mosquitto did not listen on 127.0.0.1:{self.port} within {MOSQUITTO_READY_S:g} s")

    def ended(self) -> str | None:
        """None while Mosquitto runs (or before it started); once it has ended, which this reaps
        (a child left unwaited stays a zombie), one line: its pid, how it ended, what that means."""
        process = self.process
        if process is None or process.poll() is None:
            return None
        code = process.returncode
        if code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}" + (f" ({self._last_error()})" if code else "")
        return (
            f"Mosquitto (pid {process.pid}) {how}: the demo's nodes and meters have no broker, so "
            f"no message moves; stopping the demo (its log: {self.log_path})"
        )

    def _last_error(self) -> str:
        lines = []
        for path in (self.folder / "mosquitto.stderr", self.log_path):
            if path.exists():
                lines += [x for x in path.read_text(errors="replace").splitlines() if "rror" in x]
        return lines[0].split(": ", 1)[-1] if lines else f"see {self.log_path}"

    def config_for(self, account: str) -> BrokerConfig:
        clients = self.certs / "clients"
        return BrokerConfig(
            host="127.0.0.1",
            port=self.port,
            tls=True,
            ca_file=str(self.certs / "community-ca.crt"),
            cert_file=str(clients / f"{account}.crt"),
            key_file=str(clients / f"{account}.key"),
        )

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop Mosquitto (SIGTERM; SIGKILL after MOSQUITTO_READY_S) and reap it. Interrupted
        (a KeyboardInterrupt while it waits), it kills Mosquitto and keeps it to reap, so that a
        call again finishes the job."""
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(MOSQUITTO_READY_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(MOSQUITTO_READY_S)
        except BaseException:
            if process.returncode is None:
                process.kill()
            raise
        self.process = None


class ConnectionLog:
    """Which of the demo's MQTT clients are without their broker now, and for how long any of them
    was in all: fed by each bus's ``on_connection_change`` (``watch(name)``). A client counts from
    its first connection; after ``close`` (the demo stopping its clients) nothing counts."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._up: set[str] = set()  # connected now
        self._known: set[str] = set()  # connected at least once
        self._down_since: float | None = None  # since when at least one known client is down
        self._down_total = 0.0
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._names)

    def watch(self, name: str) -> Callable[[bool], None]:
        """The ``on_connection_change`` callback of the client ``name``."""
        with self._lock:
            self._names.add(name)
        return lambda up: self._change(name, up)

    def _change(self, name: str, up: bool) -> None:
        with self._lock:
            if self._closed:
                return
            if up:
                self._up.add(name)
                self._known.add(name)
            else:
                self._up.discard(name)
            self._spans(bool(self._known - self._up))

    def _spans(self, down: bool) -> None:
        now = self._clock()
        if down and self._down_since is None:
            self._down_since = now
        elif not down and self._down_since is not None:
            self._down_total += now - self._down_since
            self._down_since = None

    def down(self) -> tuple[int, float]:
        """How many clients are without their broker now, and for how long (0, 0.0: none)."""
        with self._lock:
            if self._down_since is None:
                return 0, 0.0
            return len(self._known - self._up), self._clock() - self._down_since

    def down_s(self) -> float:
        """The seconds during which any client was without its broker, in all, up to now."""
        with self._lock:
            ongoing = 0.0 if self._down_since is None else self._clock() - self._down_since
            return self._down_total + ongoing

    def close(self) -> None:
        """The demo stops its clients: their disconnections are no outage."""
        with self._lock:
            self._spans(False)
            self._closed = True


class Demo:
    """Builds, runs and stops the demo community (see module docstring)."""

    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.clock = SimClock(options.start, options.speed)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.nodes: list[Node] = []
        self.apis: list[NodeHttpApi] = []
        self.serving: list[NodeHttpApi] = []  # the APIs started (stopping one not serving hangs)
        self.homes: list[Home] = []
        self.broker: EmbeddedBroker | None = None
        self.mosquitto: DemoMosquitto | None = None
        self.dashboard_server: Any = None
        self.dashboard_closing = threading.Event()
        self.dashboard_bus: MqttBus | None = None
        self.logins: list[tuple[str, str, str]] = []
        self.connections = ConnectionLog()  # the nodes' and agents' MQTT connections
        self.broker_gone: str | None = None  # the line saying the demo's Mosquitto ended
        self.temporary = options.data is None
        self.data = Path(options.data) if options.data else Path(tempfile.mkdtemp(prefix="peerwatt-demo-"))

    # -- set-up --------------------------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        if self.temporary:
            return
        if self.data.exists() and any(self.data.iterdir()):
            marker = self.data / MARKER
            if marker.exists():
                raise UserError(
                    f"{self.data} holds an earlier demo run ({marker.read_text().strip()}); "
                    "inspect it with `peerwatt verify`, or pass an empty --data folder"
                )
            raise UserError(f"{self.data} is not empty and not a demo folder; pass an empty --data folder")
        self.data.mkdir(parents=True, exist_ok=True)

    def _broker_config(self) -> tuple[BrokerConfig, str]:
        if self.o.mosquitto:
            from peerwatt.broker.access import DASHBOARD_ACCOUNT, community_accounts

            self.mosquitto = DemoMosquitto(
                self.data / "broker",
                COMMUNITY,
                # the dashboard's read-only account (status/+) when there is a dashboard
                community_accounts(
                    self.genesis.doc, dashboard=None if self.o.headless else DASHBOARD_ACCOUNT
                ),
            )
            self.mosquitto.start()
            sequencer = self.genesis.doc["chain"]["sequencer"]
            return self.mosquitto.config_for(f"node-{sequencer}"), "5"
        if self.o.broker:
            try:
                return BrokerConfig.from_url(self.o.broker), "auto"
            except ValueError as exc:
                raise UserError(f"--broker: {exc}") from None
        self.broker = EmbeddedBroker("127.0.0.1", 0)
        self.broker.start()
        return BrokerConfig(host="127.0.0.1", port=self.broker.port), EmbeddedBroker.protocol

    def setup(self) -> None:
        """Make the community: homes, genesis, the broker, nodes and agents (not started yet)."""
        if self.o.mosquitto and self.o.broker:
            raise UserError("--mosquitto starts its own broker: drop --broker (or --mosquitto)")
        self._prepare_data_dir()
        if not self.o.headless:
            check_port_free(self.o.port, "dashboard")
        validator_keys = [generate_private_key() for _ in range(self.o.validators + 1)]
        coop = generate_private_key()
        self._make_homes()
        self.genesis = self._make_genesis(validator_keys, coop)
        (self.data / MARKER).write_text(f"community {COMMUNITY}, started {datetime.now(UTC).isoformat()}\n")
        (self.data / "genesis.json").write_bytes(self.genesis.to_bytes())
        broker_cfg, protocol = self._broker_config()
        self.broker_cfg = broker_cfg
        self.protocol = protocol
        self._make_nodes(validator_keys, protocol)
        self._make_agents(protocol)
        if not self.o.headless:
            self._setup_dashboard()

    def _make_homes(self) -> None:
        """One neighbourhood's households: a third without PV, loads and PV drawn from the seed."""
        site, weather = SolarSite(52.52, 13.40, 30.0, None), Weather(self.o.seed)  # one neighbourhood
        for i in range(self.o.homes):
            pv = 0.0 if i % 3 == 2 else round(self.rng.uniform(3.0, 9.0), 1)  # a third without PV
            household = Household(
                pv_kwp=pv,
                annual_kwh=round(self.rng.uniform(2500, 5500)),
                seed=self.o.seed * 100 + i,
                site=site,
                weather=weather,
            )
            self.homes.append(
                Home(
                    f"home-{i + 1:02d}",
                    generate_private_key(),
                    generate_private_key(),
                    household,
                    PROFILES[i % len(PROFILES)],
                )
            )

    def _make_genesis(self, validator_keys: list, coop) -> Genesis:
        """The demo community's genesis: the cooperative and every home as members, one meter each."""
        genesis_time = self.o.start - self.o.start % 900 - 900
        return genesis_from_dict(
            {
                "community": {
                    "id": COMMUNITY,
                    "name": "Demo Street Energy Community",
                    "time": genesis_time,
                    "app": "market",
                    "timezone": "Europe/Berlin",
                },
                "chain": {"sequencer": key_id(validator_keys[0].public_key()), **CHAIN},
                "app": PARAMS,
                "validators": [
                    {
                        "key": public_key_sec1(k.public_key()).hex(),
                        "name": "sequencer" if i == 0 else f"validator-{i}",
                    }
                    for i, k in enumerate(validator_keys)
                ],
                "members": [{"key": public_key_sec1(coop.public_key()).hex(), "name": "cooperative"}]
                + [{"key": public_key_sec1(h.owner.public_key()).hex(), "name": h.name} for h in self.homes],
                "meters": [
                    {
                        "key": public_key_sec1(h.key.public_key()).hex(),
                        "name": h.name,
                        "serial": f"{70000 + i}",
                        "owner": key_id(h.owner.public_key()),
                        "capacity_w": 11_000,
                    }
                    for i, h in enumerate(self.homes)
                ],
            }
        )

    def _make_nodes(self, validator_keys: list, protocol: str) -> None:
        """The sequencer and validators, each with its store, broker account and HTTP API."""
        genesis = self.genesis
        roles = ["sequencer"] + ["validator"] * self.o.validators
        ports = [free_port() for _ in roles]
        for i, (role, key) in enumerate(zip(roles, validator_keys, strict=True)):
            name = "sequencer" if i == 0 else f"validator-{i}"
            node_dir = self.data / name
            Ledger.create(node_dir, genesis, MarketApp()).close()
            ledger = Ledger.open(node_dir, MarketApp())
            # client ids are the broker accounts `peerwatt broker config` makes (docs/privacy.md)
            account = f"node-{key_id(key.public_key())}"
            bus = MqttBus(
                self._account_config(account),
                account,
                protocol=protocol,
                on_connection_change=self.connections.watch(account),
            )
            peers = tuple(f"http://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i)
            mempool = Mempool(node_dir / "mempool.sqlite")
            # a block at least every 2 simulated minutes (and at most 5 per real second)
            node = Node(
                ledger,
                bus,
                role=role,
                key=key,
                clock=self.clock,
                block_s=max(0.2, min(1.0, 120 / self.o.speed)),
                peers=peers,
                mempool=mempool,
            )
            self.nodes.append(node)
            api = NodeHttpApi(node_dir, node.status, "127.0.0.1", ports[i])
            self.apis.append(api)

    def _make_agents(self, protocol: str) -> None:
        """A meter simulator and the real agent (its own key, account and outbox) for every home."""
        genesis = self.genesis
        # a tenth of a second of wall time, but at most a tenth of the interval (readings are the
        # counters up to one poll after an interval's end: meter_agent/agent.py, reading_late_s)
        poll_s = min(max(5.0, self.o.speed * 0.1), PARAMS["interval_s"] / 10)
        self.poll_s = poll_s
        for i, home in enumerate(self.homes):
            home.sim = MeterSimulator(
                home.profile,
                home.household,
                port=0,
                unit_id=1,
                seed=i,
                clock=self.clock,
                meter_serial=f"{70000 + i}",
            )
            home.sim.start()
            home.reader = MeterReader(
                find_profile(home.profile),
                TcpTarget("127.0.0.1", home.sim.port),
                timeout_s=1.0,
                retries=1,
                clock=self.clock.now,
            )
            strategy = StrategyConfig(
                sell_share=0.8,
                sell_limit_price=self.rng.randrange(85_000, 140_000, 1000),
                buy_limit_price=self.rng.randrange(160_000, 280_000, 1000),
                min_order_wh=20,
            )
            bus = MqttBus(
                self._account_config(key_id(home.key.public_key())),
                key_id(home.key.public_key()),  # a meter's account is its meter id
                protocol=protocol,
                will=(Topics.status(COMMUNITY, key_id(home.key.public_key())), b"offline", True),
                on_connection_change=self.connections.watch(home.name),
            )
            home.agent = Agent(
                key=home.key,
                genesis=genesis,
                bus=bus,
                reader=home.reader,
                outbox=Outbox(self.data / "agents" / home.name / "agent.sqlite"),
                strategy=strategy,
                clock=self.clock.now,
                profile=home.profile,
                heartbeat_s=5.0,
            )

    def _account_config(self, account: str) -> BrokerConfig:
        """The broker settings of one account: its own certificate on the demo's Mosquitto, else
        the one broker config every process shares."""
        return self.mosquitto.config_for(account) if self.mosquitto is not None else self.broker_cfg

    def _setup_dashboard(self) -> None:
        from peerwatt.broker.access import DASHBOARD_ACCOUNT
        from peerwatt.dashboard_server import make_dashboard

        self.dashboard_server, self.logins, board = make_dashboard(
            self.data / "sequencer", self.data / "dashboard", self.o.port, self.homes, self.clock
        )
        # the household pages show each agent's health: the dashboard follows the agents' status
        # (read-only: its own account on the demo's Mosquitto), as `peerwatt dashboard` does
        self.dashboard_bus = MqttBus(
            self._account_config(DASHBOARD_ACCOUNT),
            DASHBOARD_ACCOUNT,
            protocol=self.protocol,
            on_connection_change=lambda up: setattr(board, "connected", up),
        )
        self.dashboard_bus.subscribe(board.pattern, board.handle)

    # -- running -------------------------------------------------------------------------------

    def _thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        for api in self.apis:
            api.start()
            self.serving.append(api)
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            if not node.bus.wait_connected(10):
                raise UserError(
                    self.broker_ended()
                    or f"cannot reach the MQTT broker at {self.broker_cfg.address}: "
                    f"{getattr(node.bus, 'last_error', None) or 'no answer'}"
                )
        for node in self.nodes:
            self._thread(lambda n=node: n.run(self.stop_event), f"node-{node.role}")
        for home in self.homes:
            home.agent.start()
            self._thread(lambda a=home.agent: a.run(self.stop_event, self.poll_s, self.o.speed), home.name)
        if self.dashboard_server is not None:
            self._thread(lambda: run_until_closed(self.dashboard_server, self.dashboard_closing), "dashboard")
        if self.dashboard_bus is not None:
            self.dashboard_bus.start()

    def stats(self, stats: Stats) -> Stats:
        store = Store.open(self.data / "sequencer", readonly=True)
        try:
            stats.update(store)
        finally:
            store.close()
        return stats

    def broker_ended(self) -> str | None:
        """The line saying that the demo's Mosquitto ended (reaped), or None while it runs (and
        without --mosquitto: an embedded broker runs in this process, a given one is not ours)."""
        if self.broker_gone is None and self.mosquitto is not None:
            self.broker_gone = self.mosquitto.ended()
        return self.broker_gone

    def broker_status(self) -> str | None:
        """None while every node and agent is connected to the broker; else how many are not,
        and since when."""
        count, seconds = self.connections.down()
        if not count:
            return None
        clients = self.connections.clients
        return f"the MQTT broker out of reach of {count} of {clients} clients for {seconds:.0f} s"

    def finished(self) -> bool:
        return self.o.hours is not None and self.clock.now() >= self.o.start + self.o.hours * 3600

    def stop(self) -> None:
        """Stop agents, let the nodes converge (unless the broker is gone), stop nodes, meters,
        dashboard and broker; also what a startup made before it was interrupted. The broker
        stops whatever happened meanwhile (an exception, a second Ctrl-C)."""
        try:
            self._stop_community()
        finally:
            self.stop_broker()

    def stop_broker(self) -> None:
        """Stop the broker this demo runs (embedded or Mosquitto); after that, nothing."""
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop()
        if self.mosquitto is not None:
            self.mosquitto.stop()

    def _stop_community(self) -> None:
        self.connections.close()
        for home in self.homes:
            if home.agent is not None:
                try:
                    home.agent.stop()
                except Exception as exc:  # noqa: BLE001 (keep stopping the rest)
                    log.debug("agent %s stop: %s", home.name, exc)
        for node in self.nodes:
            node.draining = True  # the block in progress is finished; nobody proposes a new one
        # without a broker no news comes; nodes that never ran have nothing to converge on
        deadline = time.monotonic() + (0 if self.broker_ended() or not self.threads else 10)
        while time.monotonic() < deadline and (
            len({n.ledger.height for n in self.nodes}) > 1
            or any(n.status()["in_progress"] for n in self.nodes)
        ):
            time.sleep(0.1)
        self.stop_event.set()
        for thread in self.threads:
            if thread.name != "dashboard":
                thread.join(10)
        for node in self.nodes:
            node.stop()
        for api in self.apis:
            if api in self.serving:
                api.stop()
            else:
                api.server.server_close()
        for home in self.homes:
            if home.reader is not None:
                home.reader.close()
            if home.sim is not None:
                home.sim.stop()
            if home.agent is not None:
                home.agent.outbox.close()
        if self.dashboard_bus is not None:
            self.dashboard_bus.stop()
        if self.dashboard_server is not None:
            self.dashboard_closing.set()
            self.dashboard_server.close()
        for node in self.nodes:
            if node.mempool is not None:
                node.mempool.close()
            node.ledger.close()

    def verify(self) -> list[str]:
        """Verify every node's store; return one line per node."""
        lines = []
        for node_dir in sorted(p for p in self.data.iterdir() if (p / "ledger.sqlite").exists()):
            store = Store.open(node_dir, readonly=True)
            try:
                report = verify_store(store, MarketApp())
                lines.append(f"{node_dir.name}: {report.summary()}")
            finally:
                store.close()
        return lines

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.data, ignore_errors=True)
