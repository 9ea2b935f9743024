"""The store compresses payloads, results and seals with dictionaries trained on its own rows:
readers get the canonical bytes back (verify and the independent verifier agree), a store written
before compression (schema 1) still opens, and a damaged compressed row is a StoreError naming
the row, not a crash."""

from __future__ import annotations

import json
import sqlite3

import pytest

from chain import store as store_module
from chain.independent import verify_store_independent
from chain.kvapp import KeyValueApp
from chain.store import Store, StoreError, db_path
from chain.verify import VerifyError, verify_store
from tests.support.localnet import make_community

T0 = 1_764_000_000
INTERVAL = T0 - T0 % 900
BLOCKS = 22
PER_BLOCK = 8


@pytest.fixture
def small_dicts(monkeypatch):
    """Train after 60 rows instead of 1,000, so a few blocks exercise every path."""
    monkeypatch.setattr(store_module, "DICT_FIRST_ROWS", 60)
    monkeypatch.setattr(store_module, "DICT_GROWTH", 2)
    monkeypatch.setattr(store_module, "DICT_SIZE", 1024)


def _run(c, blocks: int, start: int = 0) -> list:
    sent = []
    for b in range(start, start + blocks):
        t = T0 + 1 + b
        envs = [
            c.meters[i % len(c.meters)].sign(
                c.community,
                "reading",
                {
                    "interval": INTERVAL,
                    "import_wh": b * 1000 + i,
                    "export_wh": i,
                    "serial": "SN",
                    "profile": "p",
                },
                created=t,
            )
            for i in range(PER_BLOCK)
        ]
        c.run_block(envs, t)
        sent += envs
    return sent


PAYLOADS_IN_LEDGER_ORDER = (
    "SELECT p.envelope FROM txs t JOIN payloads p ON p.hash = t.hash ORDER BY t.height, t.idx"
)


def _raw(store: Store, sql: str, *args) -> list[bytes]:
    return [bytes(r[0]) for r in store.conn.execute(sql, args)]


def test_rows_round_trip_through_compression_and_verify_unchanged(tmp_path, small_dicts):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    sent = _run(c, BLOCKS)
    store = c.ledgers[1].store
    tables = {t for (t,) in store.conn.execute("SELECT tbl FROM store_dicts")}
    assert tables == {"payloads", "results", "seals"}
    stored = _raw(store, PAYLOADS_IN_LEDGER_ORDER)
    assert stored[0][:1] == b"{" and stored[-1][0] == 0  # raw before the first dictionary, then not
    assert sum(map(len, stored)) < 0.8 * sum(len(e.to_bytes()) for e in sent)
    for env in sent:
        assert store.payload(env.tx_hash) == env.to_bytes()
    top = store.height()
    assert [r["kind"] for r in store.results(top)] == ["tx", "kv"] * PER_BLOCK
    # a "tx" result is stored as a reference to its transaction (0x01 and its index), the others
    # compressed; the first blocks' results stay plain JSON
    stored = _raw(store, "SELECT data FROM results WHERE height = ? ORDER BY idx", top)
    assert stored[0::2] == [b"\x01%d" % i for i in range(PER_BLOCK)] and {r[0] for r in stored[1::2]} == {0}
    assert _raw(store, "SELECT data FROM results WHERE height = 1 AND idx = 0")[0][:1] == b"{"
    assert store.results(top)[2] == {
        "index": 1,
        "kind": "tx",
        "status": "ok",
        "tx": store.tx_rows(top)[1][1].hex(),
    }
    assert [data for _, _, data in store.results_of_kinds(["tx"], low=top, high=top)] == [
        r[2] for r in store.result_rows(top) if r[1] == "tx"
    ]
    assert all(env.startswith(b"{") for _, env in store.seal_rows(top))
    assert verify_store(store, KeyValueApp()).blocks == top
    report, extra = verify_store_independent(store, KeyValueApp())
    assert report.blocks == top and extra.signatures == extra.total
    # a reader opened before a dictionary was trained finds it when it meets a row that needs it
    reader = Store.open(tmp_path / "validator-2", readonly=True)
    try:
        _run(c, 4, start=BLOCKS)
        assert verify_store(reader, KeyValueApp()).blocks == store.height()
    finally:
        reader.close()


def _make_schema_1(path) -> None:
    """Turn a fresh store into what peerwatt wrote before compression (raw rows, schema 1: no
    store_dicts, an index of txs by hash; test_store_schema.py has its rowid tables)."""
    conn = sqlite3.connect(db_path(path))
    assert conn.execute("SELECT count(*) FROM store_dicts").fetchone()[0] == 0
    conn.executescript(
        "DROP TABLE store_dicts; DROP TABLE store_rows; CREATE INDEX txs_hash ON txs(hash);"
        " PRAGMA user_version=1;"
    )
    conn.close()


