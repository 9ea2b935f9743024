"""A store whose file itself is damaged is a failed verification that says so (found in a QA
pass): a truncated file exited 2 with `error: cannot open ...: database disk image is malformed`
and no hint, where docs/ledger.md promises exit 1 with `FAILED at height H: <what>`; a -wal file
of another store beside a store read as `FAILED at height 1: only 0 valid seals of one round` or
`unreadable row: database disk image is malformed`, where SQLite's own check names the
corruption. Verify now runs `PRAGMA quick_check` before it starts (and --independent, whose own
first reads come before that, when it fails)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from chain.independent import verify_store_independent
from chain.kvapp import KeyValueApp
from chain.store import Store, StoreCorrupt, db_path
from chain.verify import VerifyError, verify_store
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

T0 = 1_764_000_000


def _store(folder, community: str, blocks: int):
    c = make_community(community=community, time=T0, validators=1, members=2, meters_per_member=2)
    c.open_ledgers(folder, KeyValueApp)
    c.run_reading_blocks(blocks)
    c.ledgers[0].close()
    return folder / "validator-0"


def _failed(folder, *extra) -> str:
    res = peerwatt("verify", "--data", str(folder), "--quiet", *extra)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert res.stdout.startswith("FAILED at height ") and res.stdout.count("\n") == 1, res.stdout
    return res.stdout


@pytest.mark.parametrize("damage", ["truncated", "not a database"])
def test_a_damaged_file_is_a_failed_verification_with_the_fix(tmp_path, damage):
    folder = _store(tmp_path, "oak-street", 30)
    data = db_path(folder).read_bytes()
    db_path(folder).write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x5a" * len(data))
    with pytest.raises(StoreCorrupt, match="the file is damaged: restore the data folder from a peer"):
        Store.open(folder, readonly=True)
    for extra in ([], ["--independent"]):
        line = _failed(folder, *extra)
        assert "restore the data folder from a peer" in line, line


def test_a_wal_file_of_another_store_is_named_as_corruption_not_missing_seals(tmp_path):
    folder = _store(tmp_path / "a", "oak-street", 30)
    other = _store(tmp_path / "b", "elm-street", 10)
    # the other store's -wal, holding changes not checkpointed yet, copied beside this store
    conn = sqlite3.connect(db_path(other), isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(100):
        conn.execute("INSERT OR REPLACE INTO local_kv VALUES (?, ?)", (f"k{i}", bytes([i]) * 3000))
    conn.execute("UPDATE blocks SET time = time")
    wal = db_path(other).with_name("ledger.sqlite-wal")
    shutil.copy(wal, db_path(folder).with_name("ledger.sqlite-wal"))
    conn.close()

    store = Store.open(folder, readonly=True)
    try:
        named = "ledger.sqlite is corrupt \\(SQLite's quick_check: .*\\): restore the data folder from a peer"
        for verify in (verify_store, verify_store_independent):
            with pytest.raises(VerifyError, match=named):
                verify(store, KeyValueApp())
    finally:
        store.close()
    for extra in ([], ["--independent"]):
        line = _failed(folder, *extra)
        assert line.startswith("FAILED at height 0: ") and "is corrupt (SQLite's quick_check: " in line, line
