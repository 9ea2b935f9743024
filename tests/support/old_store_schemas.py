"""The ledger store's layouts before schema 3, for the upgrade tests and bench_storage's baseline
(chain/store.py keeps only the upgrade from them)."""

# What peerwatt wrote before schema 3 (chain/store.py at 385d1df): rowid tables with composite
# or blob primary keys, an index of txs by signer (and by hash in schema 1) and of all results
# by kind; schema 2 added store_dicts.
SCHEMA_2_DDL = """
CREATE TABLE genesis (id INTEGER PRIMARY KEY CHECK (id = 0), doc BLOB NOT NULL);
CREATE TABLE blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, time INTEGER NOT NULL,
    header BLOB NOT NULL, tx_count INTEGER NOT NULL, result_count INTEGER NOT NULL);
CREATE INDEX blocks_time ON blocks(time);
CREATE TABLE txs (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, signer TEXT NOT NULL,
    type TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (height, idx));
CREATE INDEX txs_signer ON txs(signer, height);
CREATE TABLE payloads (hash BLOB PRIMARY KEY, envelope BLOB NOT NULL);
CREATE TABLE results (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (height, idx));
CREATE INDEX results_kind ON results(kind, height);
CREATE TABLE seals (
    height INTEGER NOT NULL, validator TEXT NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (height, validator));
CREATE TABLE local_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE local_own_seals (
    height INTEGER PRIMARY KEY, header_hash BLOB NOT NULL, envelope BLOB NOT NULL);
CREATE TABLE local_alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL,
    evidence BLOB NOT NULL);
CREATE TABLE local_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE store_dicts (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 255), tbl TEXT NOT NULL,
    trained_at INTEGER NOT NULL, dict BLOB NOT NULL);
"""
