"""Bad files a user can hand the CLI (found in a QA pass): each gives one line naming the file and
the fix, a non-zero exit, never a traceback, and changes no file."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from dashboard.indexdb import connect
from tests.support.cli import peerwatt
from tests.support.market_ledger import closed_market_data

COMMUNITY = [
    "community",
    "init",
    "--community",
    "t",
    "--validators",
    "1",
    "--validator-host",
    "127.0.0.1",
    "--interval",
    "60",
    "--feed-in-price",
    "0.08",
    "--retail-price",
    "0.30",
    "--timezone",
    "UTC",
    "--broker-host",
    "127.0.0.1",
]

NOT_UTF8 = bytes(range(128, 256)) * 2  # not UTF-8 from the first byte on


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    """``r`` failed with exactly one error line on stderr, holding every one of ``words``."""
    assert r.returncode not in (0, 1) or "FAILED" in r.stdout, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("WARNING: ")]  # `community init`'s
    assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for word in words:
        assert word in r.stderr, (word, r.stderr)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """A node's data folder holding a full trade round (one validator), left closed."""
    return closed_market_data(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="module")
def community(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("community") / "c"
    r = peerwatt(*COMMUNITY, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    return out


def test_a_config_file_that_is_not_utf8_is_named_in_one_line(tmp_path, market):
    bad = tmp_path / "x.toml"
    bad.write_bytes(NOT_UTF8)
    for args in (
        ["agent", "-c", str(bad)],
        ["agent", "status", "-c", str(bad)],
        ["node", "run", "-c", str(bad)],
        ["dashboard", "-c", str(bad)],
        ["node", "init", "--genesis", str(bad), "--data", str(tmp_path / "n")],
        ["msg", "verify", "--pubkey", str(bad), "--genesis", str(bad), str(bad)],
    ):
        one_line_error(peerwatt(*args, stdin=""), str(bad), "not UTF-8")
    assert not (tmp_path / "n").exists()
    household = tmp_path / "household"
    household.mkdir()
    (household / "genesis.toml").write_bytes(NOT_UTF8)
    r = peerwatt("agent", "setup", "--dir", str(household), "--host", "127.0.0.1", "--yes", stdin="")
    one_line_error(r, str(household / "genesis.toml"), "not UTF-8")
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_bytes(NOT_UTF8)
    r = statements(market, billing, tmp_path / "s")
    one_line_error(r, str(billing / "billing.toml"), "not UTF-8")
    assert os.listdir(billing) == ["billing.toml"] and not (tmp_path / "s").exists()


def statements(data: Path, billing: Path, out: Path) -> subprocess.CompletedProcess:
    """`peerwatt statements` for October 2025 (the market ledger's blocks are in November)."""
    return peerwatt(
        "statements", "--data", str(data), "--period", "2025-10", "--out", str(out), "--billing", str(billing)
    )


AGENT_TOML = """community = "t"
key = "meter.key"
genesis = "genesis.toml"
[meter]
profile = "sdm630"
host = "127.0.0.1"
[broker]
url = "mqtts://127.0.0.1:8883"
ca_file = "community-ca.crt"
cert_file = "broker-client.crt"
key_file = "broker-client.key"
"""


def test_missing_or_wrong_tls_files_are_named_before_anything_starts(tmp_path, community):
    node = tmp_path / "validator-1"
    shutil.copytree(community / "validator-1", node)
    config = node / "node.toml"
    r = peerwatt("node", "init", "--genesis", str(node / "genesis.toml"), "--data", str(node / "node-data"))
    assert r.returncode == 0, r.stderr
    config.write_text(config.read_text().replace('ca_file = "community-ca.crt"', 'ca_file = "nope.crt"'))
    r = peerwatt("node", "run", "-c", str(config))
    one_line_error(r, str(config), 'not found: ca_file = "nope.crt"', f"config file's folder, {node})")
    config.write_text(config.read_text().replace('ca_file = "nope.crt"', 'ca_file = "community-ca.crt"'))
    shutil.copy2(node / "operator-client.key", node / "node-client.key")  # another account's key
    r = peerwatt("node", "run", "-c", str(config))
    one_line_error(r, str(config), "node-client.key", "KEY_VALUES_MISMATCH")
    assert os.listdir(node / "node-data") == ["ledger.sqlite"]  # no mempool made, nothing started

    household = tmp_path / "household"
    shutil.copytree(community / "household", household)
    (household / "agent.toml").write_text(AGENT_TOML.replace('"community-ca.crt"', '"ca.crt"'))
    shutil.copy2(community / "validator-1" / "node-client.crt", household / "broker-client.crt")
    shutil.copy2(community / "validator-1" / "node-client.key", household / "broker-client.key")
    r = peerwatt("agent", "-c", str(household / "agent.toml"))
    one_line_error(r, str(household / "agent.toml"), 'not found: ca_file = "ca.crt"', str(household))
    assert not (household / "agent-state").exists()

    for name in ("agent.toml", "broker-client.crt", "broker-client.key"):
        (household / name).unlink()
    (household / "community-ca.crt").unlink()
    r = peerwatt("agent", "setup", "--dir", str(household), "--host", "127.0.0.1", "--yes", stdin="")
    one_line_error(r, str(household / "community-ca.crt"), "household/ folder")
    assert sorted(os.listdir(household)) == ["genesis.toml"]


def test_a_damaged_local_database_is_named_with_what_to_do(tmp_path, community, market):
    node = tmp_path / "validator-1"
    shutil.copytree(community / "validator-1", node)
    r = peerwatt("node", "init", "--genesis", str(node / "genesis.toml"), "--data", str(node / "node-data"))
    assert r.returncode == 0, r.stderr
    mempool = node / "node-data" / "mempool.sqlite"
    mempool.write_bytes(NOT_UTF8 * 20)
    r = peerwatt("node", "run", "-c", str(node / "node.toml"))
    one_line_error(r, str(mempool), "file is not a database", "move it away")
    assert mempool.read_bytes() == NOT_UTF8 * 20

    data = tmp_path / "node"
    shutil.copytree(market, data)
    r = peerwatt(
        "dashboard", "user", "add", "--data", str(data), "admin", "--admin", stdin="a long password\n"
    )
    assert r.returncode == 0, r.stderr
    instance = tmp_path / "dashboard"
    connect(instance / "index.sqlite").close()  # an empty index, as the dashboard makes it
    for name, words in (("index.sqlite", "rebuilt from the ledger"), ("dashboard.sqlite", "accounts")):
        good = (instance / name).read_bytes()
        assert len(good) > 1500
        for damaged in (NOT_UTF8 * 20, good[:1500]):
            (instance / name).write_bytes(damaged)
            for wal in instance.glob("*.sqlite-*"):
                wal.unlink()
            r = peerwatt("dashboard", "--data", str(data), "--port", "0", timeout=30)
            one_line_error(r, str(instance / name), "damaged", words)
            assert (instance / name).read_bytes() == damaged
            if name == "dashboard.sqlite":
                r = peerwatt(
                    "dashboard", "user", "add", "--data", str(data), "bob", "--admin", stdin="password 2\n"
                )
                one_line_error(r, str(instance / name), "damaged", words)
        (instance / name).write_bytes(good)


@pytest.mark.parametrize(
    "damage, where",
    [
        ("UPDATE seals SET envelope = X'00' WHERE height = 3", "block 3"),
        ("UPDATE results SET data = X'00' WHERE height = 3", "block 3"),
        ("UPDATE payloads SET envelope = X'00'", "payload"),
        ("UPDATE genesis SET doc = X'7b7d'", "genesis document is damaged (missing 'community')"),
    ],
)
def test_a_damaged_ledger_store_fails_verification_in_one_line(tmp_path, market, damage, where):
    data = tmp_path / "node"
    shutil.copytree(market, data)
    conn = sqlite3.connect(data / "ledger.sqlite")
    conn.execute(damage)
    conn.commit()
    conn.close()
    r = peerwatt("verify", "--data", str(data))
    assert r.returncode == 1 and r.stderr == "" and len(r.stdout.splitlines()) == 1, r
    assert r.stdout.startswith("FAILED at height ") and where in r.stdout and "restore" in r.stdout
    if "seals" not in damage:  # the report reads no seals
        one_line_error(peerwatt("report", "--data", str(data), "--out", str(tmp_path / "r.csv")), where)
    if "genesis" in damage:
        config = tmp_path / "node.toml"
        config.write_text('data = "node"\nrole = "observer"\n[broker]\nurl = "mqtt://127.0.0.1:1"\n')
        one_line_error(peerwatt("node", "run", "-c", str(config)), str(data / "ledger.sqlite"), where)


def test_a_wrong_type_in_billing_toml_is_named(tmp_path, market):
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_text('vat = "lots"\n')
    r = statements(market, billing, tmp_path / "s")
    one_line_error(r, str(billing / "billing.toml"), "vat must be a table")
    assert os.listdir(billing) == ["billing.toml"] and not (tmp_path / "s").exists()


def test_an_output_path_that_cannot_be_written_is_a_one_line_error(tmp_path, community):
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    r = peerwatt(*COMMUNITY, "--out", str(existing), stdin="")
    one_line_error(r, str(existing), "not a folder", "--out")
    r = peerwatt(*COMMUNITY, "--out", str(existing / "c"), stdin="")
    one_line_error(r, str(existing / "c"), "--out")
    r = peerwatt("simulate", "--out", str(existing))
    one_line_error(r, str(existing), "not a folder", "--out")
    assert existing.read_text() == "keep me"
    pub = community / "validator-1" / "validator.pub"
    out = tmp_path / "nodir" / "g.toml"
    r = peerwatt("genesis", "new", "--community", "t", "--validator", str(pub), "--out", str(out))
    one_line_error(r, str(tmp_path / "nodir"), "does not exist")
    assert not (tmp_path / "nodir").exists()


def test_node_run_refuses_another_communitys_store(tmp_path, community, market):
    node = tmp_path / "validator-1"
    shutil.copytree(community / "validator-1", node)
    config = node / "node.toml"
    assert 'genesis = "genesis.toml"' in config.read_text()  # as `community init` writes it
    shutil.copytree(market, node / "other")
    config.write_text(config.read_text().replace('data = "node-data"', 'data = "other"'))
    before = (node / "other" / "ledger.sqlite").read_bytes()
    r = peerwatt("node", "run", "-c", str(config))
    one_line_error(r, str(config), "holds the ledger of 'oak-street'", str(node / "genesis.toml"), "'t'")
    assert (node / "other" / "ledger.sqlite").read_bytes() == before
    assert sorted(os.listdir(node / "other")) == ["ledger.sqlite"]


def test_values_that_later_commands_refuse_are_refused_at_once(tmp_path, community, market):
    """Found in a QA pass: these exited 0 and the mistake surfaced only later (node init, agent)
    or never (a report over no days, a simulation with PV sizes 9-3)."""
    pub = community / "validator-1" / "validator.pub"
    out = tmp_path / "g.toml"
    r = peerwatt("genesis", "new", "--community", "G_1", "--validator", str(pub), "--out", str(out))
    one_line_error(r, "community.id has an invalid format", "--community")
    r = peerwatt(
        "genesis",
        "new",
        "--community",
        "g",
        "--validator",
        str(pub),
        "--validator",
        str(pub),
        "--out",
        str(out),
    )
    one_line_error(r, f"--validator {pub}: the same key as an earlier --validator")
    assert not out.exists()
    household = tmp_path / "household"
    shutil.copytree(community / "household", household)
    r = peerwatt(
        "agent",
        "setup",
        "--dir",
        str(household),
        "--host",
        "127.0.0.1",
        "--broker",
        "ftp://x:21",
        "--yes",
        stdin="",
    )
    one_line_error(r, "--broker", "scheme must be mqtt:// or mqtts://")
    assert sorted(os.listdir(household)) == sorted(os.listdir(community / "household"))
    r = peerwatt("simulate", "--pv-kwp", "9-3", "--out", str(tmp_path / "sim"))
    one_line_error(r, "--pv-kwp 9-3", "smallest size first")
    assert not (tmp_path / "sim").exists()
    r = peerwatt(
        "report",
        "--data",
        str(market),
        "--from",
        "2026-06-05",
        "--to",
        "2026-06-01",
        "--out",
        str(tmp_path / "r.csv"),
    )
    one_line_error(r, "--from 2026-06-05 is after --to 2026-06-01")
