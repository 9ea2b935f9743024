"""A ledger value of the wrong SQLite type (found in a QA pass): the sqlite3 shell's replace() on a
BLOB column writes TEXT, and `peerwatt verify`, `report` and `dashboard` ended in a 30-line
``TypeError: string argument without an encoding`` (verify exiting 1 as if it had verified). Such
a value is tampering: verify says ``FAILED at height H: <what>`` at the row's height (exit 1,
docs/operations.md), report and dashboard refuse in one line naming the store, and `node run`
refuses in one line when it reads the row at open."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support.cli import peerwatt
from tests.support.market_ledger import closed_market_data


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """A closed node's data folder with a full trade round: orders (block 1), clearing and trades
    (2), readings and settlements (3), the state snapshot at the head (4)."""
    return closed_market_data(tmp_path_factory.mktemp("market"))


def tampered(market: Path, tmp_path: Path, sql: str) -> Path:
    data = tmp_path / "node"
    shutil.copytree(market, data)
    conn = sqlite3.connect(data / "ledger.sqlite")
    assert conn.execute(sql).rowcount >= 1, sql
    conn.commit()
    conn.close()
    return data


def failed_at(r, height: int, *words: str) -> None:
    """``peerwatt verify`` failed at ``height`` in one line (exit 1), without a traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith(f"FAILED at height {height}: "), r.stdout
    for word in words:
        assert word in r.stdout, (word, r.stdout)


def one_line_error(r, *words: str) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    for word in words:
        assert word in r.stderr, (word, r.stderr)


TRADE = "kind = 'trade' AND height = 2"
PAYLOAD = "hash = (SELECT hash FROM txs WHERE height = 3 AND idx = 0)"
# (UPDATE statement, height verify names, words in its line, the commands that read the row)
CASES = {
    # the QA pass's edit, as the sqlite3 shell makes it: replace() on a BLOB gives TEXT
    "result_text_replace": (
        f"UPDATE results SET data = replace(data, '\"seller\"', '\"seller\"') WHERE {TRADE}",
        2,
        "result 5 of block 2 is damaged (stored as TEXT, not BLOB)",
        "report dashboard",
    ),
    "result_text": (
        f"UPDATE results SET data = CAST(data AS TEXT) WHERE {TRADE}",
        2,
        "TEXT",
        "report dashboard",
    ),
    "result_integer": (
        f"UPDATE results SET data = 7 WHERE {TRADE}",
        2,
        "stored as INTEGER",
        "report dashboard",
    ),
    "result_real": (f"UPDATE results SET data = 1.5 WHERE {TRADE}", 2, "stored as REAL", "report dashboard"),
    # a "tx" result is read before the walk too (erasures): named at its own height
    "tx_result_text": (
        "UPDATE results SET data = CAST(data AS TEXT) WHERE height = 1 AND idx = 0",
        1,
        "result 0 of block 1",
        "report dashboard",
    ),
    # a BLOB that is no JSON (verify found it before): report names the store now too (the
    # dashboard's indexer is not covered)
    "result_not_json": (f"UPDATE results SET data = X'7b' WHERE {TRADE}", 2, "result 5 is damaged", "report"),
    "result_kind_blob": (
        "UPDATE results SET kind = CAST(kind AS BLOB) WHERE height = 3 AND idx = 8",
        3,
        "(kind) is damaged (stored as BLOB, not TEXT)",
        "",
    ),
    "payload_text": (
        f"UPDATE payloads SET envelope = CAST(envelope AS TEXT) WHERE {PAYLOAD}",
        3,
        "the payload of",
        "report dashboard",
    ),
    "seal_text": ("UPDATE seals SET envelope = CAST(envelope AS TEXT) WHERE height = 2", 2, "seal", ""),
    "seal_validator_blob": (
        "UPDATE seals SET validator = CAST(validator AS BLOB) WHERE height = 2",
        2,
        "stored as BLOB, not TEXT",
        "",
    ),
    "block_hash_text": (
        "UPDATE blocks SET hash = CAST(hash AS TEXT) WHERE height = 2",
        2,
        "(hash)",
        "dashboard",
    ),
    "block_time_text": ("UPDATE blocks SET time = 'noon' WHERE height = 2", 2, "(time)", ""),
    "block_count_real": ("UPDATE blocks SET tx_count = 0.5 WHERE height = 3", 3, "(tx_count)", ""),
    "tx_hash_text": (
        "UPDATE txs SET hash = CAST(hash AS TEXT) WHERE height = 3 AND idx = 0",
        3,
        "transaction 0 of block 3 (hash)",
        "report dashboard",
    ),
    "tx_seq_text": ("UPDATE txs SET seq = 'one' WHERE height = 3 AND idx = 0", 3, "(seq)", ""),
    "genesis_text": ("UPDATE genesis SET doc = CAST(doc AS TEXT)", 0, "genesis document", "report dashboard"),
    "snapshot_text": (
        "UPDATE local_snapshot SET state = CAST(state AS TEXT)",
        4,
        "state snapshot (local_snapshot) is damaged (stored as TEXT, not BLOB)",
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "result_not_json"))  # (that one: before)
def test_a_value_of_the_wrong_type_fails_verification_in_one_line(tmp_path, market, case):
    sql, height, words, _ = CASES[case]
    data = tampered(market, tmp_path, sql)
    failed_at(peerwatt("verify", "--data", str(data)), height, words)


