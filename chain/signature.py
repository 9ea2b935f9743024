"""ECDSA P-256 / SHA-256 signatures as 64-byte r||s, base64url without padding, low-S only (RFC 6979 nonces).

Signing and verifying use `cryptography` (OpenSSL). We always emit low-S and reject high-S so
that a signature cannot be altered into a second valid one (no malleability).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

# Order of the P-256 group.
CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
HALF_ORDER = CURVE_ORDER // 2
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# RFC 6979 deterministic nonces: no dependence on the RNG at signing time, and the same message
# signed twice by one key gives the same bytes (re-runs of a simulation are byte-identical).
_ECDSA_SHA256_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


class SignatureError(Exception):
    """A signature that does not verify; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; raises ValueError on anything else."""
    if not isinstance(text, str) or "=" in text or not text.isascii():
        raise ValueError("not unpadded base64url")
    if any(c in text for c in "+/\n\r \t"):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None
    if b64url_encode(data) != text:  # non-canonical trailing bits
        raise ValueError("non-canonical base64url")
    return data


def encode_rs(r: int, s: int) -> str:
    """Encode (r, s) as b64url(r||s), normalising s to low-S."""
    if s > HALF_ORDER:
        s = CURVE_ORDER - s
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """Sign ``data`` (hashed with SHA-256) and return the low-S r||s signature as base64url."""
    r, s = decode_dss_signature(private_key.sign(data, _ECDSA_SHA256_DETERMINISTIC))
    return encode_rs(r, s)


def decode_rs(signature: str) -> tuple[int, int]:
    """Parse a signature into (r, s), enforcing length, range and low-S."""
    try:
        raw = b64url_decode(signature)
    except ValueError:
        raise SignatureError("bad_signature_encoding", "signature is not unpadded base64url") from None
    if len(raw) != 64:
        raise SignatureError("bad_signature_length", f"signature is {len(raw)} bytes, expected 64")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise SignatureError("bad_signature", "signature scalar out of range")
    if s > HALF_ORDER:
        raise SignatureError("high_s", "signature is not low-S")
    return r, s


def verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature: str) -> None:
    """Verify a b64url r||s signature over ``data``; raise SignatureError with a reason if bad."""
    r, s = decode_rs(signature)
    try:
        public_key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError("bad_signature", "signature does not verify") from None
