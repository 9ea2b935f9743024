"""`peerwatt simulate`: a virtual-clock study of a community ("what if 40 homes join, 15 with PV?").

The same agent strategy, signing, ledger engine, market app and settlement code as a real install,
but meters are simulated (the household model integrated into cumulative counters), the clock
jumps from one poll to the next instead of waiting, and the nodes and agents exchange their
messages through this process, the coordinator, in supersteps: in this process alone, or with the
nodes and agents in worker processes on the other cores (docs/simulate.md, "All cores"). Keys and
households derive from the seed and signatures are deterministic (RFC 6979), so a seed gives the
same ledger and the same report every time, whatever the number of processes.

This module is the coordinator: it plans which process holds what, runs the supersteps, sums the
memory, and at the end verifies the ledger and writes the report and plots. It builds the study in
a folder of its own beside ``--out`` and moves it into place only once it is complete, so an
earlier study is replaced (when asked) only by a whole one (docs/simulate.md, "The --out folder").
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chain.genesis import Genesis
from chain.store import Store
from chain.verify import VerifyReport, verify_store
from chain.verify_workers import default_workers
from market.app import MarketApp
from peerwatt.errors import UserError
from peerwatt.reports import build_report
from peerwatt.sim_bus import Delivery, Published, Router
from peerwatt.sim_community import (
    COMMUNITY,
    InProcessMeter,
    SimOptions,
    derived_key,
    make_genesis,
    make_homes,
    market_params,
    rss_mb,
    start_time,
    validator_keys,
)
from peerwatt.sim_host import Host, HostSpec, InProcessHost, SubprocessHost, WorkerError

__all__ = [
    "COMMUNITY",
    "InProcessMeter",
    "SimOptions",
    "SimResult",
    "WorkerError",
    "check_options",
    "check_out",
    "derived_key",
    "plan_hosts",
    "rss_mb",
    "run_simulation",
    "price_series",
    "write_plots",
]

MAX_SUPERSTEPS = 1000  # per poll: messages still moving after this many, the next poll goes on
WORKER_TIMEOUT_S = 600.0  # a worker silent this long in one superstep is taken for hung


@dataclass
class SimResult:
    tables: dict[str, Any]
    verify: VerifyReport
    homes: list[dict[str, Any]]
    out: Path
    # (simulated days done, RSS in MB of the whole study: this process and its workers, each
    # measured by itself) at the end of each simulated day and of the run
    memory: list[tuple[float, float]]
    workers: int = 0  # worker processes the study ran in (0: all in this one)
    nodes: dict[str, dict[str, int]] | None = None  # per node: height, failovers, quarantined, ...


# Below this many homes a study runs in one process unless --workers says otherwise: measured on
# 2 cores (docs/simulate.md, "All cores"), 10 homes took 7.5-7.9 s in one process and 8.1-9.4 s
# on workers, 30 homes were even, 60 homes 1.2x faster on workers.
SMALL_STUDY_HOMES = 40


def default_study_workers(homes: int) -> int:
    """The processes a study of ``homes`` homes runs in when ``--workers`` is not given: one per
    core, but one alone for a small study, whose supersteps are too small to pay for crossing
    processes."""
    return 1 if homes < SMALL_STUDY_HOMES else default_workers()


def plan_hosts(o: SimOptions, workers: int) -> list[tuple[HostSpec, bool]]:
    """Which process holds which clients: (spec, in this process?) per host.

    ``workers`` 1: everything in this process. More: worker processes, one per node at least
    (a node's work cannot be split, and in a superstep the validators re-execute a block at the
    same time) and ``workers`` at most otherwise; node i in worker i, the homes' agents dealt to
    the workers in equal contiguous groups; the coordinator (this process) only routes."""
    nodes = o.validators + 1
    homes = list(range(o.homes))
    if workers <= 1:
        return [(HostSpec(tuple(range(nodes)), tuple(homes)), True)]
    count = max(workers, nodes)
    groups = [tuple(homes[len(homes) * i // count : len(homes) * (i + 1) // count]) for i in range(count)]
    return [(HostSpec((i,) if i < nodes else (), groups[i]), False) for i in range(count)]


def run_simulation(
    o: SimOptions,
    progress: Callable[[int, int, float | None], None] | None = None,
    *,
    replace_study: bool = False,
) -> SimResult:
    """Run the study; write the ledger, the report CSVs and the plots into ``o.out``.

    ``o.out`` must be new, an empty folder, or (with ``replace_study``) an earlier study, which
    is replaced only once the new one is complete (:func:`check_out`). The study is built in a
    folder beside it (``.<name>.partial-<random>``), removed if the run fails or is interrupted.
    ``progress(done, total, rss)`` is called after each poll of the meters (``rss``: the
    study's memory in MB, measured every simulated hour, else None)."""
    # everything the options decide is built and checked before anything is written
    check_options(o)
    market_params(o)
    start = start_time(o)
    homes = make_homes(o)
    genesis = make_genesis(o, validator_keys(o), homes)
    check_out(o.out, replace_study)
    made = [p for p in o.out.absolute().parents if not p.exists()]  # folders this run makes, innermost first
    try:
        o.out.absolute().parent.mkdir(parents=True, exist_ok=True)
        partial = _beside(o.out, "partial")
    except OSError as exc:
        _remove_empty(made)
        raise UserError(f"cannot use --out {o.out}: {exc.strerror or exc}") from None
    keep = False  # the complete study, when it could not be moved into place
    try:
        result = _run(replace(o, out=partial), progress, start, homes, genesis)
        check_out(o.out, replace_study)  # again: the folder may have changed during the run
        try:
            _move_into_place(partial, o.out)
        except OSError as exc:
            keep = True
            raise UserError(
                f"cannot put the study in place at --out {o.out} ({exc.strerror or exc}); the complete "
                f"study is in {partial}: move it yourself"
            ) from None
    except BaseException:
        if not keep:
            shutil.rmtree(partial, ignore_errors=True)
            _remove_empty(made)
        raise
    result.out = o.out
    return result


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) that a failed run made and that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def check_options(o: SimOptions) -> None:
    """Raise ValueError with one line naming the `peerwatt simulate` option (as typed) and what
    it may be, for any option the study cannot run with (checked before anything is written)."""

    def within(value: float, low: float, high: float, option: str, unit: str) -> None:
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{option} must be from {low:g} to {high:g}{unit} (not {value:g})")

    within(o.homes, 2, 5000, "--homes", "")
    within(o.pv_share, 0, 1, "--pv-share", "")
    within(o.days, 0.05, 366, "--days", " days")
    within(o.lat, -66, 66, "--lat", " degrees")
    within(o.lon, -180, 180, "--lon", " degrees")
    low, high = o.pv_min_kwp, o.pv_max_kwp
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 1000):
        raise ValueError(
            f"--pv-kwp {low:g}-{high:g}: two sizes from 0 to 1000 kWp, the smallest size first, e.g. 3-9"
        )
    if start_time(o) - 900 < 0:  # the genesis, an interval before the study, is after 1970
        raise ValueError(f"--start must be 1970-01-02 or later (not {o.start.isoformat()})")
    if o.feed_in_price > o.retail_price:
        raise ValueError(f"--feed-in ({o.feed_in_price}) must be at most --retail ({o.retail_price}) µ/kWh")
    if o.mechanism == "community" and not o.feed_in_price <= o.community_price <= o.retail_price:
        raise ValueError(
            f"--community-price must be from --feed-in to --retail ({o.feed_in_price} to"
            f" {o.retail_price} µ/kWh) with --mechanism community (not {o.community_price})"
        )