@pytest.mark.parametrize("case", ["result_text_replace", "payload_text", "seal_text", "snapshot_text"])
def test_verify_independent_fails_the_same_way(tmp_path, market, case):
    sql, height, words, _ = CASES[case]
    data = tampered(market, tmp_path, sql)
    r = peerwatt("verify", "--data", str(data), "--independent")
    failed_at(r, height, words)


@pytest.mark.parametrize("case", sorted(c for c, (*_, readers) in CASES.items() if readers))
def test_report_and_dashboard_refuse_in_one_line_naming_the_store(tmp_path, market, case):
    sql, _height, _words, readers = CASES[case]
    data = tampered(market, tmp_path, sql)
    store = str(data / "ledger.sqlite")
    if "report" in readers:
        r = peerwatt("report", "--data", str(data), "--out", str(tmp_path / "r.csv"))
        one_line_error(r, store, "damaged")
        assert not list(tmp_path.glob("*.csv"))
    if "dashboard" in readers:
        r = peerwatt("dashboard", "--data", str(data), "--port", "0", timeout=60)
        one_line_error(r, store, "damaged")


@pytest.mark.parametrize("case", ["genesis_text", "snapshot_text", "head_header_text"])
def test_node_run_refuses_a_row_it_reads_at_open_in_one_line(tmp_path, market, case):
    sql = (
        "UPDATE blocks SET header = CAST(header AS TEXT) WHERE height = 4"
        if case == "head_header_text"
        else CASES[case][0]
    )
    data = tampered(market, tmp_path, sql)
    config = tmp_path / "node.toml"
    config.write_text('data = "node"\nrole = "observer"\n[broker]\nurl = "mqtt://127.0.0.1:1"\n')
    r = peerwatt("node", "run", "-c", str(config), timeout=60)
    one_line_error(r, str(data / "ledger.sqlite"), "damaged")


@pytest.mark.parametrize(
    "value", ["CAST('{\"record\": 1' AS TEXT)", "CAST('{\"record\": 5}' AS BLOB)", "X'FF00'"]
)
def test_a_validator_refuses_a_damaged_consensus_record_in_one_line(tmp_path, value):
    """Left by the pass above: the node's own consensus record (local_kv 'consensus', what it is
    about to send at the height in progress) read at start with the wrong type or bytes gave a
    traceback. It refuses in one line: starting without it could make it vote twice differently."""
    from chain.keys import save_private_key
    from tests.support.market_ledger import build_market

    c = build_market(tmp_path / "m", validators=1)
    for ledger in c.ledgers:
        ledger.close()
    data = tmp_path / "m" / "validator-0"
    save_private_key(c.validators[0].key, tmp_path / "validator.key")
    conn = sqlite3.connect(data / "ledger.sqlite")
    conn.execute(f"INSERT OR REPLACE INTO local_kv VALUES ('consensus', {value})")
    conn.commit()
    conn.close()
    config = tmp_path / "node.toml"
    config.write_text(
        f'data = "{data}"\nrole = "sequencer"\nkey = "{tmp_path / "validator.key"}"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n'
    )
    r = peerwatt("node", "run", "-c", str(config), timeout=60)
    one_line_error(r, str(data), "cannot start the node", "consensus")
