"""Schema 3: the ledger tables keyed by (height, idx), (height, validator) or hash are WITHOUT
ROWID, txs has no index by signer and results' index of kinds leaves out "tx". A store written by
an older peerwatt (schema 1 or 2, built here with that peerwatt's own DDL) is upgraded in place
when opened to write, in one transaction: every row is kept byte for byte, it still verifies
(verify and the independent verifier) and grows; a crash or an error midway leaves the old store
as it was, and the next open upgrades it."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chain import store as store_module
from chain.engine import Ledger
from chain.independent import verify_store_independent
from chain.kvapp import KeyValueApp
from chain.store import LEDGER_TABLES, Store, StoreError, db_path
from chain.verify import verify_store
from tests.chain.test_store_compression import _run
from tests.support.localnet import make_community
from tests.support.old_store_schemas import SCHEMA_2_DDL

SCHEMA_1_CHANGES = "DROP TABLE store_dicts; CREATE INDEX txs_hash ON txs(hash);"
# every table's rows in the order the old peerwatt wrote them (block by block)
ORDER = {
    "genesis": "id",
    "blocks": "height",
    "txs": "height, idx",
    "payloads": "(SELECT min(height * 100000 + idx) FROM txs t WHERE t.hash = payloads.hash)",
    "results": "height, idx",
    "seals": "height, validator",
    "local_snapshot": "id",
    "local_own_seals": "height",
    "local_alarms": "id",
    "local_kv": "key",
    "store_dicts": "id",
}


@pytest.fixture
def small_dicts(monkeypatch):
    """Train after 60 rows instead of 1,000, so the old stores hold compressed rows."""
    monkeypatch.setattr(store_module, "DICT_FIRST_ROWS", 60)
    monkeypatch.setattr(store_module, "DICT_GROWTH", 2)
    monkeypatch.setattr(store_module, "DICT_SIZE", 1024)


def rewrite_as(data_dir: Path, version: int) -> None:
    """Rewrite a closed store as the peerwatt of schema ``version`` (1 or 2) stored it: its DDL,
    and every row as it is (raw or compressed), inserted in ledger order."""
    path = db_path(data_dir)
    newer = path.with_name("newer.sqlite")
    path.rename(newer)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA_2_DDL)
    conn.execute("ATTACH DATABASE ? AS newer", (str(newer),))
    conn.execute("BEGIN")
    for table, order in ORDER.items():
        conn.execute(f"INSERT INTO main.{table} SELECT * FROM newer.{table} ORDER BY {order}")
    conn.execute("COMMIT")
    conn.execute("DETACH DATABASE newer")
    if version == 1:
        assert conn.execute("SELECT count(*) FROM store_dicts").fetchone()[0] == 0
        conn.executescript(SCHEMA_1_CHANGES)
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()
    newer.unlink()


def ledger_rows(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY {ORDER[t]}").fetchall()
            for t in ORDER
            if t != "store_dicts"
        }
    finally:
        conn.close()


def schema_of(path: Path) -> tuple[int, dict[str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return version, dict(conn.execute("SELECT name, coalesce(sql, '') FROM sqlite_master"))
    finally:
        conn.close()


@pytest.fixture
def old_community(tmp_path, small_dicts, request):
    """Three validators' kv ledgers of 12 blocks, rewritten as schema ``request.param`` stores."""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 12 if request.param == 2 else 2)  # schema 1 had no dictionaries: raw rows only
    for ledger in c.ledgers:
        ledger.close()
    for i in range(3):
        rewrite_as(tmp_path / f"validator-{i}", request.param)
    return c, tmp_path


@pytest.mark.parametrize("old_community", [1, 2], indirect=True)
def test_an_old_store_is_upgraded_in_place_keeps_every_row_verifies_and_grows(old_community):
    c, base = old_community
    path = db_path(base / "validator-1")
    version, objects = schema_of(path)
    assert version in (1, 2) and "sqlite_autoindex_txs_1" in objects and "txs_signer" in objects
    before = ledger_rows(path)
    old = Store.open(base / "validator-1", readonly=True)  # read-only: stays as it is, reads
    try:
        assert verify_store(old, KeyValueApp()).blocks == old.height()
        assert schema_of(path)[0] == version
    finally:
        old.close()
    store = Store.open(base / "validator-1")  # to write: upgraded
    store.close()
    version, objects = schema_of(path)
    assert version == 3
    for table in ("txs", "payloads", "results", "seals"):
        assert objects[table].endswith("WITHOUT ROWID"), objects[table]
        assert f"sqlite_autoindex_{table}_1" not in objects  # the key is stored once
    assert not {"txs_signer", "txs_hash", "txs_v3", "results_v3"} & set(objects)
    assert "WHERE kind != 'tx'" in objects["results_kind"]
    assert ledger_rows(path) == before  # every row, byte for byte (compressed ones too)
    store = Store.open(base / "validator-1", readonly=True)
    try:
        assert verify_store(store, KeyValueApp()).blocks == store.height()
        report, extra = verify_store_independent(store, KeyValueApp())
        assert report.blocks == store.height() and extra.signatures == extra.total
        for table in ("payloads", "results", "seals"):
            assert store._rows_written(table) == store.count(table)
    finally:
        store.close()
    c.ledgers = [Ledger.open(base / f"validator-{i}", KeyValueApp()) for i in range(3)]
    _run(c, 10, start=12)  # grows, and trains its next dictionaries on the upgraded tables
    store = c.ledgers[1].store
    assert store.conn.execute("SELECT count(*) FROM store_dicts WHERE tbl = 'payloads'").fetchone()[0] >= 1
    assert verify_store(store, KeyValueApp()).blocks == store.height()
    assert verify_store_independent(store, KeyValueApp())[0].blocks == store.height()
    # erasure deletes payloads by hash as before
    (victim,) = store.conn.execute("SELECT hash FROM txs WHERE height = 3 AND idx = 0").fetchone()
    assert store.erase_payloads([bytes(victim)]) == 1 and store.payload(bytes(victim)) is None
    for ledger in c.ledgers:
        ledger.close()


