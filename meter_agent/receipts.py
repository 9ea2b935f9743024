"""Checking what a node sends an agent, as a light client, against the block header sealed by a
quorum of the community's validators (from the genesis the agent got):

- a receipt: a result and its Merkle inclusion proof against the header's ``result_root``; the
  result's leaf is ``leaf_hash(JCS(result))`` (chain/block.py);
- a validator's configuration history (``type: config_history``): the steps by which votes
  changed the validators, the quorum or the market's parameters since the genesis, each checked
  with the validators in force before it (chain/config_proof.py);
- an inclusion message (``type: included``): the agent's own transactions, each with its audit
  path against the header's ``tx_root``; the leaf is ``leaf_hash(SHA-256(envelope bytes))``, and
  the agent hashes the bytes it signed and kept, so a proof that verifies commits that very
  message under the sealed root. Each transaction also carries its result (``kind: tx``, ``ok``
  or ``rejected`` with the reason) and that result's audit path against ``result_root``: a
  message in a block is not always a message the ledger took, so only a proven result says what
  became of it (nodes before 2026-12-07 sent the rejected results only).

Proofs are RFC 9162 audit paths; RFC 6962's leaf/node domain separation means a proof that
verifies commits the leaf itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

from chain.block import header_hash, most_seals_in_one_round, result_leaves, tx_leaves
from chain.canonical import CanonicalError, dumps_checked
from chain.config_proof import ConfigProofError, TrustedConfig, follow
from chain.envelope import Rejected, parse_envelope, verify_envelope
from chain.genesis import Genesis
from chain.keys import load_public_key
from chain.merkle import proof_from_hex, verify_inclusion
from chain.messages import MAX_BLOCK_BYTES

# A receipt is one header, one result, a log-size proof and the seals: far below this.
MAX_RECEIPT_BYTES = 1024 * 1024
# A block's stored seals: one per validator of the deciding round, and late ones of a few others
# (chain.store keeps every valid seal); a message with more is refused before any is verified,
# and one signer's seal of a round is verified once (a QA run: one history whose step carried 3
# real seals 4,000 times took 2 s of an agent's CPU per message).
MAX_SEALS_PER_VALIDATOR = 4
# A configuration history: the node cuts it to the newest steps that fit a block's bound
# (peerwatt/node/announce.py)
MAX_CONFIG_BYTES = MAX_BLOCK_BYTES


class ReceiptError(Exception):
    """A receipt that does not verify: an alarm (the node may be lying)."""


# Given each header whose seals verified (the header, its hash) before the message is believed;
# it raises ReceiptError to refuse it (the agent's check against the header it accepted at that
# height before: meter_agent.agent)
HeaderCheck = Callable[[dict[str, Any], bytes], None]


def malformed(exc: Exception) -> str:
    """Why a message could not be read, in words: a missing field (a KeyError, whose text is only
    the field's name) is named as such."""
    if isinstance(exc, KeyError) and exc.args:
        return f"the field {exc.args[0]!r} is missing"
    return str(exc)


def verify_receipt(
    receipt: dict[str, Any],
    *,
    community: str,
    validators: dict[str, str],
    quorum: int,
    sealed_headers: set[bytes] | None = None,
    on_header: HeaderCheck | None = None,
) -> dict[str, Any]:
    """Return the receipt's result if it verifies; raise ReceiptError otherwise.

    ``validators``: key id -> compressed SEC1 public key hex (the genesis validator set).
    ``sealed_headers``: header hashes whose seals were already checked (a cache the caller keeps:
    a block's many receipts share one header); newly checked headers are added to it.
    ``on_header``: see HeaderCheck.
    """
    try:
        header = _sealed_header(receipt, community, validators, quorum, sealed_headers, on_header)
        result = receipt["result"]
        leaf = result_leaves([result])[0]
        proof = proof_from_hex(receipt["proof"])
        if not verify_inclusion(
            leaf, receipt["index"], receipt["tree_size"], proof, bytes.fromhex(header["result_root"])
        ):
            raise ReceiptError(
                f"inclusion proof of result {receipt['index']} in block {header['height']} fails"
            )
    except (KeyError, TypeError, ValueError, CanonicalError, Rejected) as exc:
        raise ReceiptError(f"malformed or forged receipt: {malformed(exc)}") from None
    return result


class Inclusion(NamedTuple):
    """What an inclusion message proves: the block's ``height``, the ``seqs`` of the meter's
    messages in it whose result it also proves (those the meter may forget), and of those the
    ledger booked as rejected, seq -> reason. A kept message it names without a result (an older
    node, or a validator that dropped it) is in neither: nothing may be concluded of it."""

    height: int
    seqs: list[int]
    rejected: dict[int, str]


def verify_included(
    message: dict[str, Any],
    *,
    meter: str,
    payloads: dict[int, bytes],
    community: str,
    validators: dict[str, str],
    quorum: int,
    sealed_headers: set[bytes] | None = None,
    on_header: HeaderCheck | None = None,
) -> Inclusion:
    """Which of ``payloads`` (seq -> the envelope bytes this meter signed and kept) the inclusion
    message proves to be in its sealed block, and what the block recorded for each (a result
    ``kind: tx`` naming the transaction's hash, proven against ``result_root``). Seqs the meter no
    longer keeps are skipped; a proof that fails for a message it keeps raises ReceiptError, as
    does anything malformed or sealed by too few validators."""
    try:
        if message["meter"] != meter:
            raise ReceiptError(f"an inclusion proof for meter {message['meter']}, not this one")
        header = _sealed_header(message, community, validators, quorum, sealed_headers, on_header)
        root, size = bytes.fromhex(header["tx_root"]), message["tree_size"]
        proven, rejected = [], {}
        for tx in message["txs"]:
            payload = payloads.get(tx["seq"])
            if payload is None:
                continue
            tx_hash = hashlib.sha256(payload).digest()
            leaf = tx_leaves([tx_hash])[0]
            if not verify_inclusion(leaf, tx["index"], size, proof_from_hex(tx["proof"]), root):
                raise ReceiptError(f"inclusion proof of seq {tx['seq']} in block {header['height']} fails")
            if "result" not in tx:
                continue
            proven.append(tx["seq"])
            reason = _proven_outcome(message, header, tx, tx_hash)
            if reason is not None:
                rejected[tx["seq"]] = reason
    except (KeyError, TypeError, ValueError, CanonicalError, Rejected) as exc:
        raise ReceiptError(f"malformed or forged inclusion proof: {malformed(exc)}") from None
    return Inclusion(header["height"], proven, rejected)


def _proven_outcome(
    message: dict[str, Any], header: dict[str, Any], tx: dict[str, Any], tx_hash: bytes
) -> str | None:
    """The rejection reason of an included transaction (None: booked ok), from its result and
    that result's audit path against the header's ``result_root``."""
    result = tx["result"]
    if (
        not isinstance(result, dict)
        or result.get("kind") != "tx"
        or result.get("index") != tx["index"]
        or result.get("tx") != tx_hash.hex()
        or result.get("status") not in ("ok", "rejected")
    ):
        raise ReceiptError(f"the result given for seq {tx['seq']} is not that transaction's")
    leaf = result_leaves([result])[0]
    proof = proof_from_hex(tx["result_proof"])
    root = bytes.fromhex(header["result_root"])
    if not verify_inclusion(leaf, tx["result_index"], message["result_tree_size"], proof, root):
        raise ReceiptError(f"result proof of seq {tx['seq']} in block {header['height']} fails")
    if result["status"] == "ok":
        return None
    reason = result.get("reason")
    if not isinstance(reason, str):
        raise ReceiptError(f"the result given for seq {tx['seq']} is rejected without a reason")
    return reason


def genesis_config(genesis: Genesis) -> TrustedConfig:
    """The configuration a light client starts from: the genesis's validators, quorum and app
    parameters (those of the chain's state at height 0)."""
    return TrustedConfig(
        height=0,
        validators={kid: v["key"] for kid, v in genesis.doc["validators"].items()},
        quorum=genesis.doc["chain"]["quorum"],
        params=dict(genesis.app_params),
    )


def follow_config(
    history: Any,
    trusted: TrustedConfig,
    *,
    community: str,
    on_step: Callable[[TrustedConfig], None] | None = None,
    on_header: HeaderCheck | None = None,
) -> tuple[TrustedConfig, str | None]:
    """Walk a validator's configuration history from ``trusted``: (the configuration reached,
    None) or (the last one reached, why a step did not verify); ``on_step`` gets each one
    reached on the way, ``on_header`` (HeaderCheck) each step's sealed header."""

    def check_seals(step: dict[str, Any], validators: dict[str, str], quorum: int) -> dict[str, Any]:
        try:
            return _sealed_header(step, community, validators, quorum, None, on_header)
        except (ReceiptError, Rejected, CanonicalError) as exc:
            raise ConfigProofError(str(exc)) from None

    return follow(history, trusted, check_seals, on_step)


def _sealed_header(
    message: dict[str, Any],
    community: str,
    validators: dict[str, str],
    quorum: int,
    sealed_headers: set[bytes] | None,
    on_header: HeaderCheck | None,
) -> dict[str, Any]:
    """The message's header once a quorum's seals on it verify (or it is in ``sealed_headers``)
    and ``on_header`` took it."""
    header = message["header"]
    block_hash = header_hash(header)
    if sealed_headers is None or block_hash not in sealed_headers:
        _check_seals(message, header, block_hash, community, validators, quorum)
        if sealed_headers is not None:
            sealed_headers.add(block_hash)
    if on_header is not None:
        on_header(header, block_hash)
    return header


def _check_seals(
    receipt: dict[str, Any],
    header: dict[str, Any],
    block_hash: bytes,
    community: str,
    validators: dict[str, str],
    quorum: int,
) -> None:
    """Raise ReceiptError unless a quorum of ``validators`` sealed ``block_hash`` in one round
    (seals of different rounds never add up: chain.consensus)."""
    seals = receipt["seals"]
    if len(seals) > MAX_SEALS_PER_VALIDATOR * len(validators):
        raise ReceiptError(f"block {header['height']} comes with {len(seals)} seals: more than any block has")
    valid = []
    checked: set[tuple[str, Any]] = set()  # (signer, round): each verified once
    for seal_obj in seals:
        seal = parse_envelope(dumps_checked(seal_obj), community=community, now=None, interval_s=None)
        key = validators.get(seal.signer)
        if key is None or seal.type != "seal":
            continue
        if (seal.body["height"], seal.body["header"]) != (header["height"], block_hash.hex()):
            continue
        if (seal.signer, seal.body.get("round")) in checked:
            continue
        verify_envelope(seal, load_public_key(key), key_id_hex=seal.signer)
        checked.add((seal.signer, seal.body.get("round")))
        valid.append(seal)
    best = most_seals_in_one_round(valid, validators)
    if best < quorum:
        raise ReceiptError(f"block {header['height']} has {best} valid seals, quorum is {quorum}")
