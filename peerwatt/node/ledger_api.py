"""Reading a node's store for peers and light clients: blocks with seals, and inclusion proofs.

Shared by the node's HTTP API and by catch-up (which turns the same JSON back into blocks).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from chain.block import HEADER_FIELDS, Block, result_leaves, tx_leaves, tx_root
from chain.canonical import dumps_checked, loads_strict
from chain.envelope import Envelope, parse_envelope
from chain.execute import InvalidBlock
from chain.merkle import MerkleTree, proof_to_hex
from chain.store import Store

MAX_BLOCKS_PER_REQUEST = 200
# transactions per inclusion message: a meter has a few per block; a flood of its own stays
# within a receipt's size (each transaction: two audit paths of about log2(block size) hashes,
# at most 16 in a block of 8 MiB, and its result: 2.4 kB in a block of 28,000 transactions
# and as many other results, 600 kB for 256)
INCLUDED_PER_MESSAGE = 256
# A block as JSON (block_json), its fields in this order; catch-up takes nothing else
BLOCK_FIELDS = ("header", "txs", "tx_hashes", "results", "seals")
_HASH = re.compile(r"[0-9a-f]{64}")
_HEADER_HASHES = ("prev", "tx_root", "result_root", "state_root")


def block_json(store: Store, height: int) -> dict[str, Any] | None:
    """A stored block as JSON: header, transactions (None where erased), results and seals."""
    header = store.header(height)
    if header is None:
        return None
    tx_hashes = [tx_hash for _, tx_hash, *_ in store.tx_rows(height)]  # bytes: tx_rows checked them
    payloads = [store.payload(tx_hash) for tx_hash in tx_hashes]
    return {  # BLOCK_FIELDS
        "header": header,
        "txs": [None if payload is None else loads_strict(payload) for payload in payloads],
        "tx_hashes": [tx_hash.hex() for tx_hash in tx_hashes],
        "results": store.results(height),
        "seals": _seals(store, height),
    }


def _seals(store: Store, height: int) -> list[Any]:
    """Block ``height``'s stored seals as JSON."""
    return [loads_strict(env) for _, env in store.seal_rows(height)]


