"""The services the views use (the ledger read-only, the index, accounts, the verify runner) and
how the app factory opens them.

A leaf the blueprints import (``dashboard.views.common``), as Flask's tutorial app does with its
``db.py``: the views never import the app factory, so there is no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import request

from chain.private_files import private_folder
from dashboard.accounts import Accounts, RateLimit
from dashboard.agent_status import AgentStatusBoard
from dashboard.directory import Directory
from dashboard.indexdb import IndexDB
from dashboard.indexer import Indexer
from dashboard.ledger import LedgerReader
from dashboard.proxies import Network, client_address
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


def open_services(data_dir: str | Path, instance_dir: str | Path | None, config: dict[str, Any]) -> Services:
    """Open the ledger and the dashboard's databases (StoreError when there is no ledger)."""
    ledger = LedgerReader(data_dir)
    folder = private_folder(instance_dir if instance_dir is not None else default_instance_dir(data_dir))
    index = IndexDB(folder / "index.sqlite")
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
    return Services(ledger, index, Indexer(ledger, index), accounts, VerifyRunner(data_dir, accounts), folder)