def test_a_store_written_before_compression_opens_reads_and_grows(tmp_path, small_dicts):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 2)  # 16 payloads: below the first dictionary
    for ledger in c.ledgers:
        ledger.close()
    for i in range(3):
        _make_schema_1(tmp_path / f"validator-{i}")
    old = Store.open(tmp_path / "validator-1", readonly=True)  # read-only: stays schema 1
    try:
        assert old.conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert verify_store(old, KeyValueApp()).blocks == 2
    finally:
        old.close()
    c.ledgers = [
        type(c.ledgers[0]).open(tmp_path / f"validator-{i}", KeyValueApp()) for i in range(3)
    ]  # opening to write upgrades it to schema 3
    _run(c, 8, start=2)
    store = c.ledgers[1].store
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 3
    indexes = {n for (n,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not {"txs_hash", "txs_signer"} & indexes  # schema 3 indexes txs by neither
    assert _raw(store, PAYLOADS_IN_LEDGER_ORDER)[-1][0] == 0
    assert verify_store(store, KeyValueApp()).blocks == 10


def test_a_store_of_a_newer_schema_is_refused_in_one_line(tmp_path):
    Store.create(tmp_path).close()
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("PRAGMA user_version=4")
    conn.close()
    with pytest.raises(StoreError, match="schema version 4, this peerwatt reads 1 to 3: open it with the"):
        Store.open(tmp_path)


def test_an_empty_or_foreign_database_is_not_called_an_old_schema(tmp_path):
    """Found in a QA pass: an empty ledger.sqlite read "schema version 0 ... open it with the
    peerwatt that wrote it"."""
    db_path(tmp_path).write_bytes(b"")
    with pytest.raises(StoreError, match="is not a peerwatt ledger store .*`peerwatt node init"):
        Store.open(tmp_path, readonly=True)
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="is not a peerwatt ledger store"):
        Store.open(tmp_path)


@pytest.mark.parametrize("readonly", [True, False])
def test_a_folder_where_the_store_should_be_is_named(tmp_path, readonly):
    """Found in a QA pass: `verify --data D` with D/ledger.sqlite a folder said "disk I/O error
    (... check the disk)"."""
    db_path(tmp_path).mkdir()
    with pytest.raises(StoreError, match="ledger.sqlite is not a file \\(a folder\\?\\)"):
        Store.open(tmp_path, readonly=readonly)


@pytest.fixture
def compressed(tmp_path, small_dicts):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    sent = _run(c, BLOCKS)
    return c, sent


def test_a_damaged_compressed_row_is_a_store_error_naming_it(compressed):
    c, sent = compressed
    store = c.ledgers[1].store
    top = store.height()
    env = sent[-1]
    (payload,) = _raw(store, "SELECT envelope FROM payloads WHERE hash = ?", env.tx_hash)
    damaged = payload[:2] + bytes(b ^ 0x5A for b in payload[2:])
    store.conn.execute("UPDATE payloads SET envelope = ? WHERE hash = ?", (damaged, env.tx_hash))
    with pytest.raises(StoreError, match=f"the payload of {env.tx_hash.hex()} is damaged"):
        store.payload(env.tx_hash)
    (data,) = _raw(store, "SELECT data FROM results WHERE height = ? AND idx = 0", top)
    store.conn.execute(
        "UPDATE results SET data = ? WHERE height = ? AND idx = 0", (data[:2] + b"\xff" * 8, top)
    )
    with pytest.raises(StoreError, match=f"result 0 of block {top} is damaged"):
        store.result_rows(top)
    with pytest.raises(VerifyError, match=f"height {top}: .* is damaged"):  # a failed verification
        verify_store(store, KeyValueApp())


def test_a_row_whose_dictionary_is_gone_is_a_store_error(compressed):
    c, _ = compressed
    for ledger in c.ledgers:
        ledger.close()
    conn = sqlite3.connect(db_path(c.ledgers[1].store.path.parent))
    conn.execute("DELETE FROM store_dicts WHERE tbl = 'seals'")
    conn.commit()
    conn.close()
    store = Store.open(c.ledgers[1].store.path.parent, readonly=True)
    try:
        with pytest.raises(StoreError, match="seal of .* is damaged .*dictionary this store lacks"):
            store.seal_rows(store.height())
    finally:
        store.close()


def test_a_failed_write_forgets_the_dictionary_it_trained(tmp_path, small_dicts):
    """The block that trains a table's first dictionary hits a full disk: nothing is stored, and
    the retried write trains again and verifies."""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, 5)  # 40 payloads: no dictionary yet
    store = c.ledgers[1].store
    body = {"interval": INTERVAL, "import_wh": 7, "export_wh": 0, "serial": "SN", "profile": "p"}
    block = c.ledgers[0].propose([c.meters[0].sign(c.community, "reading", body, created=T0 + 9)], T0 + 9)
    seals = [c.ledgers[i].seal(block, c.validators[i].key, now=T0 + 9) for i in range(3)]
    dicts, newest = dict(store._dicts), dict(store._newest)
    assert "payloads" not in newest  # (results, two rows per transaction, has one already)
    store.conn.execute("PRAGMA query_only = ON")
    monkey_rows = store_module.DICT_FIRST_ROWS
    store_module.DICT_FIRST_ROWS = 40  # due now (monkeypatch restores it)
    try:
        with pytest.raises(StoreError):
            store.append_block(block, seals, None)
        assert store._dicts == dicts and store._newest == newest
        store.conn.execute("PRAGMA query_only = OFF")
        c.ledgers[1].commit(block, seals)
    finally:
        store_module.DICT_FIRST_ROWS = monkey_rows
    assert store.conn.execute("SELECT count(*) FROM store_dicts WHERE tbl = 'payloads'").fetchone()[0] == 1
    assert verify_store(store, KeyValueApp()).blocks == 6


