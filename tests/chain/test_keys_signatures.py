"""Keys and signatures: file handling, key ids, and cross-verification with the `ecdsa` package."""

from __future__ import annotations

import hashlib
import os

import ecdsa
import pytest
from ecdsa.util import sigdecode_string, sigencode_string

from chain.keys import (
    KeyFileError,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    public_key_sec1,
    save_private_key,
)
from chain.signature import (
    CURVE_ORDER,
    HALF_ORDER,
    SignatureError,
    b64url_decode,
    b64url_encode,
    encode_rs,
    sign,
    verify,
)


def _ecdsa_vk(public_key) -> ecdsa.VerifyingKey:
    return ecdsa.VerifyingKey.from_string(public_key_sec1(public_key), curve=ecdsa.NIST256p)


def test_save_and_load_roundtrip_with_mode_0600(tmp_path):
    key = generate_private_key()
    path = save_private_key(key, tmp_path / "a.key")
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = load_private_key(path)
    assert key_id(loaded.public_key()) == key_id(key.public_key())


def test_refuses_to_overwrite(tmp_path):
    save_private_key(generate_private_key(), tmp_path / "a.key")
    with pytest.raises(KeyFileError, match="already exists"):
        save_private_key(generate_private_key(), tmp_path / "a.key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_key_readable_by_others(tmp_path, mode):
    path = save_private_key(generate_private_key(), tmp_path / "a.key")
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=r"chmod 600"):
        load_private_key(path)


def test_passphrase(tmp_path):
    key = generate_private_key()
    path = save_private_key(key, tmp_path / "a.key", passphrase=b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert key_id(load_private_key(path, b"correct horse").public_key()) == key_id(key.public_key())
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(path, b"wrong")
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(path)


@pytest.mark.parametrize(
    "how,why",
    [
        (
            ["pkcs8", "-topk8", "-v2", "aria-256-cbc"],
            "Unknown key encryption algorithm: 1.2.410.200046.1.1.12",
        ),
        (["pkcs8", "-topk8", "-v2", "camellia-256-cbc"], "Unknown key encryption algorithm"),
        (["ec", "-aria256"], "Key encrypted with unknown cipher"),  # OpenSSL's traditional PEM
    ],
)
def test_a_key_encrypted_with_a_cipher_we_lack_is_named_so_not_a_wrong_passphrase(tmp_path, how, why):
    """Found in a QA pass: a valid key that `openssl pkcs8 -topk8 -v2 aria-256-cbc` (or camellia)
    encrypted was "cannot decrypt key file k.key: wrong passphrase?", with the right passphrase.
    cryptography lacks the cipher (it says so, whatever the passphrase): the message says so and
    how to re-encrypt the key, which then loads; a wrong passphrase is still named as such."""
    import subprocess

    from tests.conftest import require_tool

    openssl = require_tool("openssl", "/usr/bin/openssl")
    key = generate_private_key()
    plain = save_private_key(key, tmp_path / "plain.key")
    path = tmp_path / "k.key"
    run = [openssl, *how, "-in", str(plain), "-out", str(path)]
    subprocess.run([*run, "-passout", "pass:right horse"], check=True, capture_output=True)
    os.chmod(path, 0o600)
    for passphrase in (b"right horse", b"wrong"):
        with pytest.raises(KeyFileError) as refused:
            load_private_key(path, passphrase)
        assert f"cannot decrypt key file {path}: its encryption is not supported ({why}" in str(refused.value)
        assert "wrong passphrase" not in str(refused.value)
        assert f"openssl pkcs8 -topk8 -v2 aes-256-cbc -in {path} -out NEW.key" in str(refused.value)
    new = tmp_path / "NEW.key"  # the advice, followed
    advice = [openssl, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(path), "-out", str(new)]
    subprocess.run(
        [*advice, "-passin", "pass:right horse", "-passout", "pass:new"], check=True, capture_output=True
    )
    os.chmod(new, 0o600)
    assert key_id(load_private_key(new, b"new").public_key()) == key_id(key.public_key())
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(new, b"wrong")


def test_missing_and_garbage_key_files(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        load_private_key(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("hello")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="PKCS#8"):
        load_private_key(bad)


def test_key_id_definition():
    key = generate_private_key()
    sec1 = public_key_sec1(key.public_key())
    assert len(sec1) == 33 and sec1[0] in (2, 3)
    assert key_id(key.public_key()) == hashlib.sha256(sec1).digest()[:16].hex()


def test_public_key_encodings_roundtrip():
    pub = generate_private_key().public_key()
    for encoded in (public_key_pem(pub), public_key_sec1(pub), public_key_sec1(pub).hex()):
        assert key_id(load_public_key(encoded)) == key_id(pub)


def test_point_not_on_curve_is_refused():
    sec1 = bytearray(public_key_sec1(generate_private_key().public_key()))
    uncompressed = b"\x04" + bytes(sec1[1:]) + b"\x00" * 31 + b"\x01"
    with pytest.raises(KeyFileError):
        load_public_key(uncompressed)


def test_project_signatures_verify_with_ecdsa_package():
    for i in range(20):
        key = generate_private_key()
        data = f"message {i}".encode()
        sig = b64url_decode(sign(key, data))
        assert int.from_bytes(sig[32:], "big") <= HALF_ORDER
        assert _ecdsa_vk(key.public_key()).verify(
            sig, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string
        )


def test_ecdsa_package_signatures_verify_with_project():
    for i in range(20):
        sk = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p)
        data = f"message {i}".encode()
        raw = sk.sign(data, hashfunc=hashlib.sha256, sigencode=sigencode_string)
        r, s = sigdecode_string(raw, CURVE_ORDER)
        public = load_public_key(sk.get_verifying_key().to_string("compressed"))
        verify(public, data, encode_rs(r, s))  # converted to low-S


def test_high_s_twin_is_rejected_but_would_verify_mathematically():
    key = generate_private_key()
    data = b"payload"
    sig = b64url_decode(sign(key, data))
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    twin = r.to_bytes(32, "big") + (CURVE_ORDER - s).to_bytes(32, "big")
    # the ecdsa package accepts the twin: only our low-S rule refuses it
    assert _ecdsa_vk(key.public_key()).verify(twin, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
    with pytest.raises(SignatureError) as err:
        verify(key.public_key(), data, b64url_encode(twin))
    assert err.value.reason == "high_s"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ("AAAA", "bad_signature_length"),
        ("not base64!", "bad_signature_encoding"),
        ("A" * 85 + "=", "bad_signature_encoding"),
        (b64url_encode(b"\x00" * 64), "bad_signature"),
        (b64url_encode(b"\xff" * 64), "bad_signature"),
    ],
)
def test_malformed_signatures(signature, reason):
    key = generate_private_key()
    with pytest.raises(SignatureError) as err:
        verify(key.public_key(), b"x", signature)
    assert err.value.reason == reason


