"""`peerwatt community init` / `community add-meter`: the files a community starts from (issue 16)."""

from __future__ import annotations

import stat

from chain.genesis import load_genesis
from peerwatt.config import load_node_config
from tests.support.cli import peerwatt

FLAGS = [
    "--community",
    "oak-street",
    "--interval",
    "300",
    "--feed-in-price",
    "0.08",
    "--retail-price",
    "0.30",
    "--timezone",
    "Europe/Vienna",
    "--broker-host",
    "127.0.0.1",
]


def test_init_writes_a_community_with_a_correct_genesis_and_node_configs(tmp_path):
    out = tmp_path / "oak"
    r = peerwatt("community", "init", *FLAGS, "--validators", "4", "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stderr
    genesis = load_genesis(out / "genesis.toml")
    assert genesis.app_params["interval_s"] == 300 and genesis.app_params["gate_s"] == 100
    assert genesis.doc["chain"]["quorum"] == 3
    assert "# delivery interval (5 minutes)" in (out / "genesis.toml").read_text()
    assert "(15 minutes)" not in (out / "genesis.toml").read_text()
    assert set(genesis.doc["members"]) == set(genesis.doc["validators"])
    summary = (out / "SUMMARY.txt").read_text()
    assert genesis.hash.hex() in summary and "VALIDATOR 4" in summary
    roles = []
    for i in range(1, 5):
        folder = out / f"validator-{i}"
        cfg = load_node_config(folder / "node.toml")  # the node's own checks: key modes, broker files
        roles.append(cfg.role)
        assert cfg.broker.tls and cfg.client_id.startswith("node-")
        assert stat.S_IMODE((folder / "validator.key").stat().st_mode) == 0o600
        r = peerwatt("node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "d"))
        assert r.returncode == 0 and genesis.hash.hex() in r.stdout
    assert roles == ["sequencer", "validator", "validator", "validator"]
    acl = (out / "broker" / "peerwatt.acl").read_text()
    assert acl.count("topic write peerwatt/oak-street/gov") == 4  # one operator account per validator
    assert (out / "broker" / "mosquitto.conf").exists()
    assert (out / "household" / "genesis.toml").read_bytes() == (out / "genesis.toml").read_bytes()


def test_fewer_than_four_validators_warn_and_explain_quorum_zero_is_refused(tmp_path):
    r = peerwatt("community", "init", *FLAGS, "--validators", "3", "--out", str(tmp_path / "a"), stdin="")
    assert r.returncode == 0, r.stderr
    assert "WARNING: 3 validator(s) give no fault tolerance" in r.stderr
    assert "a block needs floor(2n/3)+1 seals, so n=3 needs 3 and tolerates no failure" in r.stderr
    r = peerwatt("community", "init", *FLAGS, "--validators", "0", "--out", str(tmp_path / "b"), stdin="")
    assert r.returncode != 0
    assert r.stderr.strip() == "error: --validators 0: a community needs at least 1 validator"
    assert not (tmp_path / "b").exists()


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = [
        (["--interval", "7"], "the interval must divide a day"),
        (["--timezone", "Mars/Olympus"], "not a known time zone"),
        (["--feed-in-price", "0.5"], "at most the retail price"),
    ]
    for extra, words in bad:
        r = peerwatt(
            "community", "init", *FLAGS, *extra, "--validators", "4", "--out", str(tmp_path / "x"), stdin=""
        )
        assert r.returncode != 0 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    r = peerwatt("community", "init", *FLAGS, "--validators", "4", "--out", str(tmp_path / "full"), stdin="")
    assert "refusing to overwrite" in r.stderr


def test_every_genesis_peerwatt_writes_takes_the_market_rules_of_today(tmp_path):
    """Switches whose absence keeps old ledgers re-executing as they did (docs/market.md):
    every community peerwatt starts says them, so it gets the fixed rules."""
    from peerwatt.demo_community import PARAMS as DEMO
    from peerwatt.sim_community import SimOptions, market_params

    assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", "v1").returncode == 0
    new = tmp_path / "new.toml"
    r = peerwatt(
        "genesis", "new", "--community", "c", "--validator", str(tmp_path / "v1.pub"), "--out", str(new)
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "oak"
    assert peerwatt("community", "init", *FLAGS, "--out", str(out), stdin="").returncode == 0
    for params in (
        load_genesis(new).app_params,
        load_genesis(out / "genesis.toml").app_params,
        DEMO,
        market_params(SimOptions()),
    ):
        assert params["fee_rates_at"] == "clearing"
        assert params["max_reading_corrections"] == 3
