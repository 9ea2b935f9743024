"""An instance folder belongs to one community (QA): one made for another community (its accounts,
sessions and verify runs) was used at start without a word, and its admin saw the new ledger.
At start the dashboard now refuses, in one line naming what to do, an instance folder recorded for
another genesis; a folder with no genesis recorded yet (made by an older version) is adopted on
first start, said once, unless its index shows it served another ledger."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys

import pytest

from chain.store import StoreError
from dashboard.app import create_app
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD
from tests.support.market_ledger import build_market

CLI = [sys.executable, "-m", "peerwatt.cli", "dashboard"]


@pytest.fixture
def ledgers(tmp_path):
    """Two node data folders holding ledgers of two genesis documents."""
    folders = []
    for name, feed_in in (("a", 80_000), ("b", 81_000)):
        c = build_market(tmp_path / name, validators=1, app_params={"feed_in_price": feed_in})
        for ledger in c.ledgers:
            ledger.close()
        folders.append(tmp_path / name / "validator-0")
    return folders


def open_app(data, instance):
    return create_app(data, instance_dir=instance, config={"PASSWORD_METHOD": TEST_PASSWORD_METHOD})


def close(app) -> None:
    services = app.extensions["peerwatt"]
    services.accounts.close()
    services.index.close()
    services.ledger.close()


def forget_genesis(instance) -> None:
    """Make the folder look like one an older version made (no genesis recorded)."""
    conn = sqlite3.connect(instance / "dashboard.sqlite")
    try:
        conn.execute("DELETE FROM meta")
        conn.commit()
    except sqlite3.OperationalError:  # the old code had no meta table
        pass
    conn.close()


def start_with_an_admin(data, instance) -> None:
    app = open_app(data, instance)
    app.extensions["peerwatt"].indexer.sync()
    app.extensions["peerwatt"].accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    close(app)


def index_genesis(instance) -> str:
    conn = sqlite3.connect(instance / "index.sqlite")
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0]
    finally:
        conn.close()


def test_an_instance_folder_of_another_community_is_refused_at_start(ledgers, tmp_path):
    a, b = ledgers
    instance = tmp_path / "instance"
    start_with_an_admin(a, instance)
    built_from = index_genesis(instance)
    with pytest.raises(StoreError) as info:
        open_app(b, instance)  # the old code opened it: its admin saw the other ledger
    message = str(info.value)
    assert "\n" not in message and "another community" in message and "--instance" in message
    assert index_genesis(instance) == built_from  # the folder is left as it was
    # the command line: one line, exit 2
    result = subprocess.run(
        CLI + ["--data", str(b), "--instance", str(instance), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "another community" in lines[0], lines
    # and the right ledger is served from it as before
    close(open_app(a, instance))


def test_an_older_instance_folder_is_adopted_once(ledgers, tmp_path, caplog):
    a, b = ledgers
    instance = tmp_path / "instance"
    with caplog.at_level(logging.INFO, logger="peerwatt.dashboard"):
        start_with_an_admin(a, instance)  # a new folder: recorded without a word
    assert not [r for r in caplog.records if "instance folder" in r.getMessage()]
    forget_genesis(instance)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peerwatt.dashboard"):
        close(open_app(a, instance))
        close(open_app(a, instance))
    said = [r.getMessage() for r in caplog.records if "instance folder" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    with pytest.raises(StoreError, match="another community"):
        open_app(b, instance)  # adopted: it is a's now


def test_an_older_instance_folder_whose_index_served_another_ledger_is_refused(ledgers, tmp_path):
    a, b = ledgers
    instance = tmp_path / "instance"
    start_with_an_admin(a, instance)
    forget_genesis(instance)
    with pytest.raises(StoreError, match="another community"):
        open_app(b, instance)


def test_user_add_to_an_instance_folder_of_another_community_is_refused(ledgers, tmp_path):
    a, b = ledgers
    instance = tmp_path / "instance"
    start_with_an_admin(a, instance)
    result = subprocess.run(
        CLI + ["user", "add", "--data", str(b), "--instance", str(instance), "boss", "--admin"],
        input="a good password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another community" in lines[0], lines
