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
from dashboard.ledger import LedgerReader
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
    _directory: tuple[int, Directory] | None = None

    def client_address(self) -> str:
        """The request's client address for the login limits (X-Forwarded-For only from a
        trusted proxy)."""
        return client_address(
            request.remote_addr, request.headers.getlist("X-Forwarded-For"), self.trusted_proxies
        )

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


def _index_genesis(path: Path) -> str | None:
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


def bind_instance(folder: Path, accounts: Accounts, ledger: LedgerReader) -> None:
    """Check that the instance folder belongs to the ledger's community, and record it there
    if it is not recorded yet (a new folder silently; one made by an older version, which
    recorded nothing, with one log line). InstanceOfAnotherCommunity when it belongs to another
    genesis: recorded, or (an older folder) the genesis its index was built from."""
    community = ledger.community
    recorded = accounts.meta("genesis")
    if recorded is None:
        built_from = _index_genesis(folder / "index.sqlite")
        used = accounts.holds_anything()
        if built_from is not None and built_from != community.genesis_hash and used:
            recorded = built_from
        else:
            accounts.set_meta({"genesis": community.genesis_hash, "community": community.id})
            if used or built_from is not None:
                log.warning(
                    "the instance folder %s had no community recorded (made by an older version): "
                    "it is now that of community %s (genesis %s)",
                    folder,
                    for_terminal(community.id),
                    community.genesis_hash[:16],
                )
            return
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
        bind_instance(folder, accounts, ledger)
    except StoreError:
        accounts.close()
        ledger.close()
        raise
    index = IndexDB(folder / "index.sqlite")
    return Services(ledger, index, Indexer(ledger, index), accounts, VerifyRunner(data_dir, accounts), folder)
