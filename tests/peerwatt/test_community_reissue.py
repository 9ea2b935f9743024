"""A new client certificate for one broker account (a QA pass that followed the docs): client
certificates are valid 825 days, and a community made with `peerwatt community init` had no way to
renew one. docs/agent.md sent the coordinator to `peerwatt broker certs --reissue <meter id>`,
which said "no such account among the accounts of --genesis/--data" there (a meter enrolled by
vote is in neither the genesis nor, as a broker account, anywhere but community.toml), and with
--data it kept the current certificate without a word (--reissue only lifted the refusal of an
account revoked earlier); `community add-meter` hands back the same certificate again.
`peerwatt community reissue --dir DIR ACCOUNT` now gives the account a new certificate and key,
puts the old one on the CRL, and copies the files where they go; `broker certs --reissue` of an
account whose certificate is current does the same for a broker set up by hand, and `broker certs`
on a community's folder says to use the community command."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from chain.keys import generate_private_key, load_private_key
from peerwatt.onboarding import make_join_request
from tests.peerwatt.test_cli_community import FLAGS
from tests.support.cli import peerwatt
from tests.support.community_broker import genesis_toml
from tests.support.localnet import Party, make_community


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl_serials(path: Path) -> set[int]:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(path.read_bytes())}


def community_with_a_meter(tmp_path: Path) -> tuple[Path, Party, Path, Path]:
    """A community folder (2 validators) whose household got its broker account (add-meter):
    (folder, the meter, its join request, the household's folder)."""
    out = tmp_path / "oak"
    made = peerwatt("community", "init", *FLAGS, "--validators", "2", "--out", str(out), stdin="")
    assert made.returncode == 0, made.stderr
    member = Party(load_private_key(out / "validator-1" / "validator.key"))
    meter = Party(generate_private_key())
    request = tmp_path / "join-1.txt"
    request.write_text(
        make_join_request(member.key, meter.key, community="oak-street", name="Household 1", serial="SN-1",
                          profile="sdm630", capacity_w=10_000).text()
    )  # fmt: skip
    household = tmp_path / "household-1"
    added = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(household))
    assert added.returncode == 0, added.stderr
    return out, meter, request, household


def test_reissue_gives_a_meter_a_new_certificate_and_revokes_the_old(tmp_path: Path) -> None:
    out, meter, request, household = community_with_a_meter(tmp_path)
    clients = out / "broker" / "certs" / "clients"
    old = cert(household / "broker-client.crt")
    old_key = (household / "broker-client.key").read_bytes()

    r = peerwatt("community", "reissue", "--dir", str(out), meter.id, "--out", str(household))
    assert r.returncode == 0, r.stderr
    new = cert(household / "broker-client.crt")
    assert new.serial_number != old.serial_number
    assert (household / "broker-client.key").read_bytes() != old_key
    assert new.subject == old.subject  # the same account (CN = the meter id)
    assert (clients / f"{meter.id}.crt").read_bytes() == (household / "broker-client.crt").read_bytes()
    ca = cert(out / "broker" / "certs" / "community-ca.crt")
    new.verify_directly_issued_by(ca)
    assert (household / "community-ca.crt").read_bytes() == (
        out / "broker" / "certs" / "community-ca.crt"
    ).read_bytes()
    # the old certificate is on the CRL, here and in the copy for the broker machine
    for crl in (
        out / "broker" / "certs" / "community-ca.crl",
        out / "broker-etc" / "certs" / "community-ca.crl",
    ):
        assert old.serial_number in crl_serials(crl) and new.serial_number not in crl_serials(crl)
    out_text = r.stdout
    assert f"new certificate for broker account {meter.id}" in out_text
    assert f"{household}/broker-client.crt and .key" in out_text
    assert f"cp {out}/broker-etc/certs/community-ca.crl /etc/mosquitto/peerwatt/certs/" in out_text
    assert "systemctl restart mosquitto" in out_text
    # install the new one before the restart: the order is said
    assert out_text.index("restart its agent") < out_text.index("on the broker, under systemd")
    # add-meter again hands back the new certificate, not the revoked one
    again = peerwatt(
        "community", "add-meter", "--dir", str(out), str(request), "--out", str(tmp_path / "h1b")
    )
    assert again.returncode == 0, again.stderr
    assert cert(tmp_path / "h1b" / "broker-client.crt").serial_number == new.serial_number

    # the join request names the meter as well; by default the files go where add-meter puts them
    r = peerwatt("community", "reissue", "--dir", str(out), str(request))
    assert r.returncode == 0, r.stderr
    third = cert(out / "households" / meter.id / "broker-client.crt")
    assert third.serial_number not in {old.serial_number, new.serial_number}
    assert {old.serial_number, new.serial_number} <= crl_serials(
        out / "broker-etc" / "certs" / "community-ca.crl"
    )


