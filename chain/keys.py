"""Key pairs for meters, validators and members: ECDSA P-256, PKCS#8 files with mode 0600, key ids.

Key id = hex of the first 16 bytes of SHA-256 of the compressed SEC1 public key (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class KeyFileError(Exception):
    """A key file or encoded key that cannot be used; the message names the cause and the fix."""


def generate_private_key() -> PrivateKey:
    """A fresh P-256 private key from the OS's random source."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_sec1(public_key: PublicKey) -> bytes:
    """The 33-byte compressed SEC1 encoding of a public key."""
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def key_id(public_key: PublicKey) -> str:
    """Hex of the first 16 bytes of SHA-256 over the compressed public key (32 hex chars)."""
    return hashlib.sha256(public_key_sec1(public_key)).digest()[:16].hex()


def public_key_pem(public_key: PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(data: bytes | str) -> PublicKey:
    """Parse a P-256 public key from PEM, or from SEC1 bytes / hex (compressed or not).

    Points not on the curve and other curves are refused with KeyFileError.
    """
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            text = raw.strip()
            if all(c in b"0123456789abcdefABCDEF" for c in text) and len(text) in (66, 130):
                raw = bytes.fromhex(text.decode("ascii"))
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise KeyFileError(f"not a valid P-256 public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyFileError("public key is not an ECDSA P-256 key")
    return key


def save_private_key(key: PrivateKey, path: str | os.PathLike, passphrase: bytes | None = None) -> Path:
    """Write a private key as PKCS#8 PEM with mode 0600; never overwrites an existing file."""
    path = Path(path)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite a key (move it away first)"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)
    return path


def check_key_file_mode(path: str | os.PathLike) -> None:
    """Refuse a private key file that group or others can read or write."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is accessible by group/others (mode {mode:04o}); fix: chmod 600 {path}"
        )


MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM P-256 key is a few hundred bytes, encrypted ones too
# How cryptography (51) says a key is encrypted with a cipher or key derivation it lacks (ARIA,
# Camellia, SM4, AES-OFB, PBKDF2 with HMAC-MD5, PBE-SHA1-2DES), whatever the passphrase: PKCS#8,
# then an OpenSSL "traditional" PEM (DEK-Info). A wrong passphrase is "Incorrect password".
_UNSUPPORTED_ENCRYPTION = ("Unknown key encryption algorithm", "Key encrypted with unknown cipher")


def _private_key_pem(path: Path) -> bytes:
    """The bytes of a file that looks like a PEM private key; anything else (a folder, an empty
    file, a public key, a genesis) is named as what it is, before its mode is looked at. The
    contents never go into a message."""
    try:
        if path.is_dir():
            raise KeyFileError(f"key file {path} is a folder: give the private key file (NAME.key)")
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a device or a FIFO: reading would never end
            raise KeyFileError(f"key file {path} is not a regular file: give the private key file (NAME.key)")
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} ({info.st_size} bytes) is too large to be a private key file")
        pem = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise KeyFileError(f"key file {path} not found (create one with `peerwatt keys new`)") from None
    except PermissionError:
        raise KeyFileError(f"key file {path} is not readable by this user") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if not pem.strip():
        raise KeyFileError(f"key file {path} is empty: give the private key file (NAME.key)")
    if b"-----BEGIN PUBLIC KEY-----" in pem and b"PRIVATE KEY-----" not in pem:
        raise KeyFileError(f"{path} is a public key: give the private key file (NAME.key) beside it")
    if not pem.lstrip().startswith(b"-----BEGIN ") or b"PRIVATE KEY-----" not in pem:
        raise KeyFileError(f"{path} is not a PKCS#8 PEM private key")
    return pem


def load_private_key(path: str | os.PathLike, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PKCS#8 PEM P-256 private key, refusing files with permissions wider than 0600."""
    path = Path(path)
    pem = _private_key_pem(path)
    try:
        check_key_file_mode(path)
    except OSError as exc:  # gone since it was read
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyFileError(f"key file {path} is encrypted: give its passphrase") from None
        raise KeyFileError(f"key file {path} is not encrypted: do not give a passphrase") from None
    except ValueError as exc:
        if passphrase is not None and str(exc).startswith(_UNSUPPORTED_ENCRYPTION):
            why = str(exc).rstrip(".")
            raise KeyFileError(
                f"cannot decrypt key file {path}: its encryption is not supported ({why}); re-encrypt "
                f"it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {path} -out NEW.key` and use NEW.key"
            ) from None
        if passphrase is not None:
            raise KeyFileError(f"cannot decrypt key file {path}: wrong passphrase?") from None
        raise KeyFileError(f"{path} is not a PKCS#8 PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{path} is not an ECDSA P-256 private key")
    return key