def test_wrong_key_and_wrong_data_fail():
    key, other = generate_private_key(), generate_private_key()
    sig = sign(key, b"data")
    with pytest.raises(SignatureError):
        verify(other.public_key(), b"data", sig)
    with pytest.raises(SignatureError):
        verify(key.public_key(), b"datA", sig)


def test_what_is_not_a_private_key_is_named_before_its_mode(tmp_path):
    """A folder, an empty file, a public key or a genesis given as a private key is named as what
    it is, whatever its mode, and never with its contents (found in a QA pass: a folder raised
    IsADirectoryError; a .pub with mode 0644 was first asked to be chmod 600)."""
    folder = tmp_path / "adir"
    folder.mkdir()
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    pub = tmp_path / "v.pub"
    pub.write_text(public_key_pem(generate_private_key().public_key()))
    genesis = tmp_path / "genesis.toml"
    genesis.write_text('[community]\nid = "secret-looking-text"\n')
    for path, words in (
        (folder, "is a folder"),
        (tmp_path / "file" / "under.key", "not found"),
        (empty, "is empty"),
        (pub, "is a public key"),
        (genesis, "not a PKCS#8 PEM private key"),
    ):
        if path.exists() and not path.is_dir():
            os.chmod(path, 0o644)
        with pytest.raises(KeyFileError, match=words) as info:
            load_private_key(path)
        assert "chmod" not in str(info.value) and "secret-looking" not in str(info.value)
    (tmp_path / "file").write_text("")  # a path under a regular file
    with pytest.raises(KeyFileError, match="not found"):
        load_private_key(tmp_path / "file" / "under.key")
    real = save_private_key(generate_private_key(), tmp_path / "real.key")
    os.chmod(real, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(real)
