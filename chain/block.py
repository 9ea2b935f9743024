"""Blocks: header, transactions and results; their roots and the header hash that validators seal.

header = {height, prev, time, tx_root, result_root, state_root, sequencer} (hashes as hex).
tx_root     = Merkle root over leaf_hash(tx hash) of each transaction (its envelope's SHA-256),
              so a transaction's payload can be erased while the root still verifies.
result_root = Merkle root over leaf_hash(JCS(result)) of each result.
header hash = SHA-256(JCS(header)).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from chain.canonical import canonical_bytes
from chain.envelope import Envelope, Rejected, envelope_from_dict
from chain.merkle import MerkleTree, leaf_hash, merkle_root

ZERO_HASH = "00" * 32
# "sequencer": the validator that created the block, as the proposer of "round" at its height
HEADER_FIELDS = ("height", "prev", "time", "tx_root", "result_root", "state_root", "sequencer", "round")


def header_hash(header: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical header."""
    return hashlib.sha256(canonical_bytes(header)).digest()


def tx_leaves(tx_hashes: list[bytes]) -> list[bytes]:
    """Merkle leaf hashes of a block's transactions."""
    return [leaf_hash(h) for h in tx_hashes]


def tx_root(tx_hashes: list[bytes]) -> bytes:
    """tx_root over transaction hashes."""
    return merkle_root(tx_leaves(tx_hashes))


def result_leaves(results: list[dict[str, Any]]) -> list[bytes]:
    """Merkle leaf hashes of a block's results."""
    return [leaf_hash(canonical_bytes(r)) for r in results]


def result_root(results: list[dict[str, Any]]) -> bytes:
    """result_root over results."""
    return merkle_root(result_leaves(results))


def result_proof(results: list[dict[str, Any]], index: int) -> list[bytes]:
    """Inclusion proof of result ``index`` against the block's result_root."""
    return MerkleTree(result_leaves(results)).inclusion_proof(index)


@dataclass
class Block:
    """A block: its header plus the transactions and results it commits to."""

    header: dict[str, Any]
    txs: list[Envelope]
    results: list[dict[str, Any]]
    _hash: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def height(self) -> int:
        return self.header["height"]

    @property
    def time(self) -> int:
        return self.header["time"]

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            self._hash = header_hash(self.header)
        return self._hash

    def to_body(self) -> dict[str, Any]:
        """The body of a ``block`` message: header fields, transactions and results."""
        return dict(self.header, txs=[t.to_dict() for t in self.txs], results=self.results)

    @classmethod
    def from_body(cls, body: dict[str, Any], *, community: str, interval_s: int | None) -> Block:
        """Rebuild a block from a ``block`` message body decoded by ``loads_strict`` (envelopes
        checked, not yet verified)."""
        header = {name: body[name] for name in HEADER_FIELDS}
        txs = []
        for index, tx in enumerate(body["txs"]):
            try:
                txs.append(envelope_from_dict(tx, community=community, interval_s=interval_s))
            except Rejected as exc:
                raise Rejected(exc.reason, f"transaction {index} of block: {exc.detail}") from None
        return cls(header, txs, list(body["results"]))


def seal_rounds(seals: list[Envelope], validators: Collection[str]) -> dict[int, dict[str, Envelope]]:
    """The seals of ``validators`` by consensus round, one per signer (the first). A block is final
    on a quorum of one round's seals; seals of different rounds never add up (chain.consensus)."""
    rounds: dict[int, dict[str, Envelope]] = {}
    for seal in seals:
        if seal.signer in validators:
            rounds.setdefault(seal.body["round"], {}).setdefault(seal.signer, seal)
    return rounds


def most_seals_in_one_round(seals: list[Envelope], validators: Collection[str]) -> int:
    """How many distinct ``validators`` sealed in the round most of them sealed in."""
    return max((len(signers) for signers in seal_rounds(seals, validators).values()), default=0)
