"""`peerwatt agent setup` checks the community's files and its folder before it probes the meter,
and writes its four files all or none (found in a QA pass: a broken community-ca.crt was taken and
failed only when the agent loaded TLS; a genesis.toml that is a folder was "not found"; a folder
the user cannot write gave a PermissionError traceback after the meter was probed)."""

from __future__ import annotations

import datetime
import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from chain.keys import public_key_sec1
from tests.support.cli import peerwatt
from tests.support.localnet import make_community
from tests.support.sim_meter import sim_meter_process

FILES = ["community-ca.crt", "genesis.toml"]


def ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oak-street CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def household(folder, ca: bytes | None = None):
    """A household/ folder as `community init` gives it: genesis.toml and community-ca.crt."""
    folder.mkdir()
    c = make_community(validators=1, members=1, app="market")
    (folder / "genesis.toml").write_text(
        f'[community]\nid = "{c.community}"\ntime = {c.genesis.time}\napp = "market"\n'
        f'[[validators]]\nkey = "{c.validators[0].sec1_hex}"\n'
        f'[[members]]\nkey = "{c.members[0].sec1_hex}"\n'
        f'[[meters]]\nkey = "{public_key_sec1(c.meters[0].key.public_key()).hex()}"\nserial = "SN1"\n'
        f'owner = "{c.members[0].id}"\ncapacity_w = 11000\n'
    )
    (folder / "community-ca.crt").write_bytes(ca_pem() if ca is None else ca)
    return folder


def setup(folder, port: int = 9):
    return peerwatt(
        "agent", "setup", "--dir", str(folder), "--host", "127.0.0.1", "--port", str(port),
        "--broker", "mqtts://127.0.0.1:8883", "--name", "H", "--yes", stdin="",
    )  # fmt: skip


def one_line(r, *words):
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    for word in words:
        assert word in r.stderr, (word, r.stderr)
    assert "looking for the meter" not in r.stdout  # refused before the probe


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


@pytest.mark.parametrize(
    "content, said",
    [(b"garbage\n", "no PEM certificate"), (RSA_KEY, "a private key"), (b"\xff\x00", "no PEM certificate")],
)
def test_a_community_ca_that_is_no_certificate_is_refused(tmp_path, content, said):
    folder = household(tmp_path / "h", ca=content)
    one_line(setup(folder), str(folder / "community-ca.crt"), "not a PEM X.509 certificate", said)
    assert sorted(os.listdir(folder)) == FILES


@pytest.mark.parametrize("name", FILES)
def test_a_community_file_that_is_a_folder_says_so(tmp_path, name):
    folder = household(tmp_path / "h")
    (folder / name).unlink()
    (folder / name).mkdir()
    one_line(setup(folder), str(folder / name), "is a folder")
    assert sorted(os.listdir(folder)) == FILES


def test_a_folder_that_cannot_be_written_is_refused_before_the_probe(tmp_path):
    """An immutable folder refuses root too (as a folder of another user refuses the household's)."""
    folder = household(tmp_path / "h")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        one_line(setup(folder), "cannot write", str(folder))
        assert sorted(os.listdir(folder)) == FILES
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_write_that_fails_leaves_none_of_the_four_files(tmp_path, monkeypatch, capsys):
    """The meter key's write refused (a full disk, a folder made read-only meanwhile): no member.key
    alone, no temporary file, one line."""
    import chain.keys
    from peerwatt.cli import main

    folder = household(tmp_path / "h")
    real, calls = chain.keys.save_private_key, []

    def save(key, path, passphrase=None):
        calls.append(path)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(path))
        return real(key, path, passphrase)

    monkeypatch.setattr(chain.keys, "save_private_key", save)
    with sim_meter_process("--profile", "sdm630") as (_proc, _line, port):
        with pytest.raises(SystemExit) as exited:
            main(["agent", "setup", "--dir", str(folder), "--host", "127.0.0.1", "--port", str(port),
                  "--broker", "mqtts://127.0.0.1:8883", "--name", "H", "--yes", "--no-qr"])  # fmt: skip
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert "cannot write" in err and "meter.key" in err and "Permission denied" in err, err
    assert sorted(os.listdir(folder)) == FILES
