"""Signed envelopes: build and sign; parse strictly, check and verify, with a reason on refusal.

Wire and ledger form of an envelope = its canonical JSON (RFC 8785) including ``sig``; its
transaction hash = SHA-256 of those bytes. The signed bytes are
``b"peerwatt/v1\\n" + JCS(envelope without "sig")``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from chain import messages
from chain.canonical import CanonicalError, dumps_checked, loads_strict
from chain.keys import PrivateKey, PublicKey, key_id
from chain.schema import SchemaError
from chain.signature import SignatureError, sign, verify


class Rejected(Exception):
    """A message refused with a machine-readable ``reason`` code and a human ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # the message, when it parsed before it was refused, and whether its signature verified
        # under its signer's enrolled key (set by chain.engine.Ledger.intake): its signer can then
        # be told without parsing or verifying it again
        self.envelope: Envelope | None = None
        self.signed = False


# The parse refusals that depend on the time or the community's interval, not on the message's
# form: parse_envelope(now=None, interval_s=None) accepts such a message, so its signature can
# still be checked (chain.notice.authenticated). Any other parse refusal means no envelope.
CONTEXT_REASONS = frozenset({"expired", "from_future", "interval_not_aligned"})


@dataclass(slots=True)
class Envelope:
    """A parsed (and, once verified, trusted) message. ``body`` is already schema-checked."""

    v: int
    type: str
    community: str
    signer: str
    seq: int
    created: int
    expires: int
    body: dict[str, Any]
    sig: str
    _wire: bytes | None = field(default=None, repr=False, compare=False)
    _hash: bytes | None = field(default=None, repr=False, compare=False)

    def unsigned_dict(self) -> dict[str, Any]:
        """The envelope's fields without ``sig``."""
        return {
            "v": self.v,
            "type": self.type,
            "community": self.community,
            "signer": self.signer,
            "seq": self.seq,
            "created": self.created,
            "expires": self.expires,
            "body": self.body,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields, ``sig`` included, as plain JSON values."""
        data = self.unsigned_dict()
        data["sig"] = self.sig
        return data

    def signing_bytes(self) -> bytes:
        """The exact bytes the signature covers.

        Derived from the canonical wire bytes by cutting out the top-level ``"sig"`` member:
        keys are sorted, so it is the last occurrence (only ``signer``, ``type`` and ``v``
        follow, whose values cannot contain it). One JSON encoding serves hash and signature.
        """
        wire = self.to_bytes()
        member = b'"sig":' + dumps_checked(self.sig) + b","
        cut = wire.rfind(member)
        if cut < 0:  # not reachable for a checked envelope; keep the slow path as the definition
            return messages.SIGNING_PREFIX + dumps_checked(self.unsigned_dict())
        return messages.SIGNING_PREFIX + wire[:cut] + wire[cut + len(member) :]

    def to_bytes(self) -> bytes:
        """Canonical JSON of the whole envelope: what goes on the wire and into the ledger."""
        if self._wire is None:
            self._wire = dumps_checked(self.to_dict())
        return self._wire

    @property
    def tx_hash(self) -> bytes:
        """SHA-256 of the canonical envelope bytes (the ledger's transaction id); computed once,
        like the bytes (an envelope is not changed after it is signed or parsed)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.to_bytes()).digest()
        return self._hash


def sign_envelope(
    private_key: PrivateKey,
    *,
    type: str,
    community: str,
    seq: int,
    body: dict[str, Any],
    created: int,
    expires: int | None = None,
    ttl_s: int = 24 * 3600,
) -> Envelope:
    """Build and sign an envelope; the result passes ``check_envelope`` (raises Rejected if not)."""
    env = Envelope(
        v=messages.VERSION,
        type=type,
        community=community,
        signer=key_id(private_key.public_key()),
        seq=seq,
        created=created,
        expires=created + ttl_s if expires is None else expires,
        body=body,
        sig="",
    )
    _check_structure(env.to_dict() | {"sig": "x"}, community=community, interval_s=None)
    env.sig = sign(private_key, env.signing_bytes())
    env._wire = env._hash = None
    return env


def parse_envelope(
    data: bytes | str,
    *,
    community: str | None,
    now: int | None,
    interval_s: int | None = 900,
    max_skew_s: int = messages.MAX_SKEW_S,
) -> Envelope:
    """Parse and check a message strictly (not its signature: see :func:`verify_envelope`).

    ``community`` None accepts any community; ``now`` None skips the time checks (expiry, skew);
    ``interval_s`` None skips interval alignment. Raises Rejected with a reason code.
    """
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    except UnicodeEncodeError:
        raise Rejected("bad_string", "message text holds a lone surrogate") from None
    if len(raw) > messages.MAX_BLOCK_BYTES:
        raise Rejected("too_large", f"message is {len(raw)} bytes")
    try:
        obj = loads_strict(raw)
    except CanonicalError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    msg_type = obj.get("type") if type(obj) is dict else None
    if len(raw) > messages.max_bytes(msg_type if type(msg_type) is str else ""):
        raise Rejected("too_large", f"message is {len(raw)} bytes")
    env = _check_structure(obj, community=community, interval_s=interval_s)
    if now is not None:
        check_time(env, now, max_skew_s)
    return env


def envelope_from_dict(obj: Any, *, community: str | None, interval_s: int | None = 900) -> Envelope:
    """Check an envelope object decoded by :func:`chain.canonical.loads_strict` (a transaction
    inside a block): its values are already in the strict domain, so only the structure is
    checked here."""
    return _check_structure(obj, community=community, interval_s=interval_s)


def _check_structure(obj: Any, *, community: str | None, interval_s: int | None) -> Envelope:
    if type(obj) is not dict:
        raise Rejected("bad_type", "message is not a JSON object")
    for name in messages.ENVELOPE_FIELDS:
        if name not in obj:
            raise Rejected("missing_field", f"envelope field {name!r} is missing")
    for name in obj:
        if name not in messages.ENVELOPE_FIELDS:
            raise Rejected("unknown_field", f"envelope field {name!r} is not known")
    try:
        for name, spec in messages.ENVELOPE_FIELDS.items():
            spec.check(obj[name], name)
    except SchemaError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    if obj["v"] != messages.VERSION:
        raise Rejected("bad_version", f"protocol version {obj['v']} is not supported")
    schema = messages.BODY_SCHEMAS.get(obj["type"])
    if schema is None:
        raise Rejected("unknown_type", f"message type {obj['type']!r} is not known")
    if community is not None and obj["community"] != community:
        raise Rejected("wrong_community", f"message is for community {obj['community']!r}")
    if obj["expires"] < obj["created"]:
        raise Rejected("expires_before_created", "expires is before created")
    if obj["expires"] - obj["created"] > messages.MAX_TTL_S:
        raise Rejected("ttl_too_long", "expires is more than 7 days after created")
    try:
        schema.check(obj["body"], "body")
    except SchemaError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    if interval_s is not None:
        for name in messages.INTERVAL_FIELDS.get(obj["type"], ()):
            if obj["body"][name] % interval_s:
                raise Rejected("interval_not_aligned", f"body.{name} is not a multiple of {interval_s} s")
    return Envelope(**obj)


def check_time(env: Envelope, now: int, max_skew_s: int = messages.MAX_SKEW_S) -> None:
    """Refuse an expired message, or one created too far in the future (clock skew)."""
    if now > env.expires:
        raise Rejected("expired", f"message expired at {env.expires} (now {now})")
    if env.created > now + max_skew_s:
        raise Rejected(
            "from_future",
            f"message created {env.created - now} s in the future: check the sender's clock",
        )


def verify_envelope(env: Envelope, public_key: PublicKey, *, key_id_hex: str | None = None) -> None:
    """Check that ``public_key`` is the signer's and that the signature verifies.

    ``key_id_hex``: the key's id when the caller already knows it (looked up by signer), which
    saves recomputing it on the hot path.
    """
    if (key_id_hex or key_id(public_key)) != env.signer:
        raise Rejected("signer_mismatch", "the public key does not belong to the signer")
    try:
        verify(public_key, env.signing_bytes(), env.sig)
    except SignatureError as exc:
        raise Rejected(exc.reason, str(exc)) from None
