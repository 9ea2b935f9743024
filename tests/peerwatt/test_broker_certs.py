"""`peerwatt broker certs` (make_certs) and `community add-meter` never replace the community CA:
a certs folder whose CA key (or certificate) is missing, or whose key belongs to another CA, is
refused with one line and left as it was (a new CA would cut off every node and household)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from chain.keys import generate_private_key
from peerwatt.broker.access import Account
from peerwatt.broker.certs import _pem_key, make_certs
from peerwatt.errors import UserError
from peerwatt.onboarding import make_join_request
from tests.support.cli import peerwatt

ACCOUNTS = [Account("node-a", "observer"), Account("m1", "meter")]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove a refusal changed nothing)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def signed_by_ca(certs: Path, cert: Path) -> bool:
    ca = x509.load_pem_x509_certificate((certs / "community-ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    make_certs(out, community="t", hosts=("127.0.0.1",), accounts=ACCOUNTS)
    return out


def test_a_rerun_reuses_the_ca_and_signs_new_accounts_with_it(certs: Path) -> None:
    ca = (certs / "community-ca.crt").read_bytes()
    result = make_certs(certs, community="t", accounts=[*ACCOUNTS, Account("m2", "meter")])
    assert result.made == "reused" and result.issued == 1 and result.kept == 2
    assert (certs / "community-ca.crt").read_bytes() == ca
    assert signed_by_ca(certs, certs / "clients" / "m2.crt")


@pytest.mark.parametrize("crl", ["with its CRL", "without a CRL"])
def test_a_missing_ca_key_is_refused_and_changes_nothing(certs: Path, tmp_path: Path, crl: str) -> None:
    (certs / "community-ca.key").rename(tmp_path / "offline.key")
    if crl == "without a CRL":
        (certs / "community-ca.crl").unlink()
    before = files(certs)
    for kwargs in ({"accounts": [*ACCOUNTS, Account("m2", "meter")]}, {"revoke": ("m1",)}):
        with pytest.raises(UserError, match=r"community-ca\.key is missing.*bring it back.*offline copy"):
            make_certs(certs, community="t", **kwargs)  # type: ignore[arg-type]
        assert files(certs) == before
    assert signed_by_ca(certs, certs / "broker.crt")


def test_a_ca_key_of_another_ca_is_refused_and_changes_nothing(certs: Path) -> None:
    (certs / "community-ca.key").write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    before = files(certs)
    with pytest.raises(UserError, match=r"community-ca\.key is not the key of .*community-ca\.crt"):
        make_certs(certs, community="t", accounts=ACCOUNTS)
    assert files(certs) == before


def test_a_missing_ca_certificate_is_refused_and_changes_nothing(certs: Path) -> None:
    (certs / "community-ca.crt").unlink()
    before = files(certs)
    with pytest.raises(UserError, match=r"community-ca\.crt is missing.*bring it back"):
        make_certs(certs, community="t", accounts=ACCOUNTS)
    assert files(certs) == before


@pytest.mark.parametrize("left", ["community-ca.crl", "broker.crt", "clients/m1.crt"])
def test_no_ca_beside_what_it_signed_is_refused(certs: Path, left: str) -> None:
    """Without community-ca.crt and .key a new CA would be made next to certificates (or a CRL)
    the old one signed, which the broker and every client would then refuse."""
    for path in certs.rglob("*"):
        if path.is_file() and str(path.relative_to(certs)) != left:
            path.unlink()
    before = files(certs)
    with pytest.raises(UserError, match=rf"no community CA .* but {re.escape(left)} it signed"):
        make_certs(certs, community="t", accounts=ACCOUNTS)
    assert files(certs) == before


def test_cli_missing_ca_key_is_one_line_exit_2(certs: Path, tmp_path: Path) -> None:
    (certs / "community-ca.key").rename(tmp_path / "offline.key")
    before = files(certs)
    r = peerwatt("broker", "certs", "--out", str(certs), "--host", "127.0.0.1", "--force")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {certs / 'community-ca.key'} is missing"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert files(certs) == before


def test_add_meter_without_the_ca_key_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "c"
    init = peerwatt(
        "community", "init", "--community", "t", "--validators", "1", "--validator-host", "127.0.0.1",
        "--interval", "60", "--feed-in-price", "0.08", "--retail-price", "0.30", "--timezone", "UTC",
        "--broker-host", "127.0.0.1", "--out", str(out), stdin="",
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    request = make_join_request(
        generate_private_key(), generate_private_key(), community="t", name="Household 1",
        serial="S1", profile="sdm630", capacity_w=5000,
    )  # fmt: skip
    (tmp_path / "req.txt").write_text(request.text())
    (out / "broker" / "certs" / "community-ca.key").rename(tmp_path / "offline.key")
    before = files(out)
    r = peerwatt("community", "add-meter", "--dir", str(out), str(tmp_path / "req.txt"))
    assert r.returncode == 2 and "community-ca.key is missing" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert files(out) == before


def test_a_foreign_crl_is_refused_before_a_revocation_moves_anything(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_certs(other, community="t")
    (certs / "community-ca.crl").write_bytes((other / "community-ca.crl").read_bytes())
    before = files(certs)
    with pytest.raises(UserError, match=r"community-ca\.crl was not signed by"):
        make_certs(certs, community="t", revoke=("m1",))
    assert files(certs) == before  # m1's certificate and key are where they were
