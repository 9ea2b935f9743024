"""Signed notices from a node to one sender: "the ledger holds (or refused) your messages".

A sender's outbox keeps every signed message until the ledger confirms it, and forgets it on a
notice. A forged notice would make a sender forget messages that were never booked, so:

- a node sends a notice only about messages whose signature it verified (:func:`authenticated`),
  to the key that signed them;
- a notice is an envelope of type ``notice`` signed by the node; the receiver accepts it only
  from a validator key it trusts (the genesis set) and only when the notice names the receiver
  itself (:func:`open_notice`), so a notice for one sender cannot be replayed to another.

Replaying a genuine notice to its own sender is harmless: it confirms seqs that were already
confirmed, and a sender's seq only grows, so no later message carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chain import messages
from chain.envelope import Envelope, Rejected, parse_envelope, sign_envelope, verify_envelope
from chain.execute import public_key_from_hex
from chain.keys import KeyFileError, PrivateKey

NOTICE_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Notice:
    """A verified notice: ``seqs`` of ``meter`` are final at ``height`` or ``refused`` for a reason."""

    signer: str
    meter: str
    seqs: tuple[int, ...]
    height: int | None
    refused: str | None


def sign_notice(
    key: PrivateKey,
    *,
    community: str,
    meter: str,
    seqs: list[int],
    created: int,
    seq: int,
    height: int | None = None,
    refused: str | None = None,
) -> bytes:
    """The wire bytes of a notice to ``meter`` (``height`` for final, ``refused`` for refused).

    ``seq``: the node's own counter for its envelopes (notices are not transactions; receivers
    do not replay-check them, see the module docstring).
    """
    if (height is None) == (refused is None):
        raise ValueError("a notice says either the final block's height or why it was refused")
    body: dict[str, Any] = {"meter": meter, "seqs": list(seqs)}
    if height is not None:
        body["height"] = height
    else:
        body["refused"] = refused
    env = sign_envelope(
        key, type="notice", community=community, seq=seq, body=body, created=created, ttl_s=NOTICE_TTL_S
    )
    return env.to_bytes()


def chunks(seqs: list[int]) -> list[list[int]]:
    """Split seqs into lists no longer than one notice may carry."""
    size = messages.MAX_NOTICE_SEQS
    return [seqs[i : i + size] for i in range(0, len(seqs), size)]


def open_notice(raw: bytes, *, community: str, meter: str, trusted: dict[str, str]) -> Notice:
    """Parse and verify a notice addressed to ``meter``; raise Rejected with a reason otherwise.

    ``trusted``: key id -> compressed SEC1 public key hex of the nodes allowed to send notices
    (the community's validators from the genesis).
    """
    env = parse_envelope(raw, community=community, now=None, interval_s=None)
    if env.type != "notice":
        raise Rejected("unknown_type", f"a {env.type} message is not a notice")
    sec1 = trusted.get(env.signer)
    if sec1 is None:
        raise Rejected("unknown_signer", f"notice signed by {env.signer}, which is not a validator")
    try:
        public_key = public_key_from_hex(sec1)
    except (KeyFileError, ValueError):
        raise Rejected("unknown_signer", f"validator {env.signer} has an unusable key") from None
    verify_envelope(env, public_key, key_id_hex=env.signer)
    if env.body["meter"] != meter:
        raise Rejected("wrong_recipient", f"notice for {env.body['meter']}, not for {meter}")
    return Notice(
        signer=env.signer,
        meter=meter,
        seqs=tuple(env.body["seqs"]),
        height=env.body.get("height"),
        refused=env.body.get("refused"),
    )


def authenticated(raw: bytes, *, community: str, key_for: Callable[[str], str | None]) -> Envelope | None:
    """The envelope in ``raw`` if its signature verifies under its signer's enrolled key, else None.

    Time and interval checks are skipped on purpose: an expired or misaligned message that its
    signer really sent deserves a refusal notice (so its outbox stops resending it); anything
    that does not verify deserves nothing. ``key_for(signer)``: the signer's SEC1 hex key, or None.
    """
    try:
        env = parse_envelope(raw, community=community, now=None, interval_s=None)
        sec1 = key_for(env.signer)
        if sec1 is None:
            return None
        verify_envelope(env, public_key_from_hex(sec1), key_id_hex=env.signer)
    except (Rejected, KeyFileError, ValueError):
        return None
    return env
