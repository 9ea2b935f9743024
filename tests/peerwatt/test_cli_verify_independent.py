"""`peerwatt verify --independent` and `peerwatt msg verify --independent`, as a subprocess."""

from __future__ import annotations

import json
import sqlite3

from chain.keys import public_key_pem
from chain.kvapp import KeyValueApp
from chain.store import DB_NAME
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

T0 = 1_764_000_000


def make_store(tmp_path):
    c = make_community(validators=3, members=2, meters_per_member=1, time=T0)
    c.open_ledgers(tmp_path, KeyValueApp)
    c.run_reading_blocks(2)
    for ledger in c.ledgers:
        ledger.close()
    return tmp_path / "validator-2"


def test_verify_independent_prints_estimate_and_fails_with_one_line(tmp_path):
    store_dir = make_store(tmp_path)
    res = peerwatt("verify", "--data", str(store_dir), "--independent")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "independent check: about" in res.stderr and "for 10 signatures" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("ok: 2 blocks, 4 txs, 6 seals") and lines[1].startswith(
        "independent: 10 signatures"
    )

    conn = sqlite3.connect(store_dir / DB_NAME)
    row = conn.execute("SELECT validator, envelope FROM seals WHERE height = 2 ORDER BY validator").fetchone()
    seal = bytes(row[1])
    at = seal.index(b'"sig":"') + 12
    conn.execute(
        "UPDATE seals SET envelope = ? WHERE height = 2 AND validator = ?",
        (seal[:at] + (b"A" if seal[at : at + 1] != b"A" else b"B") + seal[at + 1 :], row[0]),
    )
    conn.commit()
    conn.close()
    res = peerwatt("verify", "--data", str(store_dir), "--independent")
    assert res.returncode == 1 and res.stdout.count("\n") == 1, res.stdout
    assert res.stdout.startswith("FAILED at height 2: independent check: bad_signature: seal of")


def test_msg_verify_independent_accepts_good_and_refuses_tampered(tmp_path):
    c = make_community(validators=1, members=1, time=T0)
    meter = c.meters[0]
    pub = tmp_path / "meter.pub"
    pub.write_text(public_key_pem(meter.key.public_key()))
    body = {"side": "buy", "interval": T0, "energy_wh": 250, "limit_price": 150_000}
    env = meter.sign(c.community, "order", body, created=T0)
    good = tmp_path / "good.json"
    good.write_bytes(env.to_bytes())
    args = ("msg", "verify", "--pubkey", str(pub), "--community", c.community, "--now", str(T0 + 1))
    res = peerwatt(*args, "--independent", str(good))
    assert res.returncode == 0 and res.stdout.startswith(f"ok order {meter.id} 1 (independently"), res.stderr
    # any JSON layout is accepted (re-encoded by rfc8785 for the signed bytes)
    spaced = tmp_path / "spaced.json"
    spaced.write_text(json.dumps(env.to_dict(), indent=2))
    assert peerwatt(*args, "--independent", str(spaced)).returncode == 0

    tampered = tmp_path / "bad.json"
    tampered.write_text(json.dumps(env.to_dict() | {"body": body | {"energy_wh": 251}}))
    res = peerwatt(*args, "--independent", str(tampered))
    assert res.returncode == 1 and res.stdout.startswith("rejected: bad_signature"), res.stdout
    # a hex SEC1 key file works too, and a key that is not the signer's is refused
    other = tmp_path / "other.pub"
    other.write_text(c.validators[0].sec1_hex)
    res = peerwatt("msg", "verify", "--pubkey", str(other), "--now", str(T0 + 1), "--independent", str(good))
    assert res.returncode == 1 and res.stdout.startswith("rejected: signer_mismatch")
