"""A genesis of ledger rules this version does not know (written by a newer peerwatt) is named as
such, with the fix: update peerwatt. Found in a QA pass of rules 5: an older `node init` said the
file "is not a genesis file" and an older `verify` said to restore an intact store from a peer."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import peerwatt


def test_node_init_on_a_newer_genesis_says_to_update(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    assert peerwatt("keys", "new", "--out", str(keys), "--name", "v").returncode == 0
    genesis = tmp_path / "g.toml"
    made = peerwatt(
        "genesis", "new", "--community", "oak", "--validator", str(keys / "v.pub"), "--out", str(genesis)
    )
    assert made.returncode == 0, made.stderr
    text = genesis.read_text()
    assert "\nrules = 5" in text
    genesis.write_text(text.replace("\nrules = 5", "\nrules = 6"))
    done = peerwatt("node", "init", "--genesis", str(genesis), "--data", str(tmp_path / "d"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "chain.rules is 6" in done.stderr and "update peerwatt" in done.stderr
    assert "not a genesis file" not in done.stderr
    assert not (tmp_path / "d" / "ledger.sqlite").exists()
