"""Independent re-checks for auditors (`peerwatt verify --independent`, `peerwatt msg verify --independent`).

The normal path verifies signatures with `cryptography` (OpenSSL) and writes canonical JSON with
orjson. This module checks the same bytes with other implementations, so an auditor need not trust
a single library:

- signatures with the pure-Python `ecdsa` package (P-256, SHA-256, r||s as base64url without
  padding, low-S required as our rules say); the key comes from its SEC1 encoding (hex) as the
  chain state records it, and the signer's key id is recomputed from it;
- canonical encodings with `rfc8785`: stored bytes are parsed with the standard library's `json`
  and must equal ``rfc8785.dumps`` of the parsed value (a float, a duplicate key, another key
  order or any whitespace makes them differ); the signed bytes are rebuilt as
  ``b"peerwatt/v1\\n" + rfc8785.dumps(envelope without "sig")``;
- hashes (transaction ids, header hashes) with CPython's built-in SHA-256 rather than OpenSSL's,
  where the interpreter has one.

It is slow (the `ecdsa` package verifies some 600 signatures/s on one core, OpenSSL ~16,000), so
:func:`verify_store_independent` reports an estimate after a measured sample and progress as it
goes. It runs alongside :func:`chain.verify.verify_store`, which supplies the chain state before
each block: the keys in force at that height (genesis plus governance). A payload erased by a
governance decision (GDPR) is counted as skipped, not as a failure; whether the erasure was
allowed is the normal path's check. A mismatch raises :class:`chain.verify.VerifyError` naming the
height and what failed.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import ecdsa
import rfc8785
from ecdsa.util import sigdecode_string

from chain.app import Application
from chain.execute import signer_key
from chain.messages import SIGNING_PREFIX
from chain.store import Store, StoreError, sql_type
from chain.verify import VerifyError, VerifyReport, name_corruption, verify_store

try:  # CPython's own SHA-256 (HACL* / libtomcrypt-derived), not OpenSSL's
    from _sha2 import sha256 as _sha256  # Python >= 3.12
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha256 import sha256 as _sha256  # Python 3.11
    except ImportError:
        from hashlib import sha256 as _sha256

CURVE = ecdsa.NIST256p
ORDER = CURVE.order
HALF_ORDER = ORDER // 2
SAMPLE = 50  # signatures timed before the estimate is given


class IndependentError(Exception):
    """A check the independent implementations refuse; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def sha256(data: bytes) -> bytes:
    """SHA-256 by CPython's built-in implementation (not OpenSSL) where available."""
    return _sha256(data).digest()


@lru_cache(maxsize=4096)
def verifying_key(sec1_hex: str) -> ecdsa.VerifyingKey:
    """An `ecdsa` P-256 key from SEC1 bytes in hex (compressed or not), parsed once per key."""
    try:
        key = ecdsa.VerifyingKey.from_string(bytes.fromhex(sec1_hex), curve=CURVE, hashfunc=_sha256)
    except (ValueError, ecdsa.MalformedPointError) as exc:
        raise IndependentError("bad_key", f"not a P-256 public key: {exc}") from None
    return key


def verifying_key_from_text(data: bytes) -> ecdsa.VerifyingKey:
    """An `ecdsa` P-256 key from a public key file: PEM (SubjectPublicKeyInfo) or SEC1 hex."""
    text = data.decode("ascii", "replace").strip()
    if text.startswith("-----BEGIN"):
        try:
            key = ecdsa.VerifyingKey.from_pem(text, hashfunc=_sha256)
        except (ValueError, ecdsa.MalformedPointError, ecdsa.der.UnexpectedDER) as exc:
            raise IndependentError("bad_key", f"not a P-256 public key: {exc}") from None
        if key.curve != CURVE:
            raise IndependentError("bad_key", f"key is on {key.curve.name}, not P-256")
        return key
    return verifying_key(text)


def key_id(key: ecdsa.VerifyingKey) -> str:
    """Hex of the first 16 bytes of SHA-256 over the compressed SEC1 key (DESIGN.md)."""
    return sha256(key.to_string("compressed"))[:16].hex()


