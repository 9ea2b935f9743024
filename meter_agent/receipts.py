"""Checking a receipt alone, as a light client: a result, its Merkle inclusion proof, and the
block header sealed by a quorum of the community's validators (from the genesis the agent got).

The result's leaf is ``leaf_hash(JCS(result))`` (chain/block.py); the proof is RFC 9162's audit
path against the header's ``result_root``; RFC 6962's leaf/node domain separation means a proof
that verifies commits the result itself under the sealed root.
"""

from __future__ import annotations

from typing import Any

from chain.block import header_hash, most_seals_in_one_round, result_leaves
from chain.canonical import CanonicalError, dumps_checked
from chain.envelope import Rejected, parse_envelope, verify_envelope
from chain.keys import load_public_key
from chain.merkle import proof_from_hex, verify_inclusion

# A receipt is one header, one result, a log-size proof and the seals: far below this.
MAX_RECEIPT_BYTES = 1024 * 1024


class ReceiptError(Exception):
    """A receipt that does not verify: an alarm (the node may be lying)."""


def verify_receipt(
    receipt: dict[str, Any],
    *,
    community: str,
    validators: dict[str, str],
    quorum: int,
    sealed_headers: set[bytes] | None = None,
) -> dict[str, Any]:
    """Return the receipt's result if it verifies; raise ReceiptError otherwise.

    ``validators``: key id -> compressed SEC1 public key hex (the genesis validator set).
    ``sealed_headers``: header hashes whose seals were already checked (a cache the caller keeps:
    a block's many receipts share one header); newly checked headers are added to it.
    """
    try:
        header = receipt["header"]
        result = receipt["result"]
        block_hash = header_hash(header)
        if sealed_headers is None or block_hash not in sealed_headers:
            _check_seals(receipt, header, block_hash, community, validators, quorum)
            if sealed_headers is not None:
                sealed_headers.add(block_hash)
        leaf = result_leaves([result])[0]
        proof = proof_from_hex(receipt["proof"])
        if not verify_inclusion(
            leaf, receipt["index"], receipt["tree_size"], proof, bytes.fromhex(header["result_root"])
        ):
            raise ReceiptError(
                f"inclusion proof of result {receipt['index']} in block {header['height']} fails"
            )
    except (KeyError, TypeError, ValueError, CanonicalError, Rejected) as exc:
        raise ReceiptError(f"malformed or forged receipt: {exc}") from None
    return result


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
    valid = []
    for seal_obj in receipt["seals"]:
        seal = parse_envelope(dumps_checked(seal_obj), community=community, now=None, interval_s=None)
        key = validators.get(seal.signer)
        if key is None or seal.type != "seal":
            continue
        if (seal.body["height"], seal.body["header"]) != (header["height"], block_hash.hex()):
            continue
        verify_envelope(seal, load_public_key(key), key_id_hex=seal.signer)
        valid.append(seal)
    best = most_seals_in_one_round(valid, validators)
    if best < quorum:
        raise ReceiptError(f"block {header['height']} has {best} valid seals, quorum is {quorum}")
