"""Receipts: a trade's (and its settlement's) inclusion proof in a sealed block, and checking it.

A receipt entry holds the result exactly as recorded (its canonical JSON is the Merkle leaf),
its index, the block's result count, the RFC 6962 audit path (chain.block.result_proof), the
block header and the validators' seals with the validator set in force at that height.
``verify_receipt`` checks an entry using nothing but what the receipt contains:

1. the leaf hash of the result, with the audit path, gives the header's ``result_root``;
2. the header hashes (SHA-256 of its canonical JSON) to the hash the seals sign;
3. each seal is a valid signature of a validator in force over that header, and at least the
   quorum of distinct validators sealed it in one consensus round.
It also checks that the receipt is about the trade shown (kind, seller, buyer, energy).
"""

from __future__ import annotations

import json
from typing import Any

from chain.block import header_hash, most_seals_in_one_round, result_proof
from chain.canonical import CanonicalError, dumps_checked, loads_strict
from chain.engine import check_seal_for
from chain.envelope import Rejected, parse_envelope
from chain.execute import InvalidBlock
from chain.merkle import leaf_hash, proof_from_hex, proof_to_hex, verify_inclusion
from dashboard.ledger import LedgerReader


def validator_set(index_conn, height: int) -> tuple[dict[str, str], int]:
    """({validator key id: SEC1 hex}, quorum) in force for block ``height``."""
    row = index_conn.execute(
        "SELECT validators, quorum FROM validator_sets WHERE from_height <= ?"
        " ORDER BY from_height DESC LIMIT 1",
        (height,),
    ).fetchone()
    return (json.loads(row[0]), row[1]) if row else ({}, 1)


def entry(ledger: LedgerReader, index_conn, what: str, height: int, idx: int) -> dict[str, Any]:
    """One receipt entry for result ``idx`` of block ``height``."""
    store = ledger.store()
    results = store.results(height)
    header = store.header(height)
    validators, quorum = validator_set(index_conn, height)
    return {
        "what": what,
        "height": height,
        "index": idx,
        "tree_size": len(results),
        "result": results[idx],
        "leaf_hash": leaf_hash(dumps_checked(results[idx])).hex(),
        "proof": proof_to_hex(result_proof(results, idx)),
        "header": header,
        "header_hash": header_hash(header).hex(),
        "seals": [json.loads(bytes(env)) for _, env in store.seal_rows(height)],
        "validators": validators,
        "quorum": quorum,
    }


def build_receipt(ledger: LedgerReader, index_conn, trade: dict[str, Any]) -> dict[str, Any]:
    """The receipt of a trade row (from dashboard.trades): its trade result and, once settled,
    its settlement result."""
    entries = [entry(ledger, index_conn, "trade", trade["height"], trade["result_index"])]
    settle = index_conn.execute(
        "SELECT settle_height, settle_idx FROM trades WHERE interval = ? AND trade_key = ?",
        (trade["interval"], trade["id"].split(":", 1)[1]),
    ).fetchone()
    if settle is not None and settle[0] is not None:
        entries.append(entry(ledger, index_conn, "settlement", settle[0], settle[1]))
    return {
        "trade": trade["id"],
        "community": ledger.community.id,
        "entries": entries,
        "how_to_check": (
            "leaf = SHA-256(0x00 || canonical JSON of result); fold the proof (RFC 9162 §2.1.3.2) "
            "to header.result_root; SHA-256(canonical JSON of header) = header_hash; every seal "
            "signs header_hash and at least quorum validators in force sealed it"
        ),
    }


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), "detail": detail}


def verify_entry(e: dict[str, Any], community: str, expected: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks of one receipt entry (see the module docstring), each with its outcome."""
    checks = []
    result = e["result"]
    about = all(result.get(k) == v for k, v in expected.items())
    checks.append(
        _check(
            f"{e['what']} result is about this trade",
            about,
            ", ".join(f"{k}={result.get(k)}" for k in expected),
        )
    )
    try:
        leaf = leaf_hash(dumps_checked(result))
        proof = proof_from_hex(e["proof"])
        root = bytes.fromhex(e["header"]["result_root"])
        included = verify_inclusion(leaf, e["index"], e["tree_size"], proof, root)
    except (CanonicalError, ValueError, KeyError, TypeError):
        included = False
    checks.append(
        _check(
            "inclusion proof",
            included,
            f"result {e['index'] + 1} of {e['tree_size']} in block {e['height']} (leaf index {e['index']}), "
            f"{len(e['proof'])} proof hashes "
            f"→ result_root {str(e['header'].get('result_root', ''))[:16]}…",
        )
    )
    try:
        computed = header_hash(e["header"])
    except (CanonicalError, ValueError, TypeError):
        computed = b""
    checks.append(
        _check(
            "header hash",
            computed.hex() == e["header_hash"] and e["header"].get("height") == e["height"],
            f"SHA-256(header) = {computed.hex()[:16]}…",
        )
    )
    validators = e["validators"]
    valid = []
    problems = []
    for seal in e["seals"]:
        try:
            env = parse_envelope(dumps_checked(seal), community=community, now=None, interval_s=None)
            check_seal_for(
                {k: {"key": v} for k, v in validators.items()}, community, e["height"], computed, env
            )
            valid.append(env)
        except (Rejected, InvalidBlock, CanonicalError, ValueError) as exc:
            problems.append(f"{str(seal.get('signer', '?'))[:8]}: {exc}")
    best = most_seals_in_one_round(valid, validators)
    detail = f"{best} valid seal(s) of one round of {len(validators)} validators, quorum {e['quorum']}"
    if problems:
        detail += "; refused: " + "; ".join(problems)
    checks.append(_check("seals reach the quorum", best >= e["quorum"] and not problems, detail))
    return checks


def verify_receipt(receipt: dict[str, Any], trade: dict[str, Any]) -> dict[str, Any]:
    """Check every entry of a receipt against the trade row it claims to be about."""
    expected = {"interval": trade["interval"], "seller": trade["seller"], "buyer": trade["buyer"]}
    all_checks = []
    for e in receipt["entries"]:
        want = dict(expected, kind=e["what"])
        if e["what"] == "trade":
            want["energy_wh"] = trade["energy_wh"]
        all_checks.append(
            {"what": e["what"], "height": e["height"], "checks": verify_entry(e, receipt["community"], want)}
        )
    ok = all(c["ok"] for entry_checks in all_checks for c in entry_checks["checks"])
    return {"ok": ok, "entries": all_checks}


def parse_receipt(text: str) -> dict[str, Any]:
    """A receipt posted back for checking (JSON); CanonicalError/ValueError when malformed."""
    value = loads_strict(text)
    if not isinstance(value, dict) or not isinstance(value.get("entries"), list):
        raise ValueError("not a receipt")
    return value
