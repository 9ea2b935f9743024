"""Read-only access to a node's ledger store for the dashboard (one SQLite connection per thread).

The store is opened with ``Store.open(data_dir, readonly=True)`` (SQLite URI ``mode=ro``): the
dashboard can never write the ledger. The current state (order book, balances, registry,
parameters) is the node's snapshot advanced to the head by re-executing the few blocks after it,
cached per head height.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chain.app import Application
from chain.canonical import loads_strict
from chain.engine import replay_blocks
from chain.state import State
from chain.store import Store, StoreError, db_path, integrity_problems, is_corrupt
from dashboard.timeutil import zone
from market import params as market_params

log = logging.getLogger("peerwatt.dashboard")


@dataclass(frozen=True)
class Community:
    """What the genesis document says about the community (never changes)."""

    id: str
    name: str
    timezone: str
    tz: ZoneInfo
    genesis_time: int
    app: str
    genesis_hash: str
    doc: dict[str, Any]


class Unavailable(StoreError):
    """A file the dashboard serves from cannot be used now: the ledger moved away, damaged or of
    another genesis, the index or the accounts damaged or on a full disk. The message names the
    file and what to do (the start's one-line error, and the log's line); ``public`` says it
    without a path for visitors: the app answers 503 with it, and the indexer reports it."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class LedgerReplaced(Unavailable):
    """The data folder now holds another ledger (another genesis) than the one the dashboard was
    started on: its accounts, sessions and verify runs belong to the first. The app answers 503
    with the message (which names no path: visitors read it; the log names the file) until it is
    restarted on the right folder, or the right ledger is back."""


class LedgerGone(Unavailable):
    """The ledger store cannot be opened while the dashboard runs (its data folder moved away, or
    being restored): 503 until it is back."""


class LedgerDamaged(Unavailable):
    """SQLite finds a page of the ledger store damaged: 503 until the data folder is restored from
    a peer (a replaced file is read afresh)."""


