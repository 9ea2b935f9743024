"""The services the views use (the ledger read-only, the index, accounts, the verify runner) and
how the app factory opens them.

A leaf the blueprints import (``dashboard.views.common``), as Flask's tutorial app does with its
``db.py``: the views never import the app factory, so there is no import cycle.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import request

from chain.private_files import private_folder
from chain.store import StoreError
from dashboard.accounts import Accounts, RateLimit
from dashboard.agent_status import AgentStatusBoard
from dashboard.directory import Directory
from dashboard.indexdb import IndexDB
from dashboard.indexer import Indexer
from dashboard.ledger import LedgerReader, Unavailable, damaged_file
from dashboard.proxies import Network, client_address
from dashboard.text import for_terminal
from dashboard.verify_runner import VerifyRunner


@dataclass
class Services:
    """What the views use: the ledger (read-only), the index, accounts and the verify runner."""

    ledger: LedgerReader
    index: IndexDB
    indexer: Indexer
    accounts: Accounts
    verifier: VerifyRunner
    instance_dir: Path
    trusted_proxies: tuple[Network, ...] = ()
    agent_status: AgentStatusBoard | None = None
    pending_community: PendingCommunity | None = None  # recorded in the instance folder once started
    _directory: tuple[int, Directory] | None = None

    def client_address(self) -> str:
        """The request's client address for the login limits (X-Forwarded-For only from a
        trusted proxy)."""
        return client_address(
            request.remote_addr, request.headers.getlist("X-Forwarded-For"), self.trusted_proxies
        )

    def record_community(self) -> None:
        """Record the community in the instance folder (``check_instance``), once the start
        succeeded: a start that fails (a damaged index, a port in use) records nothing."""
        record_instance(self.instance_dir, self.accounts, self.pending_community)
        self.pending_community = None

    def fault(self, exc: sqlite3.Error) -> Unavailable | None:
        """Which file a damaged-file error met by a page came from (the index, the ledger or the
        accounts), as its one-line fault; None for any other error."""
        return damaged_file(exc, (self.index, self.ledger, self.accounts))

    def directory(self) -> Directory:
        """Names of meters and members, made once per state height."""
        height = self.ledger.state_height()
        cached = self._directory
        if cached is None or cached[0] != height:
            ledger = self.ledger
            cached = (height, Directory(ledger.meters(), ledger.members(), ledger.validators()))
            self._directory = cached
        return cached[1]


def default_instance_dir(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve().parent / "dashboard"


log = logging.getLogger("peerwatt.dashboard")


class InstanceOfAnotherCommunity(StoreError):
    """The instance folder belongs to another community (another genesis) than the ledger: its
    accounts, sessions and verify runs are that community's (one line, says what to do)."""


def index_genesis(path: Path) -> str | None:
    """The genesis an index file was built from (read-only; None if there is none)."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None if row is None else str(row[0])


class InstanceNotRecorded(StoreError):
    """An instance folder with accounts or verify runs, from an older version that recorded no
    community, and nothing that shows it is this one's (its index is missing, damaged or empty):
    it is not adopted by whatever data folder it is started on (one line: how to confirm it)."""


@dataclass(frozen=True)
class PendingCommunity:
    """What ``check_instance`` found to record in an instance folder: the community, and whether
    the folder was in use before (made by an older version: said once when recorded)."""

    genesis: str
    community: str
    older: bool


def check_instance(folder: Path, accounts: Accounts, ledger: LedgerReader) -> PendingCommunity | None:
    """Check that the instance folder belongs to the ledger's community, changing nothing.
    Returns what to record in it once the start succeeded (``record_instance``), or None when it
    is recorded already. A folder with no community recorded (a new one, or one made by an older
    version) is taken when it holds no accounts or verify runs, or when its index was built from
    this genesis. InstanceOfAnotherCommunity when it belongs to another genesis (recorded, or the
    genesis its index was built from); InstanceNotRecorded when it holds accounts or verify runs
    and nothing shows whose they are (its index deleted or damaged): the operator confirms with
    ``peerwatt dashboard adopt``."""
    community = ledger.community
    recorded = accounts.meta("genesis")
    if recorded is None:
        built_from = index_genesis(folder / "index.sqlite")
        used = accounts.holds_anything()
        if not used or built_from == community.genesis_hash:
            older = used or (folder / "index.sqlite").exists()
            return PendingCommunity(community.genesis_hash, community.id, older)
        if built_from is None:
            raise InstanceNotRecorded(
                f"the instance folder {for_terminal(folder)} holds dashboard accounts of a community it does "
                "not record (made by an older version), and its index.sqlite, which would show it, is "
                "missing or damaged: if `peerwatt dashboard user list --data "
                f"{for_terminal(ledger.data_dir)} --instance {for_terminal(folder)}` lists the accounts of "
                f"community {for_terminal(community.id)}, record it with `peerwatt dashboard adopt --data "
                f"{for_terminal(ledger.data_dir)} --instance {for_terminal(folder)}`; else give this "
                "community its own instance folder (--instance DIR)"
            )
        recorded = built_from
    if recorded != community.genesis_hash:
        other = accounts.meta("community")
        named = f"{for_terminal(other)}, " if other else ""
        raise InstanceOfAnotherCommunity(
            f"the instance folder {folder} belongs to another community ({named}genesis {recorded[:16]}) "
            f"than the ledger in "
            f"{ledger.data_dir} ({for_terminal(community.id)}, genesis {community.genesis_hash[:16]}): "
            "its accounts are that community's; give this one its own instance folder "
            "(--instance DIR, or instance = in dashboard.toml), or start on that community's data folder"
        )
    return None


def record_instance(folder: Path, accounts: Accounts, pending: PendingCommunity | None) -> None:
    """Record the community ``check_instance`` found (once the start succeeded): a new folder
    silently; one made by an older version, which recorded nothing, with one log line."""
    if pending is None:
        return
    accounts.set_meta({"genesis": pending.genesis, "community": pending.community})
    if pending.older:
        log.warning(
            "the instance folder %s had no community recorded (made by an older version): "
            "it is now that of community %s (genesis %s)",
            folder,
            for_terminal(pending.community),
            pending.genesis[:16],
        )


def open_services(data_dir: str | Path, instance_dir: str | Path | None, config: dict[str, Any]) -> Services:
    """Open the ledger and the dashboard's databases (StoreError when there is no ledger, or
    InstanceOfAnotherCommunity when the instance folder is another community's)."""
    ledger = LedgerReader(data_dir)
    folder = private_folder(instance_dir if instance_dir is not None else default_instance_dir(data_dir))
    accounts = Accounts(
        folder / "dashboard.sqlite",
        rate_limit=RateLimit(
            per_user=config["LOGIN_RATE_PER_USER"],
            per_address=config["LOGIN_RATE_PER_ADDRESS"],
            window_s=config["LOGIN_RATE_WINDOW_S"],
            lock_s=config["LOGIN_LOCK_S"],
            max_lock_s=config["LOGIN_LOCK_MAX_S"],
        ),
        password_method=config["PASSWORD_METHOD"],
    )
    try:
        pending = check_instance(folder, accounts, ledger)
        index = IndexDB(folder / "index.sqlite")
    except BaseException:
        accounts.close()
        ledger.close()
        raise
    verifier = VerifyRunner(data_dir, accounts)
    services = Services(ledger, index, Indexer(ledger, index), accounts, verifier, folder)
    services.pending_community = pending
    return services
