"""`peerwatt genesis new`, `node init`, `gov propose|vote|list` and `verify`, as a subprocess."""

from __future__ import annotations

import sqlite3

from chain.kvapp import KeyValueApp
from tests.support.cli import peerwatt
from tests.support.localnet import make_community


def test_genesis_new_and_node_init(tmp_path):
    assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", "v1").returncode == 0
    out = tmp_path / "genesis.toml"
    res = peerwatt(
        "genesis",
        "new",
        "--community",
        "oak-street",
        "--validator",
        str(tmp_path / "v1.pub"),
        "--app",
        "kv",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    res = peerwatt("node", "init", "--genesis", str(out), "--data", str(tmp_path / "n1"))
    assert res.returncode == 0, res.stderr
    assert "genesis hash" in res.stdout
    res = peerwatt("node", "init", "--genesis", str(out), "--data", str(tmp_path / "n1"))
    # the same genesis again: nothing to do (tests/peerwatt/test_cli_wrong_file_named.py)
    assert res.returncode == 0 and "is already initialised" in res.stdout, res.stderr
    res = peerwatt("verify", "--data", str(tmp_path / "n1"))
    assert res.returncode == 0 and res.stdout.startswith("ok: 0 blocks"), res.stdout + res.stderr
    res = peerwatt("gov", "list", "--data", str(tmp_path / "n1"))
    assert res.returncode == 0 and "no open proposals" in res.stdout


def test_broken_genesis_is_one_line(tmp_path):
    bad = tmp_path / "g.toml"
    bad.write_text('[community]\nid = "Oak Street"\ntime = 1\n')
    res = peerwatt("node", "init", "--genesis", str(bad), "--data", str(tmp_path / "n"))
    assert res.returncode != 0 and res.stderr.count("\n") == 1 and "community.id" in res.stderr
    res = peerwatt("node", "init", "--genesis", str(tmp_path / "missing.toml"), "--data", str(tmp_path / "n"))
    assert res.returncode != 0 and "not found" in res.stderr
    res = peerwatt("verify", "--data", str(tmp_path / "nothing"))
    assert res.returncode != 0 and "no ledger store" in res.stderr


def test_verify_names_first_bad_height_and_gov_files_are_accepted(tmp_path):
    c = make_community(validators=3, members=2)
    ledgers = c.open_ledgers(tmp_path, KeyValueApp)
    key_file = tmp_path / "member0.key"
    from chain.keys import save_private_key

    save_private_key(c.members[0].key, key_file)
    t = c.genesis.time
    res = peerwatt(
        "gov",
        "propose",
        "--key",
        str(key_file),
        "--community",
        c.community,
        "--seq",
        "1",
        "--action",
        "set_param",
        "--arg",
        "name=max_writes_per_meter",
        "--arg",
        "value=3",
    )
    assert res.returncode == 0, res.stderr
    import time as _time

    now = int(_time.time())
    env = ledgers[0].intake(res.stdout.encode(), now)
    c.run_block([env], max(now, t))
    res = peerwatt("gov", "list", "--data", str(tmp_path / "validator-0"))
    assert env.tx_hash.hex() in res.stdout and "needed=2" in res.stdout
    for i in range(3):
        c.run_block([], max(now, t) + i + 1)
    for ledger in ledgers:
        ledger.close()
    res = peerwatt("verify", "--data", str(tmp_path / "validator-1"))
    assert res.returncode == 0 and res.stdout.startswith("ok: 4 blocks"), res.stdout
    conn = sqlite3.connect(tmp_path / "validator-1" / "ledger.sqlite")
    conn.execute("UPDATE blocks SET time = time + 1 WHERE height = 3")
    conn.commit()
    conn.close()
    res = peerwatt("verify", "--data", str(tmp_path / "validator-1"))
    assert res.returncode == 1 and res.stdout.startswith("FAILED at height 3"), res.stdout


def test_a_price_in_currency_says_the_micro_units_to_write(tmp_path):
    """Found in a QA pass: `community init` takes prices as 0.08, but `gov propose --action set_param
    --arg value=0.03` only said 'grid_fee_per_kwh must be a non-negative integer'."""
    assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m").returncode == 0
    base = ["gov", "propose", "--key", str(tmp_path / "m.key"), "--community", "c", "--action", "set_param"]
    for name, value, expected in (
        ("grid_fee_per_kwh", "0.03", "(0.03 per kWh is value=30000)"),
        ("retail_price", "0.5e-1", "(0.5e-1 per kWh is value=50000)"),
        ("levies_per_kwh", "0.0000001", "(whole ones)"),
    ):
        r = peerwatt(*base, "--arg", f"name={name}", "--arg", f"value={value}")
        assert r.returncode == 2
        assert r.stderr == (
            f"error: --arg value={value}: {name} is in micro-units per kWh, an integer {expected}\n"
        )
    ok = peerwatt(*base, "--arg", "name=retail_price", "--arg", "value=310000", "--out", str(tmp_path / "p"))
    assert ok.returncode == 0, ok.stderr


def test_a_parameter_can_be_voted_back_to_no_limit(tmp_path):
    """Found in a QA pass: max_reading_corrections without a limit (what the ledger takes as None)
    could not be proposed: --arg value=null became the string "null", which the ledger refuses."""
    import json

    assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m").returncode == 0
    base = ["gov", "propose", "--key", str(tmp_path / "m.key"), "--community", "c", "--action", "set_param"]
    args = ["--arg", "name=max_reading_corrections", "--arg", "value=null", "--out", str(tmp_path / "p")]
    r = peerwatt(*base, *args)
    assert r.returncode == 0, r.stderr
    body = json.loads((tmp_path / "p").read_text())["body"]
    assert body["args"] == {"name": "max_reading_corrections", "value": None}