class FaultLog:
    """Logs each kind of fault (an Unavailable class) once while it lasts, not per request or
    indexing round, and once when it is over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: dict[type[Unavailable], str] = {}

    def fault(self, exc: Unavailable) -> None:
        with self._lock:
            if self._now.get(type(exc)) == str(exc):
                return
            self._now[type(exc)] = str(exc)
        log.error("%s", exc)

    def over(self, kind: type[Unavailable], message: str) -> None:
        with self._lock:
            if self._now.pop(kind, None) is None:
                return
        log.warning("%s", message)


def damaged_file(exc: sqlite3.Error, files: tuple[Any, ...]) -> Unavailable | None:
    """Which of ``files`` (each with ``damage`` and ``check_damage(exc)``: the ledger, the index,
    the accounts) a damaged-file error came from: one already found damaged, else the first whose
    quick check fails (None for any other error, or when all are sound)."""
    if not is_corrupt(exc):
        return None
    for file in files:
        if file.damage is not None:
            return file.damage
    for file in files:
        found = file.check_damage(exc)
        if found is not None:
            return found
    return None


class _CannotReplay(Exception):
    """A block after the snapshot cannot be re-executed here (erased payload)."""


@dataclass(frozen=True)
class Head:
    height: int
    time: int
    hash: str


class LedgerReader:
    """Thread-safe read-only view of one node's ledger store."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._local = threading.local()
        self._state_lock = threading.Lock()
        self._state: tuple[int, State] | None = None
        self._app_instance: Application | None = None
        self._failover_lock = threading.Lock()
        self._failovers = (0, 0)  # (last height counted, blocks final in a round above 0)
        self.faults = FaultLog()  # what cannot be used now, logged once (the app and indexer add theirs)
        self.damage: LedgerDamaged | None = None  # found by check_damage; forgotten when the file is replaced
        store = self.store()  # fails early with a one-line StoreError when there is no store
        try:
            store.check_column("txs", "hash", bytes)  # (read as raw rows: a damaged one is a StoreError)
            store.check_column("blocks", "hash", bytes)
            doc_bytes = store.genesis_doc()
            genesis_hash = _genesis_hash(store)
        except sqlite3.DatabaseError as exc:
            self.close()
            if is_corrupt(exc):
                raise self._damaged(exc) from None
            raise
        doc = loads_strict(doc_bytes)
        community = doc["community"]
        self.community = Community(
            id=community["id"],
            name=community.get("name", community["id"]),
            timezone=community.get("timezone", "UTC"),
            tz=zone(community.get("timezone", "UTC")),
            genesis_time=community["time"],
            app=community.get("app", "market"),
            genesis_hash=genesis_hash,
            doc=doc,
        )

    # -- connections -------------------------------------------------------------------------

    def store(self) -> Store:
        """This thread's read-only store (opened on first use, and again when the file was
        replaced: a node's data folder restored from a peer's copy under a running dashboard).

        A file of another genesis is never read (LedgerReplaced), and a store that cannot be
        opened while the dashboard runs (its data folder moved away) is LedgerGone: each logged
        once, not per request or per indexing round; and once more when the right ledger is back."""
        store = getattr(self._local, "store", None)
        path = db_path(self.data_dir)
        try:
            identity = _file_identity(path)
        except OSError:
            identity = None  # being replaced right now: keep reading the open file
        if store is not None and identity is not None and identity != self._local.identity:
            store.close()
            store = self._local.store = None
            if self.damage is not None:
                self.damage = None
                self.faults.over(LedgerDamaged, f"{path} was replaced: it is read again")
        if store is None:
            if not hasattr(self, "community"):
                store = Store.open(self.data_dir, readonly=True)  # at start: its one-line StoreError
            else:
                store = self._open_again(path)
            self._local.store, self._local.identity = store, identity
        return store

    def _open_again(self, path: Path) -> Store:
        """The store opened while the dashboard runs, checked to be the ledger it started on."""
        try:
            store = Store.open(self.data_dir, readonly=True)
        except StoreError as exc:
            gone = LedgerGone(
                f"{exc}: every page answers 503 until it is back",
                "the ledger cannot be read now (its data folder was moved away or is being restored): "
                "it is served again once it is back",
            )
            self.faults.fault(gone)
            raise gone from None
        self.faults.over(LedgerGone, f"{path} can be read again")
        if _genesis_hash(store) != self.community.genesis_hash:
            store.close()
            replaced = LedgerReplaced(
                f"{path} now holds another ledger (another genesis) than the one this dashboard was "
                "started on: every page answers 503 until the dashboard is restarted on the right data "
                "folder",
                "the data folder now holds another ledger (another genesis) than the one this "
                "dashboard was started on: restart the dashboard on the right data folder",
            )
            self.faults.fault(replaced)
            raise replaced
        self.faults.over(LedgerReplaced, f"{path} holds the ledger this dashboard was started on again")
        return store

    def _damaged(self, exc: sqlite3.Error) -> LedgerDamaged:
        """The one-line fault of a damaged store (as ``POST /api/v1/verify`` words the fix)."""
        return LedgerDamaged(
            f"cannot read {db_path(self.data_dir)}: {exc} (the file is damaged: restore the data folder "
            "from a peer)",
            f"the ledger store is damaged ({exc}): the dashboard's operator restores the node's data "
            "folder from a peer",
        )

    def check_damage(self, exc: sqlite3.Error) -> LedgerDamaged | None:
        """The store's fault if it is damaged (``damaged_file``: a quick check, once)."""
        if self.damage is None and integrity_problems(self.conn, 1):
            self.damage = self._damaged(exc)
        return self.damage

    @property
    def conn(self):
        return self.store().conn

    # -- chain facts ---------------------------------------------------------------------------

    def head(self) -> Head:
        row = self.conn.execute(
            "SELECT height, time, hash FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.data_dir}: the store has no blocks")
        return Head(row[0], row[1], bytes(row[2]).hex())

    def block_hash(self, height: int) -> str | None:
        row = self.conn.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0]).hex()

    def header(self, height: int) -> dict[str, Any] | None:
        return self.store().header(height)

    # -- state at the head ----------------------------------------------------------------------

    def state(self) -> State:
        """The ledger state after the last final block (book, balances, registry, parameters).

        A node saves its state snapshot only every few blocks; the blocks after it are
        re-executed here in memory (no signature checks: they are final, and each state root is
        checked against its header), as ``Ledger.open`` does. Cached per head height and advanced
        block by block. If a payload after the snapshot was erased, the snapshot's state is used.
        """
        head = self.head()
        with self._state_lock:
            cached = self._state
            if cached is not None and cached[0] == head.height:
                return cached[1]
            snap = self.conn.execute("SELECT height FROM local_snapshot WHERE id = 0").fetchone()
            if cached is None or cached[0] > head.height or (snap is not None and snap[0] > cached[0]):
                loaded = self.store().snapshot()
                if loaded is None:
                    raise StoreError(f"{self.data_dir}: the store has no state snapshot")
                cached = loaded
            height, state = cached
            try:
                state = self._replay(state, height, head.height)
                height = head.height
            except _CannotReplay:
                pass
            self._state = (height, state)
            return state

    def state_height(self) -> int:
        """The height of the state the dashboard shows (the head, unless replay was impossible)."""
        self.state()
        return self._state[0] if self._state else -1

    def _replay(self, state: State, start: int, end: int) -> State:
        try:
            return replay_blocks(self.store(), self._app(), self.community.id, state, start, end)
        except StoreError:
            raise _CannotReplay from None

    def _app(self) -> Application:
        if self._app_instance is None:
            from market.apps import load_app

            self._app_instance = load_app(self.community.app)
        return self._app_instance

    def _chain(self) -> dict[str, Any]:
        return self.state()["chain"]

    def params(self) -> dict[str, Any]:
        """The market parameters in force (governance may have changed them), with defaults."""
        return market_params.with_defaults(self._chain()["params"])

    def book(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The open order book: {interval: {meter: order}}."""
        return self.state()["app"].get("book", {})

    def balances(self) -> dict[str, int]:
        return self.state()["app"].get("balances", {})

    def meters(self) -> dict[str, dict[str, Any]]:
        """Every meter ever enrolled (genesis and governance), by key id."""
        return self._chain()["meters"]

    def members(self) -> dict[str, dict[str, Any]]:
        return self._chain()["members"]

    def validators(self) -> dict[str, dict[str, Any]]:
        """The validator set in force for the next block."""
        return self._chain()["validators"]

    def quorum(self) -> int:
        return self._chain()["quorum"]

    def sequencer(self) -> str:
        """The validator that proposes the next block first (round 0): the creator of the last
        block, unless governance named another (docs/ledger.md, "Consensus")."""
        return self._chain()["sequencer"]

    def failovers(self) -> int:
        """How many blocks became final in a round above 0, i.e. after their first proposer was
        silent (counted once per block, incrementally as the chain grows)."""
        with self._failover_lock:
            seen, count = self._failovers
            rows = self.conn.execute(
                "SELECT height, header FROM blocks WHERE height > ? ORDER BY height", (seen,)
            )
            for height, header in rows:
                count += loads_strict(bytes(header)).get("round", 0) > 0
                seen = height
            self._failovers = (seen, count)
            return count

    def open_proposals(self) -> dict[str, dict[str, Any]]:
        return self._chain()["proposals"]

    def erased(self) -> dict[str, int]:
        return self._chain()["erased"]

    def close(self) -> None:
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None


def _file_identity(path: Path) -> tuple[int, int]:
    """(device, inode) of a file: a file moved aside and another copied in has another."""
    info = path.stat()
    return info.st_dev, info.st_ino


def _genesis_hash(store: Store) -> str:
    return hashlib.sha256(store.genesis_doc()).hexdigest()
