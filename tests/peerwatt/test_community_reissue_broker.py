"""Renewing the broker's own server certificate in a `community init` layout (a QA pass): the
broker's `broker.crt` (made by `community init` for --broker-host, valid 825 days) had no renewal
command there; docs/operations.md said `community reissue` does not renew it, and
`community reissue --dir DIR broker` answered "no broker account broker".

`peerwatt community reissue --dir DIR broker` now issues the broker a new certificate and key for
the host names of its current one, from the same community CA (the clients, which trust the CA,
need nothing new), writes them into broker/certs and broker-etc/certs, keeps the old certificate
in broker/certs/replaced/, and prints the copy and the broker's restart. Without the CA or its key
it refuses in one line and changes nothing."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from peerwatt.broker.certs import check_broker_certs
from tests.peerwatt.test_cli_community import FLAGS
from tests.support.cli import peerwatt
from tests.support.community_broker import running_as_root


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(c: x509.Certificate) -> list:
    return list(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def crl_serials(path: Path) -> set[int]:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(path.read_bytes())}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def init(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "oak"
    made = peerwatt("community", "init", *FLAGS, *extra, "--validators", "2", "--out", str(out), stdin="")
    assert made.returncode == 0, made.stderr
    return out


def test_reissue_broker_renews_the_server_certificate_for_the_same_host_names(tmp_path: Path) -> None:
    out = init(tmp_path, "--broker-host", "broker.oak.example")
    certs, etc = out / "broker" / "certs", out / "broker-etc" / "certs"
    old, old_bytes = cert(certs / "broker.crt"), (certs / "broker.crt").read_bytes()
    old_key = (certs / "broker.key").read_bytes()
    clients = {p.name: p.read_bytes() for p in (certs / "clients").glob("*.crt")}
    crl = crl_serials(certs / "community-ca.crl")

    r = peerwatt("community", "reissue", "--dir", str(out), "broker")
    assert r.returncode == 0, r.stderr
    new = cert(certs / "broker.crt")
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc >= old.not_valid_after_utc
    assert sans(new) == sans(old) == [x509.DNSName("broker.oak.example")]
    assert new.subject == old.subject
    new.verify_directly_issued_by(cert(certs / "community-ca.crt"))  # the same CA: clients trust it
    assert (certs / "broker.key").read_bytes() != old_key
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = serialization.load_pem_private_key((certs / "broker.key").read_bytes(), password=None)
    assert key.public_key().public_bytes(*spki) == new.public_key().public_bytes(*spki)
    # the copy for the broker machine is the new one, and Mosquitto can start from it
    for name in ("broker.crt", "broker.key", "community-ca.crt"):
        assert (etc / name).read_bytes() == (certs / name).read_bytes(), name
    check_broker_certs(etc, "oak-street")
    assert (etc / "broker.key").stat().st_mode & 0o777 == 0o640
    # the old certificate is kept aside; no client certificate, and no CRL entry, changed
    assert (certs / "replaced" / f"broker.{old.serial_number:x}.crt").read_bytes() == old_bytes
    assert {p.name: p.read_bytes() for p in (certs / "clients").glob("*.crt")} == clients
    assert crl_serials(certs / "community-ca.crl") == crl
    text = r.stdout
    assert "new certificate for the broker (broker.oak.example)" in text
    assert f"{certs}/replaced/broker.{old.serial_number:x}.crt" in text
    assert "clients need nothing new" in text
    assert "if the broker runs on another machine (broker.oak.example)" in text
    assert f"cp {out}/broker-etc/certs/broker.crt /etc/mosquitto/peerwatt/certs/" in text
    assert f"cp {out}/broker-etc/certs/broker.key /etc/mosquitto/peerwatt/certs/" in text
    assert "systemctl restart mosquitto" in text

    # again: a third certificate, the second kept aside too
    second = new
    r = peerwatt("community", "reissue", "--dir", str(out), "broker")
    assert r.returncode == 0, r.stderr
    assert cert(certs / "broker.crt").serial_number not in {old.serial_number, second.serial_number}
    assert (certs / "replaced" / f"broker.{second.serial_number:x}.crt").exists()


def test_reissue_broker_without_the_ca_or_its_key_changes_nothing(tmp_path: Path) -> None:
    out = init(tmp_path)
    certs = out / "broker" / "certs"
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("community-ca.key", "community-ca.crt"):
        shutil.move(certs / name, aside / name)
        before = snapshot(out)
        r = peerwatt("community", "reissue", "--dir", str(out), "broker")
        assert r.returncode == 2, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "community-ca" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
        assert snapshot(out) == before
        shutil.move(aside / name, certs / name)


def test_no_account_of_the_community_is_named_broker(tmp_path: Path) -> None:
    """`broker` is the broker's own certificate, never an account: a community.toml that names an
    account `broker` (edited by hand) is refused in one line, and no client certificate is made."""
    out = init(tmp_path)
    community_toml = out / "community.toml"
    text = community_toml.read_text()
    community_toml.write_text(text.replace('nodes = ["', 'nodes = ["broker=observer", "', 1))
    before = snapshot(out)
    for command in (("reissue", "broker"), ("add-dashboard",)):
        r = peerwatt("community", command[0], "--dir", str(out), *command[1:])
        assert r.returncode == 2, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "account broker" in lines[0], r.stderr
        assert snapshot(out) == before


@pytest.mark.integration
@pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs Debian's mosquitto")
@pytest.mark.skipif(not running_as_root(), reason="starts Mosquitto as root, as the quickstart does")
def test_a_client_with_its_old_certificate_connects_to_the_restarted_broker() -> None:
    from tests.peerwatt.test_cli_community_reload import Client, quickstart_broker, restart

    root = Path(tempfile.mkdtemp(prefix="peerwatt-reissue-broker-"))
    root.chmod(0o755)  # Mosquitto, dropped to its own user, reads its files below this folder
    clients: list[Client] = []
    broker = None
    try:
        port, out, broker = quickstart_broker(root)
        certs = out / "broker" / "certs"
        ca = out / "validator-2" / "community-ca.crt"  # what a validator was given at init
        kid = next(p.stem for p in (certs / "clients").glob("node-*.crt"))
        folder = next(p.parent for p in out.glob("validator-*/node.toml") if kid in p.read_text())

        def connect() -> bytes:
            client = Client(port, ca, folder, "node-client", kid)  # its certificate from init
            clients.append(client)
            served = client.client.socket().getpeercert(binary_form=True)
            client.close()
            clients.remove(client)
            return served

        old = cert(certs / "broker.crt").public_bytes(serialization.Encoding.DER)
        assert connect() == old
        r = peerwatt("community", "reissue", "--dir", str(out), "broker")
        assert r.returncode == 0, r.stderr
        restart(broker, r.stdout)
        new = cert(certs / "broker.crt").public_bytes(serialization.Encoding.DER)
        assert new != old
        assert connect() == new  # the restarted broker serves the new one; the client is unchanged
    finally:
        for client in clients:
            client.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