def test_reissue_of_a_validators_and_the_dashboards_accounts(tmp_path: Path) -> None:
    out, _, _, _ = community_with_a_meter(tmp_path)
    kid = load_validator_id(out / "validator-2")
    folder = out / "validator-2"
    old = cert(folder / "node-client.crt")
    r = peerwatt("community", "reissue", "--dir", str(out), f"node-{kid}")
    assert r.returncode == 0, r.stderr
    new = cert(folder / "node-client.crt")
    assert new.serial_number != old.serial_number
    assert (folder / "node-client.key").read_bytes() == (
        out / "broker" / "certs" / "clients" / f"node-{kid}.key"
    ).read_bytes()
    assert f"{folder}/node-client.crt and node-client.key" in r.stdout and "restart its node" in r.stdout
    operator_old = cert(folder / "operator-client.crt")
    r = peerwatt("community", "reissue", "--dir", str(out), f"operator-{kid}")
    assert r.returncode == 0, r.stderr
    assert cert(folder / "operator-client.crt").serial_number != operator_old.serial_number
    crl = crl_serials(out / "broker-etc" / "certs" / "community-ca.crl")
    assert {old.serial_number, operator_old.serial_number} <= crl

    assert (
        peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(tmp_path / "db")).returncode
        == 0
    )
    dash_old = cert(tmp_path / "db" / "broker-client.crt")
    r = peerwatt("community", "reissue", "--dir", str(out), "dashboard", "--out", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    assert cert(tmp_path / "db" / "broker-client.crt").serial_number != dash_old.serial_number


def load_validator_id(folder: Path) -> str:
    from chain.keys import key_id

    return key_id(load_private_key(folder / "validator.key").public_key())


def test_reissue_refuses_what_has_no_account(tmp_path: Path) -> None:
    out, meter, _, _ = community_with_a_meter(tmp_path)
    crl = (out / "broker" / "certs" / "community-ca.crl").read_bytes()
    for account, words in (
        ("0" * 32, f"no broker account {'0' * 32} in {out}/community.toml"),
        ("node-" + "1" * 32, "no broker account node-"),
    ):
        r = peerwatt("community", "reissue", "--dir", str(out), account)
        assert r.returncode == 2, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], r.stderr
        assert "a meter id (or its join request), node-<key id>, operator-<key id> or dashboard" in lines[0]
    # a meter the community revoked gets no certificate again (as add-meter refuses it)
    community_toml = out / "community.toml"
    text = community_toml.read_text()
    community_toml.write_text(
        text.replace(f'meters = ["{meter.id}"]\n', f'meters = []\nrevoked = ["{meter.id}"]\n')
    )
    r = peerwatt("community", "reissue", "--dir", str(out), meter.id)
    assert r.returncode == 2 and "was revoked by the community" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (out / "broker" / "certs" / "community-ca.crl").read_bytes() == crl  # nothing changed


def test_broker_certs_on_a_community_folder_names_the_community_command(tmp_path: Path) -> None:
    out, meter, _, _ = community_with_a_meter(tmp_path)
    certs = out / "broker" / "certs"
    r = peerwatt(
        "broker", "certs", "--out", str(certs), "--genesis", str(out / "genesis.toml"), "--reissue", meter.id
    )
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"peerwatt community reissue --dir {out} ACCOUNT" in lines[0]
    assert "no such account" not in lines[0]


def test_broker_certs_reissue_renews_a_current_certificate(tmp_path: Path) -> None:
    """A broker set up by hand: --reissue of an account whose certificate is current (before it
    expires, or its key was lost) was a silent no-op ("kept N existing")."""
    c = make_community(validators=1, members=2)
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(genesis_toml(c.genesis.doc))
    certs, clients = tmp_path / "certs", tmp_path / "certs" / "clients"
    assert peerwatt("broker", "certs", "--out", str(certs), "--genesis", str(genesis)).returncode == 0
    meter = c.meters[0].id
    old = cert(clients / f"{meter}.crt")
    other = cert(clients / f"{c.meters[1].id}.crt")
    r = peerwatt("broker", "certs", "--out", str(certs), "--genesis", str(genesis), "--reissue", meter)
    assert r.returncode == 0, r.stderr
    new = cert(clients / f"{meter}.crt")
    assert new.serial_number != old.serial_number
    assert crl_serials(certs / "community-ca.crl") == {old.serial_number}
    assert cert(clients / f"{c.meters[1].id}.crt").serial_number == other.serial_number  # the rest kept
    assert f"revoked the certificate(s) of {meter}" in r.stdout
    assert "issued 1 client certificate(s)" in r.stdout