def test_every_changed_bit_of_a_tx_result_by_reference_is_found(tmp_path, small_dicts):
    """A "tx" result stored by reference (0x01 and its transaction's index) reads back with the
    hash from txs; a flipped bit of it, or of that hash, fails verify at its block or is a
    StoreError naming the row, like a damaged compressed row."""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    _run(c, BLOCKS)
    store = c.ledgers[1].store
    top = store.height()
    where = "height = ? AND idx = ?"
    for idx, index in ((2, 1), (14, 7)):
        (data,) = _raw(store, f"SELECT data FROM results WHERE {where}", top, idx)
        assert data == b"\x01%d" % index
        assert store.decode_result(top, idx, data) == store.result_rows(top)[idx][2]
        for position in range(len(data)):
            for bit in range(8):
                changed = bytearray(data)
                changed[position] ^= 1 << bit
                store.conn.execute(f"UPDATE results SET data = ? WHERE {where}", (bytes(changed), top, idx))
                with pytest.raises((VerifyError, StoreError)) as err:
                    verify_store(store, KeyValueApp())
                if err.type is VerifyError:
                    assert err.value.height == top, str(err.value)
                else:
                    assert f"result {idx} of block {top} is damaged" in str(err.value)
        store.conn.execute(f"UPDATE results SET data = ? WHERE {where}", (data, top, idx))
    (tx_hash,) = _raw(store, "SELECT hash FROM txs WHERE height = ? AND idx = 7", top)
    store.conn.execute(
        "UPDATE txs SET hash = ? WHERE height = ? AND idx = 7", (tx_hash[:-1] + bytes([tx_hash[-1] ^ 1]), top)
    )
    with pytest.raises(VerifyError) as err:
        verify_store(store, KeyValueApp())
    assert err.value.height == top
    store.conn.execute("DELETE FROM txs WHERE height = ? AND idx = 7", (top,))
    with pytest.raises(StoreError, match=f"result 14 of block {top} is damaged .*no transaction 7"):
        store.result_rows(top)
    with pytest.raises(StoreError, match="stored by reference"):
        store.decode_row(b"\x017", "a row")


def test_refused_tx_results_are_the_refused_ones_whatever_their_storage(tmp_path, small_dicts):
    """Store.refused_tx_results skips an accepted transaction's result stored by reference without
    reading it back (half of all rows; eed68ed's statements read every one to find the refused):
    it yields exactly the "tx" results whose status is not ok, raw rows and compressed ones."""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    refused_sent = []
    for b in range(BLOCKS):
        _run(c, 1, start=b)
        t = T0 + 1 + b
        stale = c.meters[b % len(c.meters)].sign(
            c.community, "reading",
            {"interval": INTERVAL - 900, "import_wh": 1, "export_wh": 0, "serial": "SN", "profile": "p"},
            created=t,
        )  # fmt: skip
        c.run_block([stale], t)
        refused_sent.append(stale)
    store = c.ledgers[1].store
    firsts = {r[0] for (r,) in store.conn.execute("SELECT data FROM results WHERE kind = 'tx'")}
    assert firsts >= {0, 1, ord("{")}  # compressed, by reference, raw
    expected = [
        (h, i, data)
        for h, i, data in store.results_of_kinds(["tx"])
        if json.loads(data)["status"] != "ok"
    ]
    assert list(store.refused_tx_results()) == expected
    assert len(expected) == len(refused_sent)
    top = store.height()
    assert list(store.refused_tx_results(low=top, high=top)) == [e for e in expected if e[0] == top]
