"""`peerwatt keys` with a passphrase file that is not UTF-8 text: one line, nothing written (found in
a QA pass: a UnicodeDecodeError traceback from read_passphrase)."""

from __future__ import annotations

import os

from tests.support.cli import peerwatt


def test_a_passphrase_file_that_is_not_utf8_is_one_line_and_writes_nothing(tmp_path):
    secret = tmp_path / "pw"
    secret.write_bytes(b"caf\xe9 au lait\n")  # Latin-1, not UTF-8
    r = peerwatt("keys", "new", "--out", str(tmp_path / "k"), "--passphrase-file", str(secret))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert str(secret) in r.stderr and "not UTF-8" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["pw"]


def test_show_with_such_a_passphrase_file_is_one_line(tmp_path):
    assert peerwatt("keys", "new", "--out", str(tmp_path), "--name", "m").returncode == 0
    secret = tmp_path / "pw"
    secret.write_bytes(b"\xff\xfe\n")
    r = peerwatt("keys", "show", str(tmp_path / "m.key"), "--passphrase-file", str(secret))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not UTF-8" in r.stderr, r.stderr