KILLER = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from chain.store import Store
    connect, steps = sqlite3.connect, int(sys.argv[2])  # steps 0: count them, do not kill
    calls = [0]

    def connect_and_die_midway(*args, **kwargs):
        conn = connect(*args, **kwargs)

        def progress():
            if conn.in_transaction:  # the upgrade's transaction is the first one
                calls[0] += 1
                if calls[0] == steps:
                    os.kill(os.getpid(), signal.SIGKILL)
            return 0

        conn.set_progress_handler(progress, 20)
        return conn

    sqlite3.connect = connect_and_die_midway
    Store.open(sys.argv[1]).close()
    print(calls[0])
    """
)


def _upgrade_killed_at(data: Path, steps: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(data), str(steps)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("old_community", [2], indirect=True)
def test_a_crash_during_the_upgrade_leaves_the_old_store_which_upgrades_next_time(old_community):
    _c, base = old_community
    shutil.copytree(base / "validator-2", base / "counted")
    total = int(_upgrade_killed_at(base / "counted", 0).stdout)  # progress calls in the upgrade
    assert total > 100
    data = base / "validator-2"
    path = db_path(data)
    before, (_, objects) = ledger_rows(path), schema_of(path)
    for steps in (1, total // 3, 2 * total // 3):  # while copying txs ... while copying results
        proc = _upgrade_killed_at(data, steps)
        assert proc.returncode == -signal.SIGKILL, (proc.stdout, proc.stderr)  # killed midway
        assert schema_of(path) == (2, objects) and ledger_rows(path) == before
    store = Store.open(data)  # the WAL's uncommitted pages are discarded; upgraded now
    store.close()
    assert schema_of(path)[0] == 3 and ledger_rows(path) == before
    store = Store.open(data, readonly=True)
    try:
        assert verify_store(store, KeyValueApp()).blocks == store.height()
    finally:
        store.close()


@pytest.mark.parametrize("old_community", [2], indirect=True)
def test_an_upgrade_that_fails_is_one_store_error_and_changes_nothing(old_community, monkeypatch):
    _c, base = old_community
    data = base / "validator-0"
    path = db_path(data)
    before, (_, objects) = ledger_rows(path), schema_of(path)
    statements = store_module._upgrade_statements()
    broken = statements[: len(statements) // 2] + ["INSERT INTO txs VALUES (1, 0, x'00', 's', 't', 0)"]
    monkeypatch.setattr(store_module, "_upgrade_statements", lambda: broken)  # a duplicate row
    with pytest.raises(StoreError, match=r"^cannot open .*ledger\.sqlite: UNIQUE constraint failed"):
        Store.open(data)
    assert schema_of(path) == (2, objects) and ledger_rows(path) == before
    monkeypatch.undo()
    Store.open(data).close()
    assert schema_of(path)[0] == 3 and ledger_rows(path) == before


def _plan(store: Store, sql: str, *args) -> str:
    return " / ".join(row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


def test_the_queries_on_the_ledger_tables_use_a_key_or_an_index(tmp_path):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 3)
    store = c.ledgers[0].store
    assert "USING PRIMARY KEY (height=?)" in _plan(
        store, "SELECT idx, hash FROM txs WHERE height = ? ORDER BY idx", 1
    )
    assert "USING PRIMARY KEY (hash=?)" in _plan(store, "SELECT envelope FROM payloads WHERE hash = ?", b"")
    assert "USING PRIMARY KEY (height=?)" in _plan(store, "SELECT data FROM results WHERE height = ?", 1)
    assert "USING PRIMARY KEY (height=?)" in _plan(store, "SELECT envelope FROM seals WHERE height = ?", 1)
    # results by kind: the partial index for kinds other than "tx", the key's order with "tx"
    other = (
        "SELECT height, idx, data FROM results WHERE kind IN (?) AND kind != 'tx' AND height BETWEEN ? AND ?"
    )
    assert "USING INDEX results_kind" in _plan(store, other, "kv", 0, 9)
    with_tx = (
        "SELECT height, idx, data FROM results WHERE kind IN (?, ?) AND height BETWEEN ? AND ?"
        " ORDER BY height, idx"
    )
    assert "USING PRIMARY KEY (height>? AND height<?)" in _plan(store, with_tx, "kv", "tx", 0, 9)
    assert [k for k in LEDGER_TABLES if k not in ORDER] == []
    kv = [(h, i) for h, i, _ in store.results_of_kinds(["kv"])]
    both = [(h, i) for h, i, _ in store.results_of_kinds(["kv", "tx"])]
    assert kv and len(both) == 2 * len(kv) and both == sorted(both)
    assert [(h, i) for h, i, _ in store.results_of_kinds(["kv"], low=2, high=2)] == [
        (h, i) for h, i in kv if h == 2
    ]
    # erasure's look-up of a meter's transactions scans txs (no index by signer): still exact
    meter = c.meters[0].id
    hashes = [bytes(h) for (h,) in store.conn.execute("SELECT hash FROM txs WHERE signer = ?", (meter,))]
    assert hashes and all(store.payload(h) is not None for h in hashes)
    for ledger in c.ledgers:
        ledger.close()
