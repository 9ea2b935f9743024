"""Revocation on the broker: `broker config` / `broker certs` read the current chain state of a
node's store (--data), leave out meters revoked by vote or whose owner left, take --exclude, and
keep the community CA's CRL (--revoke). The real-broker test is in
tests/reliability/test_broker_access.py (test_a_revoked_meter_loses_its_account)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from chain.kvapp import KeyValueApp
from tests.support.community_broker import genesis_toml, peerwatt, revoke_by_vote
from tests.support.localnet import make_community

T0 = 1_764_000_000


@pytest.fixture
def revoked(tmp_path: Path):
    """A community of 3 validators and 3 members: meter 0 revoked by vote, member 1 removed (its
    meter departed), meter 2 still active; the sequencer's store is tmp_path/validator-0."""
    c = make_community(validators=3, members=3, time=T0 - 3600)
    (tmp_path / "genesis.toml").write_text(genesis_toml(c.genesis.doc))
    c.open_ledgers(tmp_path, KeyValueApp)
    revoke_by_vote(c, "revoke_meter", {"meter": c.meters[0].id}, T0)
    revoke_by_vote(c, "remove_member", {"member": c.members[1].id}, T0 + 10)
    assert not c.ledgers[0].chain_state["meters"][c.meters[0].id]["active"]
    assert c.members[1].id not in c.ledgers[0].chain_state["members"]
    for ledger in c.ledgers:
        ledger.close()
    return c


def config(tmp_path: Path, *args: str):
    result = peerwatt(
        "broker", "config", "--out", str(tmp_path / "b"), "--persistence", str(tmp_path / "p"), *args
    )
    result.output = result.stdout + result.stderr
    return result


def acl_users(tmp_path: Path) -> list[str]:
    acl = (tmp_path / "b" / "peerwatt.acl").read_text().splitlines()
    return [line.removeprefix("user ") for line in acl if line.startswith("user ")]


def test_config_from_a_node_store_leaves_out_revoked_and_departed_meters(tmp_path: Path, revoked) -> None:
    c = revoked
    result = config(tmp_path, "--data", str(tmp_path / "validator-0"))
    assert result.returncode == 0, result.output
    users = acl_users(tmp_path)
    assert c.meters[2].id in users
    assert c.meters[0].id not in users and c.meters[1].id not in users
    assert {u for u in users if u.startswith("node-")} == {f"node-{v.id}" for v in c.validators}
    assert "left out 2 meter(s)" in result.output
    assert f"{c.meters[0].id} (revoked at height" in result.output
    assert f"{c.meters[1].id} (its owner left the community)" in result.output
    # from the genesis alone all three meters are there
    assert config(tmp_path, "--genesis", str(tmp_path / "genesis.toml")).returncode == 0
    assert {m.id for m in c.meters} <= set(acl_users(tmp_path))