def blocks_json(store: Store, start: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` consecutive stored blocks from height ``start``."""
    limit = max(1, min(limit, MAX_BLOCKS_PER_REQUEST))
    out = []
    for height in range(max(start, 0), start + limit):
        block = block_json(store, height)
        if block is None:
            break
        out.append(block)
    return out


def proof_json(store: Store, height: int, index: int) -> dict[str, Any] | None:
    """Result ``index`` of block ``height`` with its inclusion proof and the block's seals."""
    header = store.header(height)
    if header is None:
        return None
    results = store.results(height)
    if not 0 <= index < len(results):
        return None
    proof = MerkleTree(result_leaves(results)).inclusion_proof(index)
    return {
        "header": header,
        "index": index,
        "tree_size": len(results),
        "result": results[index],
        "proof": proof_to_hex(proof),
        "seals": _seals(store, height),
    }


class ErasedPayloads(ValueError):
    """A block whose payloads were erased (``peerwatt node erase``): it can be checked by hash,
    not re-executed, so a node cannot rebuild its state past it from genesis. Raised with the
    block's header, its seals (parsed, not verified) and its transaction hashes (which build its
    ``tx_root``): believe it only of a header a quorum sealed (``Ledger.check_final_header``)."""

    def __init__(
        self, height: int, header: dict[str, Any], seals: list[Envelope], tx_hashes: list[bytes]
    ) -> None:
        super().__init__(
            f"block {height} has erased payloads: it can only be checked by hash, not re-executed"
        )
        self.height = height
        self.header = header
        self.seals = seals
        self.tx_hashes = tx_hashes


def block_from_json(
    data: dict[str, Any],
    community: str,
    interval_s: int | None,
    validators: Collection[str] | None = None,
) -> tuple[Block, list[Envelope]]:
    """Rebuild a block and its seals from :func:`block_json` output (not yet verified).

    Strict: the fields of ``block_json`` and nothing else, each of its type, the header's fields
    and no others, one hash per transaction (the hash of each transaction given; with erased
    payloads, hashes that build the header's ``tx_root``). Its seals are checked before any is
    parsed: at most one per validator in ``validators`` (the set in force before the block, which
    made it final; a stored block keeps one seal per validator, late ones included), no signer
    twice, none but a validator (InvalidBlock ``too_many_seals``, ``duplicate_seal``,
    ``not_a_validator``). A QA pass's peer served a real block with its 3 seals 80,000 times:
    each was parsed and its signature checked before the duplicates were dropped (22 s).
    ValueError for the rest of a malformed block; ErasedPayloads (with the header, seals and
    hashes) for erased payloads."""
    header, txs, tx_hashes, results, seals = _checked_fields(data)
    height = header["height"]
    envelopes = _checked_seals(seals, height, community, validators)
    hashes = [bytes.fromhex(h) for h in tx_hashes]
    if any(tx is None for tx in txs):
        if tx_root(hashes).hex() != header["tx_root"]:
            raise InvalidBlock("bad_tx_root", f"block {height}: its tx_hashes do not build its tx_root")
        raise ErasedPayloads(height, header, envelopes, hashes)
    body = dict(header, txs=txs, results=results)
    block = Block.from_body(body, community=community, interval_s=interval_s)
    if [env.tx_hash for env in block.txs] != hashes:
        raise InvalidBlock("bad_tx_hashes", f"block {height}: its tx_hashes are not its transactions' hashes")
    return block, envelopes


def _checked_fields(data: Any) -> tuple[dict[str, Any], list[Any], list[str], list[Any], list[Any]]:
    """The fields of a block as JSON, each of its type (ValueError naming the first that is not)."""
    if type(data) is not dict or set(data) != set(BLOCK_FIELDS):
        raise ValueError(f"malformed block: not an object holding {', '.join(BLOCK_FIELDS)} and nothing else")
    header, txs, tx_hashes, results, seals = (data[name] for name in BLOCK_FIELDS)
    if type(header) is not dict or set(header) != set(HEADER_FIELDS):
        raise ValueError(
            f"malformed block: its header does not hold {', '.join(HEADER_FIELDS)} and nothing else"
        )
    for name in ("height", "time", "round"):
        if type(header[name]) is not int or header[name] < 0:
            raise ValueError(f"malformed block: its header's {name} is not a number")
    for name in _HEADER_HASHES:
        if type(header[name]) is not str or not _HASH.fullmatch(header[name]):
            raise ValueError(f"malformed block: its header's {name} is not a hash")
    if type(header["sequencer"]) is not str:
        raise ValueError("malformed block: its header's sequencer is not a key id")
    where = f"malformed block {header['height']}:"
    if type(txs) is not list or any(tx is not None and type(tx) is not dict for tx in txs):
        raise ValueError(f"{where} its txs are not a list of transactions (or null where erased)")
    if type(tx_hashes) is not list or any(type(h) is not str or not _HASH.fullmatch(h) for h in tx_hashes):
        raise ValueError(f"{where} its tx_hashes are not a list of hashes")
    if len(tx_hashes) != len(txs):
        raise InvalidBlock(
            "bad_tx_hashes",
            f"block {header['height']}: {len(tx_hashes)} tx_hashes for {len(txs)} transactions",
        )
    if type(results) is not list or any(type(r) is not dict for r in results):
        raise ValueError(f"{where} its results are not a list of objects")
    if type(seals) is not list or any(type(s) is not dict or type(s.get("signer")) is not str for s in seals):
        raise ValueError(f"{where} its seals are not a list of seals")
    return header, txs, tx_hashes, results, seals


def _checked_seals(
    seals: list[dict[str, Any]], height: int, community: str, validators: Collection[str] | None
) -> list[Envelope]:
    """A block's seals parsed, once checked for what a final block honestly carries (above)."""
    if validators is not None and len(seals) > len(validators):
        raise InvalidBlock(
            "too_many_seals",
            f"block {height}: {len(seals)} seals, more than its {len(validators)} validators' (one each)",
        )
    signers: set[str] = set()
    for seal in seals:
        signer = seal["signer"]
        if signer in signers:
            raise InvalidBlock("duplicate_seal", f"block {height}: two seals by {signer[:32]!r}")
        if validators is not None and signer not in validators:
            raise InvalidBlock(
                "not_a_validator", f"seal by {signer[:32]!r}, not a validator at height {height}"
            )
        signers.add(signer)
    return [parse_envelope(dumps_checked(s), community=community, now=None, interval_s=None) for s in seals]


RECEIPT_KINDS = {
    "trade": ("seller", "buyer"),
    "settlement": ("seller", "buyer"),
    "adjustment": ("seller", "buyer"),
    "order_outcome": ("meter",),
    "reading_flag": ("meter",),
}


def block_inclusions(
    block: Block,
    meters: dict,
    header: dict[str, Any],
    seals: list[Any],
    results: list[dict[str, Any]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(meter, message) proving to each meter in ``meters`` which of its transactions the final
    ``block`` (with its stored ``header`` and ``seals``) holds and what the ledger made of each:
    ``type: included``, per transaction its audit path against ``tx_root`` and its result
    (``kind: tx``, ``ok`` or ``rejected`` with the reason) with that result's audit path against
    ``result_root`` (checked by meter_agent.receipts.verify_included). ``results``: the block's
    results when the caller has them at hand (else ``block.results``).

    Every result, not only the rejected ones: a message without its result proves the
    transaction is in the block, not that the ledger took it, so an agent forgets a message only
    on its proven result; had rejected results alone been sent, a validator dropping one would
    make the agent take a rejected message for booked (found in a QA pass). Measured on a block of
    1,000 meters' readings, one each: 13 ms instead of 7 ms, and 1.6 times the bytes."""
    by_signer: dict[str, list[tuple[int, int]]] = {}
    for index, env in enumerate(block.txs):
        if env.signer in meters:
            by_signer.setdefault(env.signer, []).append((env.seq, index))
    if not by_signer:
        return []
    results = block.results if results is None else results
    tree = MerkleTree(tx_leaves([env.tx_hash for env in block.txs]))
    result_tree = MerkleTree(result_leaves(results))
    ours = {index for txs in by_signer.values() for _seq, index in txs}
    result_at = {
        r["index"]: at for at, r in enumerate(results) if r.get("kind") == "tx" and r.get("index") in ours
    }
    out = []
    for meter, txs in by_signer.items():
        for start in range(0, len(txs), INCLUDED_PER_MESSAGE):
            proofs = []
            for seq, index in txs[start : start + INCLUDED_PER_MESSAGE]:
                at = result_at[index]
                proofs.append(
                    {
                        "seq": seq,
                        "index": index,
                        "proof": proof_to_hex(tree.inclusion_proof(index)),
                        "result": results[at],
                        "result_index": at,
                        "result_proof": proof_to_hex(result_tree.inclusion_proof(at)),
                    }
                )
            message = {
                "type": "included",
                "meter": meter,
                "header": header,
                "seals": seals,
                "tree_size": len(block.txs),
                "result_tree_size": len(results),
                "txs": proofs,
            }
            out.append((meter, message))
    return out


def block_receipts(
    store: Store, height: int, results: list[dict[str, Any]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(meter, receipt) for every result of a block that concerns a meter (one tree per block);
    ``results``: the block's results when the caller has them already."""
    header = store.header(height)
    if header is None:
        return []
    if results is None:
        results = store.results(height)
    wanted = [(i, r) for i, r in enumerate(results) if r.get("kind") in RECEIPT_KINDS]
    if not wanted:
        return []
    tree = MerkleTree(result_leaves(results))
    seals = _seals(store, height)
    out = []
    for index, result in wanted:
        receipt = {
            "header": header,
            "index": index,
            "tree_size": len(results),
            "result": result,
            "proof": proof_to_hex(tree.inclusion_proof(index)),
            "seals": seals,
        }
        for field in RECEIPT_KINDS[result["kind"]]:
            out.append((result[field], receipt))
    return out
