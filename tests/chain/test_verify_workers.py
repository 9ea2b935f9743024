"""`verify` on several cores (chain/verify_workers.py: helper processes and the walk itself check
envelopes ahead, the walk executes in order) gives exactly the verdict of the walk on one core:
on pristine stores, and on stores with a flipped byte in any ledger column, a deleted payload, a
forged signature, or a helper process that dies."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

import chain.verify as verify_module
from chain.kvapp import KeyValueApp
from chain.store import DB_NAME, LEDGER_TABLES, Store
from chain.verify import VerifyError, verify_store
from chain.verify_workers import BAD, PARSED, VERIFIED, CheckPool, check_items
from market.app import MarketApp
from tests.chain.test_engine import T0, reading
from tests.support.localnet import make_community
from tests.support.market_ledger import build_market


@pytest.fixture(autouse=True)
def _workers_even_for_small_stores(monkeypatch):
    monkeypatch.setattr(verify_module, "MIN_TXS_FOR_WORKERS", 0)
    monkeypatch.setattr(verify_module, "BATCH", 16)  # several batches per block, as on big stores


@pytest.fixture(scope="module")
def kv_store(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("kv")
    c = make_community(validators=4, members=2, meters_per_member=4, time=T0)
    c.open_ledgers(base, KeyValueApp)
    interval = T0 - T0 % 900
    t = T0
    for block in range(25):
        t += 1
        c.run_block(
            [reading(m, c.community, interval, block * 10 + i, created=t) for i, m in enumerate(c.meters)], t
        )
    for ledger in c.ledgers:
        ledger.close()
    return _one_file(base / "validator-1")


@pytest.fixture(scope="module")
def market_store(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("market")
    c = build_market(base / "net", validators=3)
    for ledger in c.ledgers:
        ledger.close()
    return _one_file(base / "net" / "validator-0")


def _one_file(data_dir: Path) -> Path:
    """The store as one self-contained file (WAL checkpointed), so a copy is a plain file copy."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return data_dir


def _verdict(data_dir: Path, app, workers: int):
    store = Store.open(data_dir, readonly=True)
    try:
        report = verify_store(store, app, workers=workers)
        return ("ok", report.blocks, report.txs, report.seals, report.erased_txs), report
    except VerifyError as exc:
        return ("failed", exc.height, exc.problem), None
    except Exception as exc:  # noqa: BLE001 - a crash must be the same crash on every core count
        return ("crashed", type(exc).__name__, str(exc)), None
    finally:
        store.close()


def _flip(path: Path, rng: random.Random) -> str | None:
    """Flip one bit of one column of one row of a ledger table, keeping its storage class (TEXT
    stays TEXT even when the flipped bytes are not UTF-8); None if SQLite refused the change."""
    conn = sqlite3.connect(path / DB_NAME, isolation_level=None)
    try:
        table = rng.choice(LEDGER_TABLES)
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        row = rng.choice(conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())
        column = rng.randrange(len(columns))
        value = row[column]
        if isinstance(value, int):
            new, cast = value ^ (1 << rng.randrange(62)), "?"
        else:
            data = bytearray(value.encode() if isinstance(value, str) else value)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            new, cast = bytes(data), ("CAST(? AS TEXT)" if isinstance(value, str) else "?")
        where = " AND ".join(f"{name} IS ?" for name in columns)
        try:
            changed = conn.execute(
                f"UPDATE {table} SET {columns[column]} = {cast} WHERE {where}", (new, *row)
            ).rowcount
        except sqlite3.IntegrityError:
            return None
        assert changed == 1
        return f"{table}.{columns[column]}"
    finally:
        conn.close()


def test_pristine_stores_verify_alike_on_one_two_and_three_cores(kv_store, market_store):
    for path, app in ((kv_store, KeyValueApp()), (market_store, MarketApp())):
        one, _ = _verdict(path, app, 1)
        assert one[0] == "ok"
        for workers in (2, 3):
            many, report = _verdict(path, app, workers)
            assert many == one
            # every transaction's and seal's signature was checked ahead of execution
            assert report.signatures_ahead == one[2] + one[3]