# What a study writes into its folder (besides ledger/): the report's tables and the plots
STUDY_FILES = frozenset(
    {"households.csv", "trades.csv", "settlements.csv", "kpis.csv"}
    | {"daily_p2p_volume.png", "price.png", "savings.png"}
)
_NODE_DIR = re.compile(r"sequencer|validator-\d+")


def check_out(out: Path, replace_study: bool) -> None:
    """Raise a one-line UserError unless a study may be written to ``out``: a folder that does
    not exist yet, an empty one, or an earlier study (only its files: :data:`STUDY_FILES` and
    ``ledger/`` with the nodes' stores) when ``replace_study``. Never the current folder or one
    that holds it, never a symbolic link or a file."""
    try:
        if out.is_symlink():
            raise UserError(f"--out {out} is a symbolic link: give the folder itself")
        if not out.exists():
            folder = out.absolute().parent
            while not folder.exists():
                folder = folder.parent
            if not folder.is_dir():
                raise UserError(f"cannot use --out {out}: {folder} is a file, not a folder")
            return
        if not out.is_dir():
            raise UserError(f"--out {out} is a file, not a folder: choose another --out")
        if os.path.ismount(out):  # (a disk, a container's volume): the study could not move there
            raise UserError(
                f"--out {out} is a mount point: a study is built beside --out and moved into place, "
                f"which a mount point cannot be; give a folder inside it, e.g. {out / 'study'}"
            )
        here = Path.cwd().resolve()
        if out.resolve() == here or out.resolve() in here.parents:
            raise UserError(
                f"--out {out} is the current folder or holds it: give the study a folder of its own"
            )
        entries = sorted(p.name for p in out.iterdir())
        if not entries:
            return
        if not _is_study(out, entries):
            listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(
                f"--out {out} holds files that are not a peerwatt study ({listed}):"
                " choose a new or empty folder"
            )
    except OSError as exc:
        raise UserError(f"cannot use {out}: {exc.strerror or exc}") from None
    if not replace_study:
        raise UserError(
            f"--out {out} holds an earlier study: add --replace to replace it (once the new one is complete)"
            " or choose another folder"
        )


