"""A damaged zstd dictionary row (store_dicts) is a StoreError naming the dictionary and the row
being read, for every reader (verify, --independent, the node's /v1/blocks), never a bare
ZstdError (found in a QA pass: `update store_dicts set dict = substr(dict, 1, 100)` made
`peerwatt verify` end in "ZstdError: could not create decompression dict")."""

from __future__ import annotations

import sqlite3

import pytest

from chain import store as store_module
from chain.independent import verify_store_independent
from chain.kvapp import KeyValueApp
from chain.store import Store, StoreError, db_path
from chain.verify import VerifyError, verify_store
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

T0 = 1_764_000_000
INTERVAL = T0 - T0 % 900


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A closed store whose payloads, results and seals are compressed (dictionaries after 60
    rows instead of 1,000)."""
    monkeypatch.setattr(store_module, "DICT_FIRST_ROWS", 60)
    monkeypatch.setattr(store_module, "DICT_GROWTH", 2)
    monkeypatch.setattr(store_module, "DICT_SIZE", 1024)
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    for b in range(22):
        t = T0 + 1 + b
        envs = []
        for i in range(8):
            body = {
                "interval": INTERVAL,
                "import_wh": b * 1000 + i,
                "export_wh": i,
                "serial": "SN",
                "profile": "p",
            }
            envs.append(c.meters[i % len(c.meters)].sign(c.community, "reading", body, created=t))
        c.run_block(envs, t)
    for ledger in c.ledgers:
        ledger.close()
    return tmp_path / "validator-1"


DAMAGE = {
    "truncated": lambda d: d[:100],
    "byte 9 flipped": lambda d: d[:8] + bytes([d[8] ^ 0xFF]) + d[9:],
    "magic changed": lambda d: b"\x00" + d[1:],
    "empty": lambda d: b"",
}


def _damage(folder, how: str, table: str) -> int:
    conn = sqlite3.connect(db_path(folder))
    # the newest dictionary of the table: the top block's rows are compressed with it
    number, data = conn.execute(
        "SELECT id, dict FROM store_dicts WHERE tbl = ? ORDER BY id DESC", (table,)
    ).fetchone()
    conn.execute("UPDATE store_dicts SET dict = ? WHERE id = ?", (DAMAGE[how](data), number))
    conn.commit()
    conn.close()
    return number


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("table", ["payloads", "results", "seals"])
def test_a_damaged_dictionary_is_a_store_error_naming_it_and_the_row(folder, how, table):
    number = _damage(folder, how, table)
    store = Store.open(folder, readonly=True)
    try:
        named = f"dictionary {number} \\(store_dicts\\), which it is compressed with, is damaged"
        height = store.height()
        with pytest.raises(StoreError, match=f"(result|seal|payload) .*cannot be read: {named}"):
            if table == "payloads":
                (_idx, tx_hash, *_rest), *_ = store.tx_rows(height)
                store.payload(bytes(tx_hash))
            elif table == "results":
                store.result_rows(height)
            else:
                store.seal_rows(height)
        for verify in (verify_store, verify_store_independent):
            with pytest.raises(VerifyError, match=named):
                verify(store, KeyValueApp())
    finally:
        store.close()
    # a writer (the node) refuses to open it: it would compress new rows with it
    with pytest.raises(StoreError, match=f"dictionary {number} \\(store_dicts\\) is damaged"):
        Store.open(folder)


def test_peerwatt_verify_says_failed_not_a_traceback(folder):
    number = _damage(folder, "truncated", "payloads")
    for extra in ([], ["--independent"], ["--workers", "2"]):
        res = peerwatt("verify", "--data", str(folder), "--quiet", *extra)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
        assert res.stdout.startswith("FAILED at height ") and res.stdout.count("\n") == 1, res.stdout
        assert f"dictionary {number} (store_dicts)" in res.stdout and "restore the data folder" in res.stdout


def test_the_node_api_answers_a_damaged_row_with_one_line(folder):
    """/v1/blocks over a damaged dictionary: a 500 whose error names it, not a connection the
    server thread drops with a traceback (the peer catching up from it is told why)."""
    from peerwatt.node.http_api import NodeHttpApi

    number = _damage(folder, "truncated", "payloads")
    api = NodeHttpApi(folder, lambda: {}, "127.0.0.1", 0)
    try:
        status, body = api.handle("/v1/blocks?from=1&limit=50")
    finally:
        api.server.server_close()  # (never started: shutdown() would wait for serve_forever)
    assert status == 500
    assert f"dictionary {number} (store_dicts), which it is compressed with, is damaged" in body["error"]