@pytest.mark.parametrize("which", ["kv", "market"])
def test_a_flipped_byte_is_reported_alike_with_workers(which, kv_store, market_store, tmp_path):
    pristine, app = (kv_store, KeyValueApp()) if which == "kv" else (market_store, MarketApp())
    rng = random.Random(2112 if which == "kv" else 4242)
    hit = set()
    for trial in range(60):
        work = tmp_path / f"t{trial}"
        shutil.copytree(pristine, work)
        where = _flip(work, rng)
        if where is None:
            continue
        one, _ = _verdict(work, app, 1)
        assert one[0] != "ok" or where.startswith("genesis"), (where, one)
        assert _verdict(work, app, 2)[0] == one, where
        hit.add(where.split(".")[0])
        shutil.rmtree(work)
    assert {"txs", "payloads", "results", "seals"} <= hit


@pytest.mark.parametrize("what", ["payload signature", "seal signature", "payload body", "deleted payload"])
def test_tampered_envelopes_fail_at_the_same_height_with_the_same_error(what, kv_store, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(kv_store, work)
    conn = sqlite3.connect(work / DB_NAME, isolation_level=None)
    store = Store.open(work, readonly=True)  # to read compressed rows as their canonical bytes
    height = 13
    if what.startswith("payload") or what == "deleted payload":
        (tx_hash,) = conn.execute("SELECT hash FROM txs WHERE height = ? AND idx = 3", (height,)).fetchone()
        old = store.payload(bytes(tx_hash))
        if what == "deleted payload":
            conn.execute("DELETE FROM payloads WHERE hash = ?", (tx_hash,))
        else:
            text = old.decode()
            cut = (
                text.index('"sig":"') + 12 if what == "payload signature" else text.index('"import_wh":') + 12
            )
            new = text[:cut] + ("1" if text[cut] != "1" else "2") + text[cut + 1 :]
            conn.execute("UPDATE payloads SET envelope = ? WHERE hash = ?", (new.encode(), tx_hash))
    else:
        validator, _ = conn.execute(
            "SELECT validator, envelope FROM seals WHERE height = ? LIMIT 1", (height,)
        ).fetchone()
        text = dict(store.seal_rows(height))[validator].decode()
        cut = text.index('"sig":"') + 12
        new = text[:cut] + ("A" if text[cut] != "A" else "B") + text[cut + 1 :]
        conn.execute(
            "UPDATE seals SET envelope = ? WHERE height = ? AND validator = ?",
            (new.encode(), height, validator),
        )
    store.close()
    conn.close()
    one, _ = _verdict(work, KeyValueApp(), 1)
    assert one[0] == "failed" and one[1] == height, one
    assert _verdict(work, KeyValueApp(), 2)[0] == one


def test_a_helper_that_dies_changes_nothing(kv_store, monkeypatch):
    one, _ = _verdict(kv_store, KeyValueApp(), 1)
    submit = CheckPool.submit

    def submit_then_kill(self, items):
        batch = submit(self, items)
        if batch == 3:
            for helper in self._helpers:
                helper.proc.kill()
        return batch

    monkeypatch.setattr(CheckPool, "submit", submit_then_kill)
    many, report = _verdict(kv_store, KeyValueApp(), 2)
    assert many == one
    assert report.signatures_ahead == one[2] + one[3]


def test_check_items_verdicts(kv_store):
    store = Store.open(kv_store, readonly=True)
    try:
        genesis = verify_module.genesis_from_dict_bytes(store.genesis_doc())
        _, tx_hash, signer, *_ = store.tx_rows(1)[0]
        payload = store.payload(bytes(tx_hash))
    finally:
        store.close()
    meters = verify_module.genesis_state(genesis, KeyValueApp())["chain"]["meters"]
    sec1 = meters[signer]["key"]
    other = next(entry["key"] for kid, entry in meters.items() if kid != signer)
    cut = payload.index(b'"sig":"') + 12
    forged = payload[:cut] + (b"A" if payload[cut : cut + 1] != b"A" else b"B") + payload[cut + 1 :]
    interval = genesis.interval_s
    items = [
        (payload, sec1, interval),
        (payload, None, interval),  # key not known yet: parsed only
        (payload, other, interval),
        (payload.replace(b",", b", ", 1), sec1, interval),  # valid JSON, not canonical
        (b"{not json", sec1, interval),
        (forged, sec1, interval),
    ]
    assert list(check_items(genesis.community, items)) == [VERIFIED, PARSED, PARSED, BAD, BAD, PARSED]
    assert check_items("another community", items[:1]) == bytes([BAD])
