"""Signed refusal notices from the validators to one sender: "the ledger refused your message
for good, and why".

A sender's outbox keeps every signed message until the ledger confirms it. A message in a final
block is confirmed by proof, not by anyone's word: the proposer publishes an inclusion proof of
each of the sender's transactions against the block's sealed header (peerwatt/node/announce.py;
the agent checks it in meter_agent/receipts.py). A refusal cannot be proven that way, so it is a
notice, an envelope of type ``notice`` signed by a validator, and:

- a validator sends a notice only about messages whose signature it verified (:func:`authenticated`),
  to the key that signed them;
- the receiver accepts a notice only from a validator key it trusts (the genesis set) and only
  when the notice names the receiver itself (:func:`open_notice`), so a notice for one sender
  cannot be replayed to another;
- the receiver acts on a refusal only once as many different validators gave the same reason
  as any two quorums share (:func:`refusal_threshold`: 2q - n; 2 of 4 validators with quorum 3,
  3 of 3). If that many could lie, two conflicting blocks could both be sealed: the ledger
  itself would not be safe. A quorum of validators tell (:func:`tellers`: the proposer in turn
  and the ones after it), so with up to n - q of them down or lying the others still reach
  that threshold (found in a QA pass: with only 2q - n tellers, one of them down meant no
  refusal ever reached a meter, the others being the same two while the chain stays in round 0).

Replaying a genuine notice to its own sender is harmless: it refuses seqs that were already
refused, and a sender's seq only grows, so no later message carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chain import messages
from chain.consensus import proposer_of
from chain.envelope import Envelope, Rejected, parse_envelope, sign_envelope, verify_envelope
from chain.execute import public_key_from_hex
from chain.keys import KeyFileError, PrivateKey

NOTICE_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Notice:
    """A verified notice: ``seqs`` of ``meter`` were ``refused`` for good, for that reason."""

    signer: str
    meter: str
    seqs: tuple[int, ...]
    refused: str


def sign_notice(
    key: PrivateKey,
    *,
    community: str,
    meter: str,
    seqs: list[int],
    created: int,
    seq: int,
    refused: str,
) -> bytes:
    """The wire bytes of a notice to ``meter`` that ``seqs`` were refused for good for ``refused``.

    ``seq``: the node's own counter for its envelopes (notices are not transactions; receivers
    do not replay-check them, see the module docstring).
    """
    body: dict[str, Any] = {"meter": meter, "seqs": list(seqs), "refused": refused}
    env = sign_envelope(
        key, type="notice", community=community, seq=seq, body=body, created=created, ttl_s=NOTICE_TTL_S
    )
    return env.to_bytes()


def refusal_threshold(validator_count: int, quorum: int) -> int:
    """How many different validators must tell a sender of the same refusal before it acts on it:
    the size of the overlap of two quorums (2q - n), at least one."""
    return max(2 * quorum - validator_count, 1)


def tellers(validators: list[str] | tuple[str, ...], sequencer: str, round_: int, quorum: int) -> set[str]:
    """The validators that tell a sender of a refusal in ``round_``: the proposer in turn and the
    ones after it, a quorum in all, so that :func:`refusal_threshold` of them are up and honest
    whenever the chain itself can make progress."""
    return {proposer_of(validators, sequencer, round_ + k) for k in range(min(quorum, len(validators)))}


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
    return Notice(signer=env.signer, meter=meter, seqs=tuple(env.body["seqs"]), refused=env.body["refused"])


def authenticated(raw: bytes, *, community: str, key_for: Callable[[str], str | None]) -> Envelope | None:
    """The envelope in ``raw`` if its signature verifies under its signer's enrolled key, else None.

    Time and interval checks are skipped on purpose: an expired or misaligned message that its
    signer really sent deserves a refusal notice (so its outbox stops resending it); anything
    that does not verify deserves nothing. ``key_for(signer)``: the signer's SEC1 hex key, or None.
    """
    try:
        env = parse_envelope(raw, community=community, now=None, interval_s=None)
    except (Rejected, ValueError):
        return None
    return env if signed_by_its_signer(env, key_for) else None


def signed_by_its_signer(env: Envelope, key_for: Callable[[str], str | None]) -> bool:
    """Whether a parsed message's signature verifies under its signer's enrolled key."""
    try:
        sec1 = key_for(env.signer)
        if sec1 is None:
            return False
        verify_envelope(env, public_key_from_hex(sec1), key_id_hex=env.signer)
    except (Rejected, KeyFileError, ValueError):
        return False
    return True
