"""`peerwatt dashboard user add|list|remove -c dashboard.toml` (a QA pass that followed
docs/dashboard.md): accounts made with `--data node-data` as "Accounts" showed landed in the default
instance folder beside the node's data, while the example dashboard.toml says `instance =
"dashboard-data"`, so the dashboard started with `-c dashboard.toml` refused every login, and
`user add -c dashboard.toml` said "No such option '-c'". The account commands now read data and
instance from the same dashboard.toml the dashboard reads. Also: `user add --meter` took a meter
the community had revoked, although the docs say it must be enrolled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import peerwatt
from tests.support.community_broker import revoke_by_vote
from tests.support.market_ledger import build_market

PASSWORD = "a long passphrase\n"


@pytest.fixture(scope="module")
def community(tmp_path_factory):
    """A market ledger (one validator) whose meter 0 the validators revoked; the node's data is
    BASE/validator-0, and BASE/dashboard.toml names it with instance = "dashboard-data"."""
    base = tmp_path_factory.mktemp("dash")
    c = build_market(base, validators=1)
    revoke_by_vote(c, "revoke_meter", {"meter": c.meters[0].id}, c.ledgers[0].head["time"] + 60)
    for ledger in c.ledgers:
        ledger.close()
    (base / "dashboard.toml").write_text('data = "validator-0"\ninstance = "dashboard-data"\n')
    return c, base


def accounts_login(instance: Path, name: str, password: str):
    from dashboard.accounts import Accounts

    accounts = Accounts(instance / "dashboard.sqlite")
    try:
        return accounts.login(name, password, "127.0.0.1", session_s=60)
    finally:
        accounts.close()


def test_accounts_made_with_the_config_are_the_ones_the_dashboard_reads(community, tmp_path):
    c, base = community
    config = str(base / "dashboard.toml")
    meter = c.meters[1].id
    added = peerwatt("dashboard", "user", "add", "-c", config, "alice", "--meter", meter, stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added household user alice"
    instance = base / "dashboard-data"
    assert accounts_login(instance, "alice", PASSWORD.strip()) is not None  # what `dashboard -c` opens
    assert not (base / "dashboard").exists()  # not the default folder beside the node's data
    # -c before the subcommand says the same (it was taken and silently ignored)
    admin = peerwatt("dashboard", "-c", config, "user", "add", "boss", "--admin", stdin=PASSWORD)
    assert admin.returncode == 0, admin.stderr
    listed = peerwatt("dashboard", "user", "list", "-c", config)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["alice\thousehold\t" + meter, "boss\tadmin\t"]
    removed = peerwatt("dashboard", "user", "remove", "--config", config, "boss")
    assert removed.returncode == 0 and removed.stdout.strip() == "removed user boss", removed.stderr
    assert [
        line.split("\t")[0]
        for line in peerwatt("dashboard", "user", "list", "-c", config).stdout.splitlines()
    ] == ["alice"]
    # --instance still overrides the config's folder, as for the dashboard itself
    other = tmp_path / "other"
    r = peerwatt(
        "dashboard", "user", "add", "-c", config, "--instance", str(other), "carol", "--admin", stdin=PASSWORD
    )
    assert r.returncode == 0, r.stderr
    assert accounts_login(other, "carol", PASSWORD.strip()) is not None
    # neither a config nor a data folder: one line naming both
    r = peerwatt("dashboard", "user", "list")
    assert r.returncode == 2
    assert r.stderr == "error: give -c dashboard.toml or --data DIR (the node's data folder)\n"


def test_a_revoked_meter_gets_no_dashboard_account(community, tmp_path):
    c, base = community
    revoked = c.meters[0].id
    r = peerwatt(
        "dashboard", "user", "add", "--data", str(base / "validator-0"), "--instance", str(tmp_path / "i"),
        "dave", "--meter", revoked, stdin=PASSWORD,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: meter {revoked} was revoked by community oak-street"
    ), r.stderr
    assert "not enrolled any more" in lines[0]
    assert not (tmp_path / "i" / "dashboard.sqlite").exists()
