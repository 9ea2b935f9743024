"""The real `peerwatt keys` and `peerwatt msg` commands, run in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import time

import ecdsa
from ecdsa.util import sigdecode_string

from chain.signature import b64url_decode
from tests.support.cli import peerwatt


def test_keys_new_show_and_msg_sign_verify(tmp_path):
    out = peerwatt("keys", "new", "--out", str(tmp_path), "--name", "meter1")
    assert out.returncode == 0, out.stderr
    kid = out.stdout.split()[2]
    assert os.stat(tmp_path / "meter1.key").st_mode & 0o777 == 0o600
    shown = peerwatt("keys", "show", str(tmp_path / "meter1.pub"))
    assert shown.returncode == 0 and f"key id: {kid}" in shown.stdout
    assert f"key id: {kid}" in peerwatt("keys", "show", str(tmp_path / "meter1.key")).stdout

    body = tmp_path / "body.json"
    body.write_text(
        json.dumps({"side": "buy", "interval": 1764000000, "energy_wh": 250, "limit_price": 150000})
    )
    signed = peerwatt(
        "msg",
        "sign",
        "--key",
        str(tmp_path / "meter1.key"),
        "--community",
        "oak-street",
        "--type",
        "order",
        "--seq",
        "5",
        "--body",
        str(body),
    )
    assert signed.returncode == 0, signed.stderr
    env = json.loads(signed.stdout)
    assert env["signer"] == kid and env["seq"] == 5

    # the independent implementation accepts the signature over the documented bytes
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    signed_bytes = b"peerwatt/v1\n" + json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    sec1 = bytes.fromhex(shown.stdout.split("compressed): ")[1].split()[0])
    vk = ecdsa.VerifyingKey.from_string(sec1, curve=ecdsa.NIST256p)
    assert vk.verify(
        b64url_decode(env["sig"]), signed_bytes, hashfunc=hashlib.sha256, sigdecode=sigdecode_string
    )

    ok = peerwatt(
        "msg",
        "verify",
        "--pubkey",
        str(tmp_path / "meter1.pub"),
        "--community",
        "oak-street",
        "-",
        stdin=signed.stdout,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == f"ok order {kid} 5"

    env["body"]["energy_wh"] = 9999
    bad = peerwatt("msg", "verify", "--pubkey", str(tmp_path / "meter1.pub"), "-", stdin=json.dumps(env))
    assert bad.returncode == 1 and bad.stdout.startswith("rejected: bad_signature")

    wrong = peerwatt(
        "msg",
        "verify",
        "--pubkey",
        str(tmp_path / "meter1.pub"),
        "--community",
        "elm",
        "-",
        stdin=signed.stdout,
    )
    assert wrong.returncode == 1 and wrong.stdout.startswith("rejected: wrong_community")


def test_genesis_interval_alignment(tmp_path):
    peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m")
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"side": "buy", "interval": 1764000300, "energy_wh": 1, "limit_price": 1}))
    signed = peerwatt(
        "msg",
        "sign",
        "--key",
        str(tmp_path / "m.key"),
        "--community",
        "oak",
        "--type",
        "order",
        "--seq",
        "1",
        "--body",
        str(body),
    )
    assert peerwatt(
        "msg", "verify", "--pubkey", str(tmp_path / "m.pub"), "-", stdin=signed.stdout
    ).stdout.startswith("rejected: interval_not_aligned")
    genesis = tmp_path / "genesis.toml"
    assert (
        peerwatt(
            "genesis",
            "new",
            "--community",
            "oak",
            "--validator",
            str(tmp_path / "m.pub"),
            "--out",
            str(genesis),
        ).returncode
        == 0
    )
    genesis.write_text(genesis.read_text().replace("interval_s = 900", "interval_s = 300"))
    res = peerwatt(
        "msg",
        "verify",
        "--pubkey",
        str(tmp_path / "m.pub"),
        "--genesis",
        str(genesis),
        "-",
        stdin=signed.stdout,
    )
    assert res.returncode == 0, res.stdout


def test_expired_message(tmp_path):
    peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m")
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"proposal": "ab" * 32, "vote": "no"}))
    old = str(int(time.time()) - 10_000)
    signed = peerwatt(
        "msg",
        "sign",
        "--key",
        str(tmp_path / "m.key"),
        "--community",
        "oak",
        "--type",
        "vote",
        "--seq",
        "1",
        "--body",
        str(body),
        "--created",
        old,
        "--ttl",
        "60",
    )
    res = peerwatt("msg", "verify", "--pubkey", str(tmp_path / "m.pub"), "-", stdin=signed.stdout)
    assert res.returncode == 1 and res.stdout.startswith("rejected: expired")


def test_user_errors_are_one_line(tmp_path):
    peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m")
    os.chmod(tmp_path / "m.key", 0o644)
    body = tmp_path / "body.json"
    body.write_text("{}")
    res = peerwatt(
        "msg",
        "sign",
        "--key",
        str(tmp_path / "m.key"),
        "--community",
        "oak",
        "--type",
        "vote",
        "--seq",
        "1",
        "--body",
        str(body),
    )
    assert res.returncode != 0
    assert res.stderr.strip().count("\n") == 0 and "chmod 600" in res.stderr and "Traceback" not in res.stderr
    os.chmod(tmp_path / "m.key", 0o600)
    res = peerwatt(
        "msg",
        "sign",
        "--key",
        str(tmp_path / "m.key"),
        "--community",
        "oak",
        "--type",
        "vote",
        "--seq",
        "1",
        "--body",
        str(body),
    )
    assert res.returncode != 0 and "missing" in res.stderr and res.stderr.count("\n") == 1
    res = peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m")
    assert res.returncode != 0 and "already exists" in res.stderr
