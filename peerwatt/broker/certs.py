"""The community's certificates for Mosquitto: a community CA, the broker's certificate, one
client certificate per node and meter account, and the CA's revocation list (``community-ca.crl``),
made with ``cryptography`` (ECDSA P-256). ``peerwatt broker certs`` and the demo call
:func:`make_certs`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from peerwatt.broker.access import Account
from peerwatt.broker.files import make_dir, share_with, write_private
from peerwatt.errors import UserError

CLIENTS_DIR = "clients"
CA_CERT, CA_KEY, CA_CRL = "community-ca.crt", "community-ca.key", "community-ca.crl"
REVOKED_DIR = "revoked"
BROKER_CERT, BROKER_KEY = "broker.crt", "broker.key"
REPLACED_DIR = "replaced"  # the broker's earlier certificates (renewed): replaced/broker.<serial>.crt


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool):
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(out_dir: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate((out_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((out_dir / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"cannot reuse the community CA in {out_dir}: {exc}") from None
    return cert, key


def check_broker_certs(certs_dir: Path, community: str) -> None:
    """A folder of the broker's TLS files (``broker certs --out``) that Mosquitto can start from:
    the community's CA certificate, the broker's certificate issued by it, and the broker's key
    of that certificate; a one-line UserError naming the file otherwise (else Mosquitto alone
    finds out, when it starts)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    def load(name: str, loader):
        try:
            return loader((certs_dir / name).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            what = "private key" if name == BROKER_KEY else "certificate"
            reason = exc.strerror if isinstance(exc, OSError) else f"not a PEM {what}"
            raise UserError(f"--certs {certs_dir}: cannot use {name}: {reason}") from None

    ca = load(CA_CERT, x509.load_pem_x509_certificate)
    cert = load(BROKER_CERT, x509.load_pem_x509_certificate)
    key = load(BROKER_KEY, lambda data: serialization.load_pem_private_key(data, password=None))
    names = [a.value for a in ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [f"peerwatt {community} community CA"]:
        found = ", ".join(map(str, names)) or "no name"
        raise UserError(f"--certs {certs_dir}: {CA_CERT} is not community {community!r}'s CA ({found})")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise UserError(f"--certs {certs_dir}: {BROKER_CERT} was not issued by its {CA_CERT}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise UserError(f"--certs {certs_dir}: {BROKER_KEY} is not the key of {BROKER_CERT}")


def _existing_ca(out_dir: Path):
    """The community CA in ``out_dir`` as (certificate, key), or None when there is none and
    nothing it signed. A CA with its key or certificate missing, or with another CA's key, is a
    UserError: a new CA would cut off every node and household holding the old one."""
    from cryptography.hazmat.primitives import serialization

    crt, key = out_dir / CA_CERT, out_dir / CA_KEY
    if crt.exists() and key.exists():
        ca_cert, ca_key = _load_ca(out_dir)
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if ca_cert.public_key().public_bytes(*spki) != ca_key.public_key().public_bytes(*spki):
            raise UserError(
                f"{key} is not the key of {crt}: bring back the CA's own key (e.g. from its offline copy) "
                "and rerun"
            )
        return ca_cert, ca_key
    if crt.exists():
        raise UserError(
            f"{key} is missing (the key of {crt}): bring it back (e.g. from its offline copy) and rerun; "
            "a new CA would cut off every node and household"
        )
    if key.exists():
        raise UserError(
            f"{crt} is missing (the certificate of {key}): bring it back (every node and household has "
            f"a copy of {CA_CERT}) and rerun"
        )
    signed = [p for p in (out_dir / CA_CRL, out_dir / BROKER_CERT) if p.exists()]
    signed += sorted((out_dir / CLIENTS_DIR).glob("*.crt"))
    if signed:
        raise UserError(
            f"{out_dir} has no community CA ({CA_CERT}, {CA_KEY}) but {signed[0].relative_to(out_dir)} "
            "it signed: bring them back (the key e.g. from its offline copy), "
            "or use an empty --out for a new CA"
        )
    return None


def _new_ca(community: str, now: datetime.datetime, days: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"peerwatt {community} community CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert, ca_key, common_name: str, names: list, *, server: bool, now: datetime.datetime, days: int
):
    """A leaf certificate (P-256) from the community CA: the broker's (server) or an account's (client)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _host_names(hosts: list[str]) -> list:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def broker_host_names(crt: Path) -> list[str] | None:
    """The host names (DNS names and IP addresses) the broker's certificate ``crt`` is issued for,
    its common name first (as :func:`make_certs` issues it); None when there is no certificate
    to read or it names none."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    names = [str(n.value) for n in alt if isinstance(n, x509.DNSName | x509.IPAddress)]
    common = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common and common[0] in names:
        names.remove(common[0])
        names.insert(0, common[0])
    return names or None


def _set_aside(out_dir: Path, now: datetime.datetime) -> Path | None:
    """Move the broker's current certificate to replaced/broker.<serial>.crt (its key is
    overwritten by the new one); return where it went, or None when there is none."""
    from cryptography import x509

    crt = out_dir / BROKER_CERT
    if not crt.exists():
        return None
    try:
        tag = f"{x509.load_pem_x509_certificate(crt.read_bytes()).serial_number:x}"
    except ValueError:  # damaged: named by when it was replaced
        tag = now.strftime("%Y%m%dT%H%M%SZ")
    make_dir(out_dir / REPLACED_DIR)
    kept = out_dir / REPLACED_DIR / f"broker.{tag}.crt"
    os.replace(crt, kept)
    return kept


def _write_cert(directory: Path, stem: str, cert, key) -> None:
    from cryptography.hazmat.primitives import serialization

    write_private(directory / f"{stem}.key", _pem_key(key))
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _read_crl(out_dir: Path, ca_cert) -> tuple[list, int]:
    """The revoked entries and the CRL number of the CA's current CRL (none yet: [], 0)."""
    from cryptography import x509

    path = out_dir / CA_CRL
    if not path.exists():
        return [], 0
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM certificate revocation list: {exc}") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
        raise UserError(f"{path} was not signed by {out_dir / CA_CERT}: move it away and rerun")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return list(crl), number


def _write_crl(
    out_dir: Path, ca_cert, ca_key, crl: tuple[list, int], serials: list[int], now: datetime.datetime
) -> int:
    """(Re)write the CA's CRL with its earlier entries and number (``crl``, from :func:`_read_crl`)
    plus ``serials``; return how many it lists.

    Its next update is the CA's own expiry: OpenSSL refuses every client certificate once the CRL
    it checks against has expired, and the community CA publishes no other CRL."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    entries, number = crl
    listed = {entry.serial_number for entry in entries}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(ca_cert.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number + 1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    for serial in serials:
        if serial not in listed:
            listed.add(serial)
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = out_dir / CA_CRL
    tmp = path.with_suffix(".crl.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)  # public, like the CA certificate; the broker reads it after dropping root
    os.replace(tmp, path)
    return len(listed)


def _revoked_names(clients: Path) -> set[str]:
    """Accounts whose certificate was revoked (their record: clients/revoked/<name>.<serial>.crt)."""
    folder = clients / REVOKED_DIR
    if not folder.is_dir():
        return set()
    return {p.name.rsplit(".", 2)[0] for p in folder.glob("*.crt")}


def _take_back(clients: Path, name: str) -> int | None:
    """Move an account's current certificate to clients/revoked/ (its key is deleted); return its
    serial, or None when it has none."""
    from cryptography import x509

    crt = clients / f"{name}.crt"
    if not crt.exists():
        return None
    serial = x509.load_pem_x509_certificate(crt.read_bytes()).serial_number
    make_dir(clients / REVOKED_DIR)
    os.replace(crt, clients / REVOKED_DIR / f"{name}.{serial:x}.crt")
    (clients / f"{name}.key").unlink(missing_ok=True)
    return serial


@dataclass
class CertsResult:
    made: str  # "created" or "reused" (the CA)
    broker_cert: Path | None = None
    issued: int = 0
    kept: int = 0
    skipped: list[str] = field(default_factory=list)  # revoked earlier: no new certificate
    revoked: list[str] = field(default_factory=list)
    crl_entries: int = 0
    still: str | None = None
    replaced: Path | None = None  # where the broker's previous certificate went (renew_broker)


def make_certs(
    out_dir: Path,
    *,
    community: str,
    hosts: tuple[str, ...] = (),
    accounts: list[Account] = (),  # type: ignore[assignment]
    revoke: tuple[str, ...] = (),
    reissue: tuple[str, ...] = (),
    days: int = 825,
    ca_days: int = 3650,
    force: bool = False,
    renew_broker: bool = False,
    run_user: str = "mosquitto",
) -> CertsResult:
    """Make (or reuse) the community CA in ``out_dir``, issue the broker's certificate (``hosts``)
    and one client certificate per account (kept when present, skipped when revoked earlier unless
    in ``reissue``), revoke the certificates of ``revoke`` and (re)write the CRL.

    An account in ``reissue`` gets a new certificate and key also when its certificate is
    current (before it expires, or when its key was lost or leaked): the current one is revoked
    first, so one account never has two valid certificates (found in a QA pass: `broker certs
    --reissue` of such an account kept its certificate without a word).

    ``renew_broker``: the broker's certificate is replaced by a new one for ``hosts`` (with a new
    key, from the same CA) without ``force`` (which also reissues every client certificate); the
    previous one is moved to ``replaced/`` (``CertsResult.replaced``)."""
    from cryptography.hazmat.primitives import serialization

    if hosts and (out_dir / BROKER_CERT).exists() and not (force or renew_broker):
        raise UserError(f"{out_dir / BROKER_CERT} already exists (pass --force to replace it)")
    clients = out_dir / CLIENTS_DIR
    issuing = {account.name for account in accounts}  # (only an account issued to here is renewed)
    renewed = tuple(
        name
        for name in reissue
        if name in issuing and name not in revoke and (clients / f"{name}.crt").exists()
    )
    revoke = (*revoke, *renewed)
    for name in revoke:
        if not (clients / f"{name}.crt").exists() and name not in _revoked_names(clients):
            raise UserError(f"--revoke {name}: no certificate {clients / name}.crt to revoke")
    existing = _existing_ca(out_dir)
    make_dir(out_dir)
    now = datetime.datetime.now(datetime.UTC)
    if existing is not None:
        ca_cert, ca_key = existing
        result = CertsResult("reused")
    else:
        ca_cert, ca_key = _new_ca(community, now, ca_days)
        write_private(out_dir / CA_KEY, _pem_key(ca_key))
        (out_dir / CA_CERT).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        result = CertsResult("created")
    crl = _read_crl(out_dir, ca_cert)  # a CRL of another CA is refused before anything is revoked
    serials = []
    for name in revoke:
        serial = _take_back(clients, name)
        if serial is not None:
            serials.append(serial)
            result.revoked.append(name)
    result.crl_entries = _write_crl(out_dir, ca_cert, ca_key, crl, serials, now)
    if hosts:
        cert, key = _issue(
            ca_cert, ca_key, hosts[0], _host_names(list(hosts)), server=True, now=now, days=days
        )
        if renew_broker:
            result.replaced = _set_aside(out_dir, now)
        _write_cert(out_dir, BROKER_CERT.removesuffix(".crt"), cert, key)
        result.broker_cert = out_dir / BROKER_CERT
        # Mosquitto 2.0.11 started as root loads it after dropping to its user
        result.still = share_with([out_dir / BROKER_KEY], run_user)
    if accounts:
        make_dir(clients)
        revoked = _revoked_names(clients)
        for account in accounts:
            if account.name in revoked and account.name not in reissue:
                result.skipped.append(account.name)
                continue
            if (clients / f"{account.name}.crt").exists() and not force:
                result.kept += 1
                continue
            cert, key = _issue(ca_cert, ca_key, account.name, [], server=False, now=now, days=days)
            _write_cert(clients, account.name, cert, key)
            result.issued += 1
    return result
