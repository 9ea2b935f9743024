"""A genesis document changed in the store (the `genesis.doc` column: a community parameter, its
name) fails verify with a line that says the document does not match the genesis header, whose
tx_root commits to the document's hash. Found in a QA pass: it said only `FAILED at height 0:
header bytes differ from the expected header`."""

from __future__ import annotations

import sqlite3

import pytest

from chain.canonical import dumps_checked, loads_strict
from chain.kvapp import KeyValueApp
from chain.store import Store, db_path
from chain.verify import VerifyError, verify_store
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

T0 = 1_764_000_000


@pytest.fixture
def folder(tmp_path):
    c = make_community(time=T0)
    c.open_ledgers(tmp_path, KeyValueApp)
    body = {"interval": T0 - T0 % 900, "import_wh": 1, "export_wh": 0, "serial": "SN", "profile": "p"}
    c.run_block([m.sign(c.community, "reading", body, created=T0 + 10) for m in c.meters], T0 + 10)
    for ledger in c.ledgers:
        ledger.close()
    return tmp_path / "validator-1"


def _update(folder, sql: str, value: bytes) -> None:
    conn = sqlite3.connect(db_path(folder))
    conn.execute(sql, (value,))
    conn.commit()
    conn.close()


def _verify_fails(folder) -> str:
    store = Store.open(folder, readonly=True)
    try:
        with pytest.raises(VerifyError) as failed:
            verify_store(store, KeyValueApp())
    finally:
        store.close()
    assert failed.value.height == 0
    return failed.value.problem


def test_a_changed_genesis_document_is_named(folder):
    conn = sqlite3.connect(db_path(folder))
    doc = loads_strict(conn.execute("SELECT doc FROM genesis").fetchone()[0])
    conn.close()
    doc["community"]["name"] = doc["community"].get("name", "") + " (changed)"
    _update(folder, "UPDATE genesis SET doc = ?", dumps_checked(doc))
    problem = _verify_fails(folder)
    assert problem.startswith(
        "the genesis document does not match the genesis header: the header's tx_root"
    ), problem
    res = peerwatt("verify", "--data", str(folder), "--quiet")
    assert res.returncode == 1 and res.stdout.startswith(
        "FAILED at height 0: the genesis document does not match the genesis header"
    ), res.stdout + res.stderr


def test_a_changed_genesis_header_names_the_field(folder):
    conn = sqlite3.connect(db_path(folder))
    header = loads_strict(conn.execute("SELECT header FROM blocks WHERE height = 0").fetchone()[0])
    conn.close()
    header["time"] += 1
    _update(folder, "UPDATE blocks SET header = ? WHERE height = 0", dumps_checked(header))
    assert _verify_fails(folder) == "header bytes differ from the expected header (fields: time)"