def test_exclude_drops_an_account_by_name_or_key_id(tmp_path: Path, revoked) -> None:
    c = revoked
    validator = c.validators[2].id
    args = ["--genesis", str(tmp_path / "genesis.toml"), "--exclude", c.meters[2].id, "--exclude", validator]
    result = config(tmp_path, *args)
    assert result.returncode == 0, result.output
    users = acl_users(tmp_path)
    assert c.meters[2].id not in users and f"node-{validator}" not in users
    assert c.meters[0].id in users


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--exclude", "no-such-account"], "--exclude no-such-account: no such account"),
        (["--meter", "METER0"], "revoked at height"),
        (["--genesis", "GENESIS"], "not both"),
        ([], "give --genesis FILE"),
    ],
)
def test_chain_state_mistakes_are_one_line_errors(tmp_path: Path, revoked, args, expected) -> None:
    args = [
        a.replace("METER0", revoked.meters[0].id).replace("GENESIS", str(tmp_path / "genesis.toml"))
        for a in args
    ]
    source = [] if args == [] else ["--data", str(tmp_path / "validator-0")]
    result = config(tmp_path, *source, *args)
    assert result.returncode != 0
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_data_must_be_a_node_store(tmp_path: Path) -> None:
    result = config(tmp_path, "--data", str(tmp_path))
    assert result.returncode != 0 and "no node store there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def crl_serials(certs: Path) -> set[int]:
    crl = x509.load_pem_x509_crl((certs / "community-ca.crl").read_bytes())
    ca = x509.load_pem_x509_certificate((certs / "community-ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.next_update_utc == ca.not_valid_after_utc  # never expires before the CA
    return {entry.serial_number for entry in crl}


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_certs_keep_a_crl_and_revoke(tmp_path: Path, revoked) -> None:
    c = revoked
    certs, clients = tmp_path / "certs", tmp_path / "certs" / "clients"
    made = peerwatt("broker", "certs", "--out", str(certs), "--genesis", str(tmp_path / "genesis.toml"))
    assert made.returncode == 0, made.stderr
    assert crl_serials(certs) == set()  # the CRL exists from the start: the broker's crlfile needs it
    m2 = c.meters[2].id
    before = serial(clients / f"{m2}.crt")

    revoked_m2 = peerwatt("broker", "certs", "--out", str(certs), "--revoke", m2)
    assert revoked_m2.returncode == 0, revoked_m2.stderr
    assert crl_serials(certs) == {before}
    assert not (clients / f"{m2}.crt").exists() and not (clients / f"{m2}.key").exists()
    assert f"revoked the certificate(s) of {m2}" in revoked_m2.stdout

    # --data: the meters the ledger revoked (or whose owner left) lose their certificates too
    old = {m.id: serial(clients / f"{m.id}.crt") for m in c.meters[:2]}
    again = peerwatt("broker", "certs", "--out", str(certs), "--data", str(tmp_path / "validator-0"))
    assert again.returncode == 0, again.stderr
    assert crl_serials(certs) == {before, *old.values()}
    # a later run from the genesis does not hand them new certificates
    genesis_run = peerwatt(
        "broker", "certs", "--out", str(certs), "--genesis", str(tmp_path / "genesis.toml")
    )
    assert genesis_run.returncode == 0, genesis_run.stderr
    assert not any((clients / f"{m.id}.crt").exists() for m in c.meters)
    assert "no new certificate for 3 account(s) revoked earlier" in genesis_run.stdout
    reissued = peerwatt("broker", "certs", "--out", str(certs), "--genesis", str(tmp_path / "genesis.toml"),
                        "--reissue", m2)  # fmt: skip
    assert reissued.returncode == 0, reissued.stderr
    assert serial(clients / f"{m2}.crt") not in crl_serials(certs)

    unknown = peerwatt("broker", "certs", "--out", str(certs), "--revoke", "nobody")
    assert unknown.returncode != 0 and "--revoke nobody: no certificate" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_cert_mode_config_names_the_crl_and_needs_it(tmp_path: Path, revoked) -> None:
    certs = tmp_path / "b" / "certs"
    made = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    result = config(tmp_path, "--genesis", str(tmp_path / "genesis.toml"))
    assert result.returncode == 0, result.output
    conf = (tmp_path / "b" / "mosquitto.conf").read_text().splitlines()
    assert f"crlfile {certs.absolute()}/community-ca.crl" in conf
    (certs / "community-ca.crl").unlink()  # a certs folder made before revocation existed
    result = config(tmp_path, "--genesis", str(tmp_path / "genesis.toml"))
    assert result.returncode != 0 and "has no community-ca.crl" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.integration
def test_password_mode_rerun_keeps_passwords_and_drops_a_left_out_account(
    tmp_path: Path, revoked, mosquitto_factory
) -> None:
    """Rerunning `broker config --auth password` keeps every remaining account's password (the
    households keep theirs) and drops the account left out; after a reload (SIGHUP) a real broker
    refuses that account and still accepts the others."""
    import os
    import signal
    import time

    from peerwatt.bus import BrokerConfig, MqttBus
    from peerwatt.ports import free_port
    from tests.conftest import require_tool
    from tests.support.procnet import wait_for

    require_tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    c = revoked
    port = free_port()
    (tmp_path / "p").mkdir()
    args = ["--genesis", str(tmp_path / "genesis.toml"), "--auth", "password", "--no-tls"]
    args += ["--port", str(port), "--bind", "127.0.0.1", "--local-port", "0"]
    first = config(tmp_path, *args)
    assert first.returncode == 0, first.output
    out = tmp_path / "b"
    before = (out / "peerwatt.passwd").read_text().splitlines()
    broker = mosquitto_factory(port=port, config_text=(out / "mosquitto.conf").read_text())
    broker.start()

    def bus(meter: str) -> MqttBus:
        secret = (out / "credentials" / f"{meter}.password").read_text().strip()
        return MqttBus(BrokerConfig(port=port, username=meter, password=secret), meter)

    gone, stays = c.meters[0].id, c.meters[2].id
    old_secret = (out / "credentials" / f"{gone}.password").read_text().strip()
    live = bus(gone)
    live.start()
    assert live.wait_connected(10), live.last_error

    again = config(tmp_path, *args, "--exclude", gone)
    assert again.returncode == 0, again.output
    after = (out / "peerwatt.passwd").read_text().splitlines()
    assert after == [line for line in before if not line.startswith(f"{gone}:")]
    assert not (out / "credentials" / f"{gone}.password").exists()
    reloads = broker.log_text().count("Reloading config.")
    os.kill(broker.pid, signal.SIGHUP)  # systemctl reload mosquitto
    wait_for(lambda: broker.log_text().count("Reloading config.") > reloads, 10, "the reload")

    again_gone = MqttBus(BrokerConfig(port=port, username=gone, password=old_secret), gone + "-again")
    kept = bus(stays)
    try:
        for b in (again_gone, kept):
            b.start()
        assert kept.wait_connected(10), kept.last_error  # its password did not change
        wait_for(lambda: "Not authorized" in (again_gone.last_error or ""), 10, "the refusal")
        time.sleep(1.0)
        assert not again_gone.connected
        # Mosquitto 2.0.11 also ends the session the left-out account held open
        wait_for(lambda: not live.connected, 10, "the open connection to end")
    finally:
        for b in (live, again_gone, kept):
            b.stop(flush_timeout_s=0)
