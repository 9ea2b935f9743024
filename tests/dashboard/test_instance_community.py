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


def recorded_genesis(instance) -> str | None:
    conn = sqlite3.connect(instance / "dashboard.sqlite")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), input=stdin, capture_output=True, text=True, timeout=60)


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("index", ["deleted", "damaged"])
def test_an_older_folder_with_accounts_and_no_index_is_adopted_by_nobody(ledgers, tmp_path, index):
    """QA: an older folder (no community recorded) whose index.sqlite was deleted, as the doc
    allows, or is damaged, was adopted with its accounts by any community it was started on (its
    admin logged in on the other community's dashboard); with a damaged index the genesis was
    recorded, then the start failed, and after deleting the index as told the folder's own
    community was refused. Now nothing shows whose accounts they are: refused in one line naming
    `dashboard adopt`, recording nothing; the operator confirms with that command."""
    a, b = ledgers
    instance = tmp_path / "instance"
    start_with_an_admin(a, instance)
    forget_genesis(instance)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (instance / name).unlink(missing_ok=True)
    if index == "damaged":
        (instance / "index.sqlite").write_bytes(b"garbage" * 100)
    for data in (b, a):
        with pytest.raises(StoreError, match="peerwatt dashboard adopt") as info:
            open_app(data, instance)
        assert "\n" not in str(info.value)
        assert recorded_genesis(instance) is None
    line = one_error_line(run_cli("--data", str(b), "--instance", str(instance), "--port", "0"))
    assert "dashboard user list" in line and "dashboard adopt" in line
    # `user add` neither: refused before the password is asked for
    line = one_error_line(
        run_cli("user", "add", "--data", str(b), "--instance", str(instance), "boss", "--admin", stdin="")
    )
    assert "dashboard adopt" in line
    assert recorded_genesis(instance) is None
    assert run_cli("user", "list", "--data", str(a), "--instance", str(instance)).stdout.startswith("admin\t")
    # the operator confirms: the folder is a's, and refused for b as another community's
    done = run_cli("adopt", "--data", str(a), "--instance", str(instance))
    assert done.returncode == 0 and "is now that of community" in done.stdout, done.stderr
    assert "already" in run_cli("adopt", "--data", str(a), "--instance", str(instance)).stdout
    assert "another community" in one_error_line(
        run_cli("adopt", "--data", str(b), "--instance", str(instance))
    )
    if index == "damaged":
        with pytest.raises(StoreError, match="damaged"):
            open_app(a, instance)
        (instance / "index.sqlite").unlink()
    close(open_app(a, instance))
    with pytest.raises(StoreError, match="another community"):
        open_app(b, instance)


def test_a_start_that_fails_records_no_community(ledgers, tmp_path):
    """The community is recorded only once the start succeeded: a new folder whose index is
    damaged is not made another community's by a start on the wrong data folder."""
    a, b = ledgers
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "index.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="damaged"):
        open_app(b, instance)
    assert recorded_genesis(instance) is None  # the old code recorded b's genesis here
    (instance / "index.sqlite").unlink()
    close(open_app(a, instance))
    assert recorded_genesis(instance) is not None


def test_user_add_that_fails_records_no_community(ledgers, tmp_path):
    a, b = ledgers
    instance = tmp_path / "instance"
    one_error_line(
        run_cli("user", "add", "--data", str(b), "--instance", str(instance), "x", "--admin", stdin="short\n")
    )
    assert not (instance / "dashboard.sqlite").exists() or recorded_genesis(instance) is None
    done = run_cli(
        "user",
        "add",
        "--data",
        str(a),
        "--instance",
        str(instance),
        "boss",
        "--admin",
        stdin="a good password\n",
    )
    assert done.returncode == 0, done.stderr
    close(open_app(a, instance))


def test_peerwatt_dashboard_records_the_community_once_it_listens(ledgers, tmp_path, monkeypatch):
    """`peerwatt dashboard` records the community only once the index is caught up and the port
    bound: a start that fails there (here the port, taken between the check and the bind)
    records nothing; one that gets there does."""
    import peerwatt.dashboard_server
    from peerwatt.commands.dashboard import serve
    from peerwatt.dashboard_config import DashboardSettings
    from peerwatt.errors import UserError

    a, _ = ledgers
    instance = tmp_path / "instance"
    settings = DashboardSettings(data=a, instance=instance, port=0)

    def taken(*args, **kwargs):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(peerwatt.dashboard_server, "serve", taken)
    with pytest.raises(UserError, match="Address already in use"):
        serve(settings)
    assert recorded_genesis(instance) is None

    class Started:
        effective_port = 1

        def run(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(peerwatt.dashboard_server, "serve", lambda *args, **kwargs: Started())
    monkeypatch.setattr("signal.signal", lambda *args: None)
    serve(settings)
    assert recorded_genesis(instance) == index_genesis(instance)