def _is_study(out: Path, entries: list[str]) -> bool:
    """Whether the folder ``out`` (its ``entries``) holds a study and nothing else."""
    ledger = out / "ledger"
    if not set(entries) <= STUDY_FILES | {"ledger"} or not (ledger / "sequencer").is_dir():
        return False
    for node in ledger.iterdir():
        if not (_NODE_DIR.fullmatch(node.name) and node.is_dir() and not node.is_symlink()):
            return False
        if not all(f.name.startswith("ledger.sqlite") and f.is_file() for f in node.iterdir()):
            return False
    return all((out / name).is_file() for name in entries if name != "ledger")


def _beside(out: Path, what: str) -> Path:
    """A new hidden folder beside ``out``, ``.<name>.<what>-<random>`` (made here: a name of its
    own, also in a container whose process ids repeat and beside what a killed run left)."""
    full = out.absolute()
    return Path(tempfile.mkdtemp(prefix=f".{full.name}.{what}-", dir=full.parent))


def _move_into_place(partial: Path, out: Path) -> None:
    """Put the complete study ``partial`` at ``out``; an earlier study (or empty folder) there is
    moved aside first and removed only once the new one is in place (put back if it cannot be)."""
    if not out.exists():
        partial.rename(out)
        return
    old = _beside(out, "old")
    try:
        out.rename(old)  # (over the empty folder just made)
    except BaseException:
        old.rmdir()
        raise
    try:
        partial.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _run(
    o: SimOptions,
    progress: Callable[[int, int, float | None], None] | None,
    start: int,
    homes: list[dict[str, Any]],
    genesis: Genesis,
) -> SimResult:
    """The study itself, written into ``o.out`` (an empty folder)."""
    workers = o.workers if o.workers is not None else default_study_workers(o.homes)
    plan = plan_hosts(o, workers)
    clients = [f"node-{i}" for i in range(o.validators + 1)] + [f"agent-{i}" for i in range(o.homes)]
    hosts: list[Host] = []
    try:
        # the workers start first, so they build their nodes while this process builds its own
        for spec, _ in [p for p in plan if not p[1]]:
            hosts.append(SubprocessHost(o, spec, timeout_s=WORKER_TIMEOUT_S))
        for spec, _ in [p for p in plan if p[1]]:
            hosts.append(InProcessHost(o, spec))
        study = _Study(hosts, Router(clients), genesis.hash.hex())
        memory = study.run(start, int(o.days * 86_400) // o.step_s, o.step_s, progress)
        figures = study.close()
    except BaseException:
        for host in hosts:
            with contextlib.suppress(Exception):
                host.kill()
        raise
    store = Store.open(o.out / "ledger" / "sequencer", readonly=True)
    try:
        report = verify_store(store, MarketApp(), workers=default_workers())  # as `peerwatt verify`
        tables = build_report(store)
    finally:
        store.close()
    for name, frame in tables.items():
        frame.to_csv(o.out / f"{name}.csv", index=False)
    write_plots(tables, o.out, o.timezone, genesis.interval_s or 900)
    return SimResult(
        tables,
        report,
        [{k: v for k, v in h.items() if k not in ("meter", "owner")} for h in homes],
        o.out,
        memory,
        sum(1 for _, here in plan if not here),
        figures,
    )


class _Study:
    """The coordinator's loop over the hosts (docs/simulate.md, "All cores")."""

    def __init__(self, hosts: list[Host], router: Router, genesis_hash: str) -> None:
        # in-process hosts are served last: by then the workers are busy with their requests
        self.hosts = sorted(hosts, key=lambda h: h.in_process)
        self.router = router
        self.host_of = {f"node-{i}": h for h in hosts for i in h.spec.nodes}
        self.host_of.update({f"agent-{i}": h for h in hosts for i in h.spec.homes})
        self.supersteps = 0
        self.busy: set[int] = set()  # hosts with a node still busy after a superstep
        replies = {id(h): h.receive() for h in self.hosts}  # each answers "hello" when built
        for host in self.hosts:
            if replies[id(host)][3] != genesis_hash:
                raise WorkerError(f"the worker process of {host.name} built another community")
        self._settle(replies)

    def run(
        self,
        start: int,
        steps: int,
        step_s: int,
        progress: Callable[[int, int, float | None], None] | None,
    ) -> list[tuple[float, float]]:
        memory: list[tuple[float, float]] = []
        steps_per_day = 86_400 // step_s
        steps_per_hour = max(1, 3600 // step_s)
        for step in range(steps):
            t = start + (step + 1) * step_s
            replies = self._exchange({id(h): ("tick", t) for h in self.hosts})
            # every node steps at t, even when no message reaches it: a block may be due
            self.busy |= {id(h) for h in self.hosts if h.spec.nodes}
            self._settle(replies)
            rss = None
            day_end = (step + 1) % steps_per_day == 0 or step + 1 == steps
            if day_end or (step + 1) % steps_per_hour == 0:
                rss = self.rss()
            if day_end:
                memory.append(((step + 1) * step_s / 86_400, rss))
            if progress is not None:
                progress(step + 1, steps, rss)
        return memory

    def rss(self) -> float:
        """The study's resident memory (MB): this process's and each worker's, each measured by
        itself."""
        workers = [h for h in self.hosts if not h.in_process]
        replies = self._exchange({id(h): ("rss",) for h in workers})
        return rss_mb() + sum(reply[3] for reply in replies.values())

    def close(self) -> dict[str, dict[str, int]]:
        figures: dict[str, dict[str, int]] = {}
        for reply in self._exchange({id(h): ("close",) for h in self.hosts}).values():
            figures.update(reply[3])
        for host in self.hosts:
            host.finish(timeout_s=30)
        return dict(sorted(figures.items()))

    def _exchange(self, requests: dict[int, tuple]) -> dict[int, Any]:
        """Send each host its request, then collect every reply (the hosts work meanwhile)."""
        hosts = [h for h in self.hosts if id(h) in requests]
        for host in hosts:
            host.send(requests[id(host)])
        replies = {id(h): h.receive() for h in hosts}
        self.busy = {id(h) for h in hosts if replies[id(h)][2]} | (self.busy - set(replies))
        return replies

    def _settle(self, replies: dict[int, Any]) -> None:
        """Route what the hosts published, superstep by superstep, until nothing moves."""
        for _ in range(MAX_SUPERSTEPS):
            published: list[Published] = []
            subscribed: list[tuple[str, str]] = []
            for host in self.hosts:  # every host's messages, routed in the router's fixed order
                if id(host) in replies:
                    published += replies[id(host)][0]
                    subscribed += replies[id(host)][1]
            deliveries: dict[int, list[Delivery]] = {}
            for delivery in self.router.route(published, subscribed):
                deliveries.setdefault(id(self.host_of[delivery[0]]), []).append(delivery)
            if not deliveries and not self.busy:
                return
            self.supersteps += 1
            requests = {id(h): ("step", deliveries.get(id(h), [])) for h in self.hosts}
            requests = {k: v for k, v in requests.items() if v[1] or k in self.busy}
            replies = self._exchange(requests)


def price_series(trades: Any, timezone: str, interval_s: int) -> Any:
    """The mean trade price (ct/kWh) of each interval with trades, indexed by the interval's
    start as a wall-clock time of ``timezone`` (what the community's members read), with a gap
    (NaN) after every interval whose next one had no trade, so a plotted line does not join the
    last trade of an evening to the first of the next morning."""
    import pandas as pd

    prices = trades.groupby("interval")["price"].mean() / 10_000
    starts = prices.index.to_numpy()
    gaps = [s + interval_s for s, after in zip(starts, starts[1:], strict=False) if after - s > interval_s]
    prices = pd.concat([prices, pd.Series(float("nan"), index=gaps, dtype=float)]).sort_index()
    prices.index = pd.to_datetime(prices.index, unit="s", utc=True).tz_convert(timezone).tz_localize(None)
    return prices


def write_plots(
    tables: dict[str, Any], out: Path, timezone: str = "UTC", interval_s: int = 900
) -> None:
    """Daily P2P volume traded (days of the community's ``timezone``), trade prices over time
    (wall-clock times of ``timezone``), savings per household (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    trades = tables["trades"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(trades):
        day = pd.to_datetime(trades["interval"], unit="s", utc=True).dt.tz_convert(timezone).dt.date
        (trades.groupby(day)["energy_wh"].sum() / 1000).plot.bar(ax=ax, color="#2a9d8f")
    ax.set_title("P2P energy matched per day (settled: see the summary)")
    ax.set_ylabel("kWh")
    fig.tight_layout()
    fig.savefig(out / "daily_p2p_volume.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    if len(trades):
        prices = price_series(trades, timezone, interval_s)
        ax.plot(prices.index, prices.values, marker=".", color="#e76f51")
    ax.set_title("Trade price per interval (mean; no line where nothing traded)")
    ax.set_ylabel("ct/kWh")
    ax.set_xlabel(f"local time ({timezone})")
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
