"""The store's rows read with the type their column holds, and its files owner-only.

A dictionary row (store_dicts) of the wrong SQLite type: a read-only reader (verify, report, the
dashboard) fails at the first row compressed with it, named with its block; a node opening the
store to write refuses it at open, since it would compress new rows with it (found in a QA pass:
the sqlite3 shell's replace() turns a BLOB into TEXT, and readers ended in a TypeError).

A new store is made owner-only (docs/privacy.md): its folder 0700, ``ledger.sqlite`` and the
``-wal``/``-shm`` files SQLite makes beside it 0600, whatever the umask; an existing store's modes
are left as they are."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from chain import store as store_module
from chain.engine import Ledger
from chain.kvapp import KeyValueApp
from chain.store import Store, StoreError, db_path
from chain.verify import VerifyError, verify_store
from tests.support.localnet import make_community

T0 = 1_764_000_000
INTERVAL = T0 - T0 % 900


def _run(c, blocks: int, per_block: int = 8) -> None:
    for b in range(blocks):
        t = T0 + 1 + b
        c.run_block(c.signed_readings(per_block, INTERVAL, created=t), t)


@pytest.fixture
def compressed(tmp_path, monkeypatch):
    """Closed stores with dictionaries (trained after 60 rows instead of 1,000)."""
    monkeypatch.setattr(store_module, "DICT_FIRST_ROWS", 60)
    monkeypatch.setattr(store_module, "DICT_GROWTH", 2)
    monkeypatch.setattr(store_module, "DICT_SIZE", 1024)
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 22)
    for ledger in c.ledgers:
        ledger.close()
    return c.ledgers[1].store.path.parent


def _first_use(conn: sqlite3.Connection, number: int) -> int:
    """The lowest height of a row compressed with dictionary ``number``."""
    prefix = bytes((0, number))
    heights = [
        h
        for sql in (
            "SELECT height, data FROM results",
            "SELECT height, envelope FROM seals",
            "SELECT t.height, p.envelope FROM txs t JOIN payloads p ON p.hash = t.hash",
        )
        for h, data in conn.execute(sql)
        if bytes(data)[:2] == prefix
    ]
    return min(heights)


@pytest.mark.parametrize(
    ("column", "value", "stored_as"),
    [
        ("dict", "CAST(dict AS TEXT)", "TEXT"),
        ("dict", "42", "INTEGER"),
        ("trained_at", "'soon'", "TEXT"),
        ("tbl", "CAST(tbl AS BLOB)", "BLOB"),
    ],
)
def test_a_dictionary_of_the_wrong_type_fails_verify_at_its_first_row_and_a_writer_at_open(
    compressed, column, value, stored_as
):
    data = compressed
    conn = sqlite3.connect(db_path(data))
    (number,) = conn.execute("SELECT min(id) FROM store_dicts").fetchone()
    height = _first_use(conn, number)
    conn.execute(f"UPDATE store_dicts SET {column} = {value} WHERE id = ?", (number,))
    conn.commit()
    conn.close()
    reader = Store.open(data, readonly=True)  # (opens: a store need not use every dictionary)
    try:
        with pytest.raises(VerifyError) as err:
            verify_store(reader, KeyValueApp())
    finally:
        reader.close()
    assert err.value.height == height, str(err.value)
    assert f"dictionary {number} (store_dicts), which it is compressed with, is damaged" in err.value.problem
    assert f"stored as {stored_as}" in err.value.problem, err.value.problem
    with pytest.raises(StoreError, match=rf"dictionary {number} \(store_dicts\) is damaged.*{stored_as}"):
        Ledger.open(data, KeyValueApp())


def test_a_row_count_of_the_wrong_type_is_a_store_error_when_writing(compressed):
    conn = sqlite3.connect(db_path(compressed))
    conn.execute("UPDATE store_rows SET rows = 'many' WHERE tbl = 'payloads'")
    conn.commit()
    conn.close()
    ledger = Ledger.open(compressed, KeyValueApp())
    try:
        with pytest.raises(StoreError, match=r"row count of payloads \(store_rows\) is damaged"):
            ledger.store._rows_written("payloads")
    finally:
        ledger.store.close()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE local_kv SET value = CAST(value AS TEXT)", "local_kv"),
        ("UPDATE local_own_seals SET envelope = 1.5", "local_own_seals"),
    ],
)
def test_node_local_rows_of_the_wrong_type_are_store_errors(tmp_path, sql, message):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 1, per_block=2)
    store = c.ledgers[0].store
    store.set_local("k", b"v")
    store.put_own_seal(7, b"\x01" * 32, b"{}")
    store.conn.execute(sql)
    with pytest.raises(StoreError, match=message):
        store.get_local("k") if "local_kv" in sql else store.own_seal(7)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # what most machines have: files 0644, folders 0755
    yield
    os.umask(old)


def test_a_new_store_is_owner_only_with_its_wal_and_shm(tmp_path, open_umask):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path / "nodes", KeyValueApp)  # Ledger.create, as `node init` does
    _run(c, 2, per_block=2)
    data = c.ledgers[0].store.path.parent
    assert _mode(data) == 0o700
    files = {p.name: _mode(p) for p in data.iterdir()}
    assert {"ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"} <= set(files), files
    assert all(mode == 0o600 for mode in files.values()), files
    assert _mode(tmp_path / "nodes") == 0o755  # (a parent it made: not the store's)
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder (`node init --data` of one made beforehand)
    Store.create(empty).close()
    assert _mode(empty) == 0o700 and _mode(db_path(empty)) == 0o600


def test_an_existing_stores_modes_are_left_as_they_are(tmp_path, open_umask):
    """(As every store made before this version: docs/privacy.md says to chmod it.)"""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    for ledger in c.ledgers:
        ledger.close()
    data = c.ledgers[0].store.path.parent
    assert _mode(data) == 0o700 and _mode(db_path(data)) == 0o600
    for p in data.iterdir():
        p.chmod(0o644)
    data.chmod(0o755)
    ledger = Ledger.open(data, KeyValueApp())
    ledger.store.set_local("k", b"v")
    ledger.close()
    assert _mode(data) == 0o755
    assert {p.name: _mode(p) for p in data.iterdir()} == {p.name: 0o644 for p in data.iterdir()}


def test_a_failed_create_leaves_no_store_behind(tmp_path, monkeypatch, open_umask):
    def fail(*_args, **_kwargs):
        raise StoreError("cannot open: no")

    monkeypatch.setattr(Store, "_connect", classmethod(lambda cls, *a, **k: fail()))
    with pytest.raises(StoreError):
        Store.create(tmp_path / "n")
    assert list((tmp_path / "n").iterdir()) == [] and _mode(tmp_path / "n") == 0o700