def _b64url(text: Any) -> bytes:
    if not isinstance(text, str) or not text.isascii() or "=" in text:
        raise IndependentError("bad_signature_encoding", "signature is not unpadded base64url")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise IndependentError("bad_signature_encoding", "signature is not unpadded base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise IndependentError("bad_signature_encoding", "signature is not canonical base64url")
    return raw


def verify_signature(key: ecdsa.VerifyingKey | str, data: bytes, signature: Any) -> None:
    """Verify a base64url r||s P-256 signature over ``data`` (hashed with SHA-256) with `ecdsa`.

    ``key``: an `ecdsa` key or SEC1 hex. Low-S is required. Raises IndependentError.
    """
    if isinstance(key, str):
        key = verifying_key(key)
    raw = _b64url(signature)
    if len(raw) != 64:
        raise IndependentError("bad_signature_length", f"signature is {len(raw)} bytes, expected 64")
    r, s = sigdecode_string(raw, ORDER)
    if not (0 < r < ORDER and 0 < s < ORDER):
        raise IndependentError("bad_signature", "signature scalar out of range")
    if s > HALF_ORDER:
        raise IndependentError("high_s", "signature is not low-S")
    try:
        key.verify(raw, data, hashfunc=_sha256, sigdecode=sigdecode_string)
    except ecdsa.BadSignatureError:
        raise IndependentError("bad_signature", "ecdsa: signature does not verify") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise IndependentError("not_canonical", "duplicate object key")
    return obj


def parse_canonical(stored: bytes) -> Any:
    """Parse stored bytes and check they are exactly ``rfc8785.dumps`` of the parsed value."""
    try:
        value = json.loads(bytes(stored).decode("utf-8"), object_pairs_hook=_no_duplicates)
        again = rfc8785.dumps(value)
    except IndependentError:
        raise
    except (rfc8785.CanonicalizationError, ValueError, RecursionError) as exc:
        raise IndependentError("not_canonical", f"rfc8785: {exc}") from None
    if again != bytes(stored):
        raise IndependentError("not_canonical", "rfc8785: bytes differ from the canonical encoding")
    return value


def signing_bytes(envelope: dict[str, Any]) -> bytes:
    """The bytes an envelope's signature covers, rebuilt with `rfc8785`."""
    try:
        return SIGNING_PREFIX + rfc8785.dumps({k: v for k, v in envelope.items() if k != "sig"})
    except rfc8785.CanonicalizationError as exc:
        raise IndependentError("not_canonical", f"rfc8785: {exc}") from None


def check_envelope(envelope: dict[str, Any], key: ecdsa.VerifyingKey | str) -> None:
    """The key belongs to the envelope's signer and the signature verifies (both with `ecdsa`)."""
    if not isinstance(envelope, dict):
        raise IndependentError("bad_type", "envelope is not a JSON object")
    if isinstance(key, str):
        key = verifying_key(key)
    if key_id(key) != envelope.get("signer"):
        raise IndependentError("signer_mismatch", "the public key does not belong to the signer")
    verify_signature(key, signing_bytes(envelope), envelope.get("sig"))


def check_stored_envelope(stored: bytes, key: ecdsa.VerifyingKey | str) -> dict[str, Any]:
    """A stored envelope: canonical by `rfc8785`, and signed by ``key`` (checked with `ecdsa`)."""
    envelope = parse_canonical(stored)
    check_envelope(envelope, key)
    return envelope


@dataclass
class IndependentReport:
    signatures: int = 0
    encodings: int = 0
    erased_skipped: int = 0
    seconds: float = 0.0
    total: int = 0
    erased: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.signatures / self.seconds if self.seconds else 0.0
        line = (
            f"independent: {self.signatures} signatures re-checked with ecdsa, {self.encodings} "
            f"encodings with rfc8785 in {self.seconds:.2f} s ({rate:.0f} signatures/s)"
        )
        if self.erased_skipped:
            line += f"; {self.erased_skipped} erased payload(s) skipped"
        return line


class _Checker:
    """The per-block hook for ``verify_store``: re-checks block ``height`` with the chain state
    in force before it."""

    def __init__(
        self,
        store: Store,
        progress: Callable[[int, int], None] | None,
        estimate: Callable[[float, int], None] | None,
    ) -> None:
        self.store = store
        self.progress = progress
        self.estimate = estimate
        self.report = IndependentReport()
        self.report.total = store.count("txs") + store.count("seals")
        self.known: dict[str, str] = {}  # key id -> SEC1 hex of every key seen in force
        self.started = time.perf_counter()
        self.estimated = False
        if self.report.total == 0:
            self._estimate()

    def _estimate(self) -> None:
        self.estimated = True
        if self.estimate is not None:
            done = self.report.signatures + self.report.erased_skipped
            elapsed = time.perf_counter() - self.started
            per = elapsed / done if done else 0.0
            self.estimate(per * self.report.total, self.report.total)

    def _tick(self) -> None:
        done = self.report.signatures + self.report.erased_skipped
        if not self.estimated and done >= min(SAMPLE, self.report.total):
            self._estimate()
        if self.progress is not None:
            self.progress(done, self.report.total)

    def _key(self, sec1: str | None, signer: str, state_known: bool) -> str | None:
        """The key to check ``signer``'s signature with: ``sec1`` as the state has it."""
        if sec1 is not None:
            self.known[signer] = sec1
        elif not state_known:
            # Re-execution stopped at an erasure: the state is that of the last executed block.
            # A key id is the hash of its key, so a key seen in force earlier is still this key.
            sec1 = self.known.get(signer)
        return sec1

    def __call__(self, height: int, chain: dict[str, Any], state_known: bool) -> None:
        try:
            self._block(height, chain, state_known)
        except IndependentError as exc:
            raise VerifyError(height, f"independent check: {exc}") from None

    def _block(self, height: int, chain: dict[str, Any], state_known: bool) -> None:
        row = self.store.block_row(height)
        if row is None:
            return  # the normal path names it
        _, stored_hash, _, stored_header, _, _ = row
        try:
            parse_canonical(stored_header)
        except IndependentError as exc:
            raise IndependentError(exc.reason, f"header: {exc.detail}") from None
        header_hash = sha256(bytes(stored_header))
        if bytes(stored_hash) != header_hash:
            raise IndependentError("bad_hash", "stored block hash is not SHA-256 of the header")
        self.report.encodings += 1
        for idx, tx_hash, signer, _, _ in self.store.tx_rows(height):
            payload = self.store.payload(bytes(tx_hash))
            if payload is None:
                self.report.erased_skipped += 1
                self.report.erased.append(bytes(tx_hash).hex())
                self._tick()
                continue
            what = f"transaction {idx}"
            if sha256(payload) != bytes(tx_hash):
                raise IndependentError("bad_hash", f"{what}: payload is not the SHA-256 preimage of its id")
            sec1 = self._key(signer_key(chain, signer), signer, state_known)
            if sec1 is None:
                raise IndependentError("unknown_signer", f"{what}: signer {signer} has no key at this height")
            self._envelope(what, payload, sec1)
        for idx, _kind, data in self.store.result_rows(height):
            try:
                parse_canonical(data)
            except IndependentError as exc:
                raise IndependentError(exc.reason, f"result {idx}: {exc.detail}") from None
            self.report.encodings += 1
        rounds: dict[object, set[str]] = {}
        for validator, envelope in self.store.seal_rows(height):
            what = f"seal of {validator}"
            entry = chain["validators"].get(validator)
            sec1 = self._key(entry["key"] if entry else None, validator, state_known)
            if sec1 is None:
                raise IndependentError("not_a_validator", f"{what}: not a validator at this height")
            seal = self._envelope(what, envelope, sec1)
            body = seal.get("body")
            signed = (body.get("height"), body.get("header")) if isinstance(body, dict) else None
            if signed != (height, header_hash.hex()):
                raise IndependentError("wrong_header", f"{what}: signs another header")
            rounds.setdefault(body.get("round"), set()).add(validator)
        if max((len(v) for v in rounds.values()), default=0) < chain["quorum"] and state_known:
            raise IndependentError("no_quorum", f"block {height}: no round with {chain['quorum']} seals")
        created = parse_canonical(stored_header).get("round")
        if isinstance(created, int) and state_known:  # final in the round it names or later
            quorum = chain["quorum"]
            early = [r for r, v in rounds.items() if isinstance(r, int) and r < created and len(v) >= quorum]
            if early:
                raise IndependentError(
                    "bad_round", f"block {height}: created in round {created}, sealed in round {min(early)}"
                )

    def _envelope(self, what: str, stored: bytes, sec1: str) -> dict[str, Any]:
        try:
            envelope = check_stored_envelope(bytes(stored), sec1)
        except IndependentError as exc:
            raise IndependentError(exc.reason, f"{what}: {exc.detail}") from None
        self.report.signatures += 1
        self.report.encodings += 1
        self._tick()
        return envelope

    def finish(self) -> None:
        try:
            parse_canonical(self.store.genesis_doc())
        except IndependentError as exc:
            raise VerifyError(0, f"independent check: genesis document: {exc}") from None
        except StoreError as exc:
            raise VerifyError(0, f"independent check: {exc}") from None
        self.report.encodings += 1
        row = self.store.conn.execute("SELECT height, state FROM local_snapshot WHERE id = 0").fetchone()
        if row is not None:
            if type(row[1]) is not bytes:
                raise VerifyError(
                    row[0] if type(row[0]) is int else 0,
                    f"independent check: state snapshot is stored as {sql_type(row[1])}, not BLOB",
                )
            try:
                parse_canonical(row[1])
            except IndependentError as exc:
                raise VerifyError(row[0], f"independent check: state snapshot: {exc}") from None
            self.report.encodings += 1
        if not self.estimated:
            self._estimate()
        self.report.seconds = time.perf_counter() - self.started


def verify_store_independent(
    store: Store,
    app: Application,
    *,
    progress: Callable[[int, int], None] | None = None,
    estimate: Callable[[float, int], None] | None = None,
) -> tuple[VerifyReport, IndependentReport]:
    """The normal ``verify_store`` plus the independent re-checks, block by block.

    ``progress(done, total)`` is called after each signature (erased payloads count as done);
    ``estimate(seconds, total)`` once, after the first ``SAMPLE`` signatures were timed.
    Raises VerifyError naming the first bad height (an independent failure says so).
    """
    try:
        try:
            checker = _Checker(store, progress, estimate)
        except sqlite3.DatabaseError as exc:
            raise VerifyError(0, f"unreadable row: {exc}") from None
        report = verify_store(store, app, before_block=checker)
        try:
            checker.finish()
        except sqlite3.DatabaseError as exc:
            raise VerifyError(0, f"unreadable row: {exc}") from None
    except VerifyError as exc:  # a damaged file is named as such (SQLite's quick_check)
        raise name_corruption(store, exc) from None
    return report, checker.report
