"""Storage faults under the dashboard are one line, never a traceback or a lasting 500 (found in a
QA pass): a full disk under the index (SQLite's ``max_page_count`` stands in for it), a damaged
page in the ledger, the index or the accounts (a table's root page overwritten, as the QA's script
did), and the data folder moved away while the dashboard runs. At start the first sync raises the
one-line StoreError (``peerwatt dashboard`` exits with it); while running a page answers 503 with
a line naming no path, the indexer reports the fault without raising, and the log has one line per
episode (and one when a full disk has room again)."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chain.store import StoreError
from dashboard.app import create_app
from peerwatt.ports import free_port
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, login

CONFIG = {"PASSWORD_METHOD": TEST_PASSWORD_METHOD, "INDEX_SYNC": "off"}  # TESTING off: errors are answers


def damage_table(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` in the database at ``path`` with junk."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * size)
        fh.write(b"\xa5" * size)


def copy_ledger(built, tmp_path: Path) -> Path:
    data = tmp_path / "node"
    shutil.copytree(built.data_dir, data)
    conn = sqlite3.connect(data / "ledger.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return data


def errors(caplog, word: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if word in r.getMessage()]


def no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert all("\n" not in r.getMessage() for r in caplog.records)


def answer(client, path: str, **kwargs) -> tuple[int, str]:
    response = client.open(path, **kwargs)
    if path.startswith("/api/"):
        return response.status_code, (response.get_json() or {}).get("error", "")
    return response.status_code, response.get_data(as_text=True)


def test_a_full_disk_under_the_index_is_one_line_at_start_and_once_per_episode_while_running(
    built, tmp_path, caplog
):
    """Before: the first sync died with "cannot rollback - no transaction is active" (the
    ROLLBACK after SQLite had ended the transaction itself hid "database or disk is full"), and
    the background indexer logged that double traceback every 2 s."""
    app = create_app(built.data_dir, instance_dir=tmp_path / "instance", config=CONFIG)
    services = app.extensions["peerwatt"]
    writer = services.index.writer
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreError) as raised:
        services.indexer.sync()
    message = str(raised.value)
    assert "the disk is full" in message and str(tmp_path / "instance" / "index.sqlite") in message
    assert "rollback" not in message and "\n" not in message

    writer.execute("PRAGMA max_page_count=1073741823")
    first = services.indexer.sync(max_blocks=50)
    assert first.blocks == 50 and first.stopped is None
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count={pages}")
    caplog.set_level(logging.INFO)
    for _ in range(3):  # the CLI's indexing thread, every 2 s: no exception, one log line
        report = services.indexer.sync()
        assert report.blocks == 0 and "disk is full" in report.stopped
        assert str(tmp_path) not in report.stopped
    assert len(errors(caplog, "disk is full")) == 1
    client = app.test_client()
    assert client.get("/").status_code == 200  # the figures indexed so far
    writer.execute("PRAGMA max_page_count=1073741823")
    report = services.indexer.sync()
    assert report.stopped is None and services.indexer.indexed_height() == services.ledger.head().height
    assert len(errors(caplog, "written again")) == 1
    assert services.indexer.sync().stopped is None and len(errors(caplog, "written again")) == 1
    no_traceback(caplog)


def test_an_index_made_on_a_full_disk_is_not_called_damaged(tmp_path):
    """Before: "index.sqlite is damaged (database or disk is full) ... delete it", which does not
    help (a full disk made the new file's schema fail)."""
    from dashboard.indexdb import connect

    path = tmp_path / "index.sqlite"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    original = sqlite3.connect

    def limited(*args, **kwargs):
        conn = original(*args, **kwargs)
        conn.execute("PRAGMA max_page_count=1")
        return conn

    sqlite3.connect = limited
    try:
        with pytest.raises(StoreError) as raised:
            connect(path)
    finally:
        sqlite3.connect = original
    assert "the disk is full" in str(raised.value) and "damaged" not in str(raised.value)


def test_a_damaged_index_page_is_a_503_that_says_delete_it(built, tmp_path, caplog):
    """Before: the start looked normal, then / and /api/v1/overview were 500 on every request."""
    instance = tmp_path / "instance"
    first = create_app(built.data_dir, instance_dir=instance, config=CONFIG)
    first.extensions["peerwatt"].indexer.sync()
    first.extensions["peerwatt"].index.close()
    for table in ("trades", "trade_sides", "clearings"):
        damage_table(instance / "index.sqlite", table)
    app = create_app(built.data_dir, instance_dir=instance, config=CONFIG)
    app.extensions["peerwatt"].indexer.sync()  # caught up already: reads only meta
    caplog.set_level(logging.INFO)
    client = app.test_client()
    for path in ("/", "/api/v1/overview", "/", "/api/v1/overview"):
        status, text = answer(client, path)
        assert status == 503, (path, status)
        assert "index is damaged" in text and "deletes index.sqlite" in text, text
        assert str(tmp_path) not in text
    said = errors(caplog, "is damaged")
    assert len(said) == 1 and str(instance / "index.sqlite") in said[0].getMessage()
    assert "delete it and start the dashboard again" in said[0].getMessage()
    no_traceback(caplog)


def test_a_damaged_ledger_page_is_one_line_at_start_and_a_503_while_running(built, tmp_path, caplog):
    """Before: the start died with a traceback from chain/store.py refused_tx_results
    (sqlite3.DatabaseError: database disk image is malformed), and with an index already built
    /explorer and /api/v1/chain answered 500."""
    data = copy_ledger(built, tmp_path)
    running = create_app(data, instance_dir=tmp_path / "running", config=CONFIG)
    running.extensions["peerwatt"].indexer.sync()
    for table in ("results", "seals"):
        damage_table(data / "ledger.sqlite", table)

    fresh = create_app(data, instance_dir=tmp_path / "fresh", config=CONFIG)
    with pytest.raises(StoreError) as raised:
        fresh.extensions["peerwatt"].indexer.sync()
    message = str(raised.value)
    assert str(data / "ledger.sqlite") in message and "restore the data folder from a peer" in message
    assert "\n" not in message

    services = running.extensions["peerwatt"]
    services.ledger.close()  # this thread's connection read the file before it was damaged
    caplog.set_level(logging.INFO)
    client = running.test_client()
    for path in ("/explorer", "/api/v1/blocks", "/explorer", "/api/v1/blocks/3"):
        status, text = answer(client, path)
        assert status == 503, (path, status)
        assert "ledger store is damaged" in text and "from a peer" in text, text
        assert str(tmp_path) not in text
    said = errors(caplog, "is damaged")
    assert len(said) == 1 and "restore the data folder from a peer" in said[0].getMessage()
    no_traceback(caplog)


def test_a_damaged_accounts_page_is_a_503_at_login_that_says_what_the_file_holds(built, tmp_path, caplog):
    """Before: the login POST answered 500 with a traceback."""
    instance = tmp_path / "instance"
    first = create_app(built.data_dir, instance_dir=instance, config=CONFIG)
    services = first.extensions["peerwatt"]
    services.accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    services.accounts.close()
    services.index.close()
    damage_table(instance / "dashboard.sqlite", "login_locks")
    app = create_app(built.data_dir, instance_dir=instance, config=CONFIG)
    caplog.set_level(logging.INFO)
    client = app.test_client()
    for _ in range(2):
        response = login(client, "admin")
        assert response.status_code == 503, response.status_code
        assert "accounts database is damaged" in response.get_data(as_text=True)
    said = errors(caplog, "is damaged")
    assert len(said) == 1, [r.getMessage() for r in said]
    line = said[0].getMessage()
    assert str(instance / "dashboard.sqlite") in line and "accounts" in line and "loses them" in line
    no_traceback(caplog)


def test_a_data_folder_moved_away_is_a_503_that_recovers_by_itself(built, tmp_path, caplog):
    """Before: every request answered 500 with a traceback (chain.store.StoreError: no ledger
    store in ...), until the folder was moved back."""
    data = copy_ledger(built, tmp_path)
    app = create_app(data, instance_dir=tmp_path / "instance", config=CONFIG)
    services = app.extensions["peerwatt"]
    services.indexer.sync()
    services.accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    admin = app.test_client()
    assert login(admin, "admin").status_code == 302

    def in_new_thread(path: str) -> tuple[int, str]:
        """A request served by a thread that has not opened the store yet (as waitress's do)."""
        got: list[tuple[int, str]] = []
        thread = threading.Thread(target=lambda: got.append(answer(admin, path)))
        thread.start()
        thread.join(60)
        return got[0]

    data.rename(tmp_path / "gone")
    caplog.set_level(logging.INFO)
    for path in ("/", "/api/v1/overview", "/explorer", "/api/v1/chain"):
        status, text = in_new_thread(path)
        assert status == 503, (path, status)
        assert "ledger cannot be read now" in text and str(tmp_path) not in text, text
    report = services.indexer.sync()  # this thread keeps reading the open file
    assert report.stopped is None
    said = errors(caplog, "no ledger store")
    assert len(said) == 1 and "503 until it is back" in said[0].getMessage()

    (tmp_path / "gone").rename(data)
    for path in ("/", "/api/v1/overview", "/explorer", "/api/v1/chain"):
        assert in_new_thread(path)[0] == 200, path
    assert len(errors(caplog, "can be read again")) == 1
    no_traceback(caplog)


def test_a_damaged_index_met_at_start_names_the_index_not_the_ledger(built, tmp_path):
    """`peerwatt dashboard` whose first indexing meets a damaged index page: one line saying to
    delete index.sqlite, without the hint to verify the ledger store (before: every fault of the
    first indexing got "`peerwatt verify --data ...` checks the whole store")."""
    instance = tmp_path / "instance"
    first = create_app(built.data_dir, instance_dir=instance, config=CONFIG)
    first.extensions["peerwatt"].indexer.sync()
    first.extensions["peerwatt"].index.close()
    conn = sqlite3.connect(instance / "index.sqlite")
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'height'")  # index it all again
    conn.commit()
    conn.close()
    damage_table(instance / "index.sqlite", "trades")
    port = free_port()
    cli = [sys.executable, "-m", "peerwatt.cli", "dashboard", "--data", str(built.data_dir)]
    cli += ["--instance", str(instance), "--port", str(port)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "index.sqlite" in done.stderr and "delete it" in done.stderr
    assert "peerwatt verify" not in done.stderr


def test_a_verify_run_whose_result_cannot_be_written_shows_it_and_says_so(fresh_app, caplog):
    """Found in a review: the verify thread's write of its result to dashboard.sqlite was not
    guarded, so a full disk there ended the thread with a traceback and the run stayed "running"
    until the next start. Now one log line, and the result is shown from memory."""
    services = fresh_app.extensions["peerwatt"]
    caplog.set_level(logging.INFO)
    assert services.verifier.start("admin")
    with services.accounts.lock:  # the run takes well over this to verify the ledger
        services.accounts.conn.execute("PRAGMA query_only = 1")  # stands in for a full disk
    services.verifier.wait(60)
    assert not services.verifier.running
    latest = services.verifier.latest()
    assert latest["status"] == "ok" and latest["summary"].startswith("ok: ") and latest["finished"]
    (line,) = errors(caplog, "could not be written to the accounts file")
    assert "readonly" in line.getMessage()
    no_traceback(caplog)
