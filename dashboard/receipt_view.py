"""Receipts: a trade's (and its settlement's) inclusion proof in a sealed block, and checking it.

A receipt entry holds the result exactly as recorded (its canonical JSON is the Merkle leaf),
its index, the block's result count, the RFC 6962 audit path (chain.block.result_proof), the
block header and the validators' seals with the validator set in force at that height.
``verify_receipt`` checks a receipt (the dashboard's own, or one posted back) against the
dashboard's ledger, never trusting what the receipt says about itself:

1. the entry is where the ledger records the trade (or its settlement), and its result is the
   stored one, field by field, and about the trade shown (interval, parties, every figure); the
   receipt and the entry hold no field a receipt does not have (``RECEIPT_FIELDS``,
   ``ENTRY_FIELDS``; ``how_to_check`` only the dashboard's text), since nothing would check it;
2. its header is the ledger's own block at that height, and hashes (SHA-256 of its canonical
   JSON) to the hash the receipt names;
3. the leaf hash of the result is the entry's ``leaf_hash`` and, with the audit path, gives the
   header's ``result_root`` in a tree of the block's size;
4. each seal is a valid signature over that header of a validator the ledger had in force at
   that height (the index's ``validator_sets``: genesis, then each passed validator vote), and
   at least the ledger's quorum of distinct validators sealed it in one consensus round. The
   validators and quorum the receipt names are only compared with those.

A receipt fails (``ok`` false) when any check fails, each with a one-line reason."""

from __future__ import annotations

import json
import re
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
    entries = [entry(ledger, index_conn, what, h, i) for what, (h, i) in locations(index_conn, trade).items()]
    return {
        "trade": trade["id"],
        "community": ledger.community.id,
        "entries": entries,
        "how_to_check": HOW_TO_CHECK,
    }


_HOW_BEFORE_29F659C = (
    "leaf = SHA-256(0x00 || canonical JSON of result); fold the proof (RFC 9162 §2.1.3.2) "
    "to header.result_root; SHA-256(canonical JSON of header) = header_hash; every seal "
    "signs header_hash and at least quorum validators in force sealed it"
)
HOW_TO_CHECK = (
    _HOW_BEFORE_29F659C + "; take the validators and quorum from the community's genesis and its "
    "passed validator votes, not from the receipt"
)
# the fields of a receipt and of its entries, as build_receipt and entry make them: a posted
# receipt with any other field, or a how_to_check of its own, is not stamped verified (found in
# a QA pass: note="paid in full" and how_to_check="trust me" were ignored, and ok)
RECEIPT_FIELDS = ("trade", "community", "entries", "how_to_check")
ENTRY_FIELDS = (
    "what", "height", "index", "tree_size", "result", "leaf_hash", "proof", "header", "header_hash",
    "seals", "validators", "quorum",
)  # fmt: skip
HOW_TO_CHECK_TEXTS = (HOW_TO_CHECK, _HOW_BEFORE_29F659C)  # this dashboard's, and earlier versions'


def _unknown_fields(value: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    """``name="value"`` of each field of ``value`` not in ``known``."""
    return [f"{_short(k)}={_short(v)}" for k, v in value.items() if k not in known]


MAX_INT = 2**53 - 1  # the ledger's integer range (docs/dashboard.md, "Parameters and their bounds")
PARTS = ("trade", "settlement")
# the trade row's figures a result must carry to be about the trade shown (result key: row key);
# the stored result is compared in full besides ("result is the ledger's")
TRADE_FIGURES = {
    "energy_wh": "energy_wh",
    "price": "price_per_kwh",
    "value": "value",
    "grid_fee": "grid_fee",
    "levies": "levies",
}
SETTLED_FIGURES = {
    "settled_wh": "settled_wh",
    "value": "settled_value",
    "grid_fee": "settled_grid_fee",
    "levies": "settled_levies",
    "status": "status",
    "flag": "flag",
    "flagged_meter": "flagged_meter",
}
_MISSING = object()


def _check(name: str, ok: bool, detail: str, failure: str = "") -> dict[str, Any]:
    """One check; ``failure`` is added to the detail when it does not hold."""
    return {"check": name, "ok": bool(ok), "detail": detail if ok or not failure else f"{detail}; {failure}"}


def _int(value: Any) -> int | None:
    """``value`` if it is an integer the ledger could hold, else None (so no float, string or
    2**70 ever reaches a query)."""
    return value if type(value) is int and 0 <= value <= MAX_INT else None


def _is_number(value: Any) -> bool:
    """An integer (not a string such as "349", a float or a bool)."""
    return type(value) is int


def _short(value: Any, limit: int = 24) -> str:
    """A value of a posted receipt for a one-line detail: on one line, cut to ``limit``."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(claimed: Any, stored: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    """``key: receipt X, ledger Y`` for each field of ``claimed`` that is not ``stored``'s."""
    if not isinstance(claimed, dict):
        return [f"the receipt has {_short(claimed)}, not an object"]
    out = []
    for k in sorted(set(claimed) | set(stored)) if keys is None else keys:
        mine, theirs = claimed.get(k, _MISSING), stored.get(k, _MISSING)
        if mine != theirs or type(mine) is not type(theirs):
            show = ["(none)" if v is _MISSING else _short(v) for v in (mine, theirs)]
            out.append(f"{_short(k)}: receipt {show[0]}, ledger {show[1]}")
    return out


def locations(index_conn, trade: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Where the ledger records the trade and, once settled, its settlement: (height, index)."""
    out = {"trade": (trade["height"], trade["result_index"])}
    settle = index_conn.execute(
        "SELECT settle_height, settle_idx FROM trades WHERE interval = ? AND trade_key = ?",
        (trade["interval"], trade["id"].split(":", 1)[1]),
    ).fetchone()
    if settle is not None and settle[0] is not None:
        out["settlement"] = (settle[0], settle[1])
    return out


def _about(what: str, result: Any, trade: dict[str, Any]) -> dict[str, Any]:
    """That a result is about the trade row shown: kind, interval, parties and figures."""
    want = {"kind": what, "interval": trade["interval"], "seller": trade["seller"], "buyer": trade["buyer"]}
    note = ""
    if what == "trade":
        want.update({k: trade[column] for k, column in TRADE_FIGURES.items()})
    else:
        want.update(trade=trade["id"].split(":", 1)[1], energy_wh=trade["energy_wh"])
        if trade.get("adjustments"):
            # the row's settled figures include later corrections; the settlement's own are
            # compared with the stored result ("settlement result is the ledger's")
            note = f" (corrected {trade['adjustments']} time(s) since: see the receipt page)"
        else:
            want.update({k: trade[column] for k, column in SETTLED_FIGURES.items()})
    problems = _differences(result, want, list(want))
    shown = ", ".join(f"{k}={_short(v, 34)}" for k, v in want.items() if k != "kind")
    return _check(f"{what} result is about this trade", not problems, shown + note, "; ".join(problems))


def verify_entry(
    e: dict[str, Any], ledger: LedgerReader, index_conn, trade: dict[str, Any], where: tuple[int, int] | None
) -> list[dict[str, Any]]:
    """The checks of one receipt entry against the ledger, each with a one-line detail: the
    entry is where the ledger records this trade's part, its result is the stored one and about
    this trade, its header is the stored block's and hashes as the receipt says, its proof
    folds to the header's result root, and the seals reach the quorum of the validators the
    ledger had in force at that height (never the set or quorum the receipt names)."""
    what = e["what"]
    if what not in PARTS:
        return [
            _check("entry is part of a receipt", False, f"{_short(what)} is neither trade nor settlement")
        ]
    height, index, size = _int(e["height"]), _int(e["index"]), _int(e["tree_size"])
    at = f"leaf index {_short(e['index'])} of block {_short(e['height'])}"
    store = ledger.store()
    result, header = e["result"], e["header"]
    unknown = _unknown_fields(e, ENTRY_FIELDS)
    checks = [
        _check(
            f"{what} entry holds only a receipt's fields",
            not unknown,
            ", ".join(ENTRY_FIELDS),
            "and fields no receipt has, which are not checked: " + ", ".join(unknown),
        )
    ]
    # the result: where the ledger records this part of the trade, and every field of it
    if where is None:
        stored_result = None
        checks.append(
            _check(f"{what} is where the ledger records it", False, f"the ledger has no {what} of it")
        )
    else:
        stored_result = store.results(where[0])[where[1]]
        place = f"result {where[1] + 1} of block {where[0]} (leaf index {where[1]})"
        checks.append(
            _check(
                f"{what} is where the ledger records it",
                (height, index) == where,
                f"the ledger records it as {place}",
                f"the receipt says {at}",
            )
        )
    problems = (
        ["the ledger holds no such result"] if stored_result is None else _differences(result, stored_result)
    )
    checks.append(
        _check(
            f"{what} result is the ledger's",
            not problems,
            "compared field by field with the ledger's",
            "; ".join(problems),
        )
    )
    checks.append(_about(what, result, trade))
    # the header: the ledger's own block at that height, hashing as the receipt says
    stored_header = store.header(height) if height is not None else None
    if not _is_number(e["height"]):
        problems = [f"the receipt's height {_short(e['height'])} is not a number"]
    elif stored_header is None:
        problems = [f"the ledger has no block {_short(e['height'])}"]
    else:
        problems = _differences(header, stored_header)
    checks.append(
        _check(
            f"{what} header is the ledger's",
            not problems,
            f"the header of block {_short(e['height'])}",
            "; ".join(problems) if stored_header is None else "differs in " + "; ".join(problems),
        )
    )
    try:
        computed = header_hash(header)
    except (CanonicalError, ValueError, TypeError):
        computed = b""
    checks.append(
        _check(
            "header hash",
            computed.hex() == e["header_hash"]
            and isinstance(header, dict)
            and header.get("height") == height,
            f"SHA-256(header) = {computed.hex()[:16]}…",
            f"the receipt says {_short(e['header_hash'])} for block {_short(e['height'])}",
        )
    )
    # the inclusion proof: the result's leaf folds to the header's result_root, in a tree of
    # the block's size
    stored_size = len(store.results(height)) if stored_header is not None else None
    try:
        leaf = leaf_hash(dumps_checked(result))
    except (CanonicalError, ValueError, TypeError):
        leaf = b""
    # the entry's own leaf_hash is a claim too: it must be the result's (found in a QA pass: a
    # receipt with leaf_hash "00" was ok, the leaf recomputed and never compared)
    false_leaf = []
    if not leaf or e.get("leaf_hash") != leaf.hex():
        said = _short(e.get("leaf_hash", "(none)"))
        false_leaf.append(f"the receipt says leaf_hash {said}, the result's is {leaf.hex()[:16]}…")
    try:
        proof = proof_from_hex(e["proof"])
        root = bytes.fromhex(header["result_root"])
        included = (
            bool(leaf) and None not in (index, size) and verify_inclusion(leaf, index, size, proof, root)
        )
    except (CanonicalError, ValueError, KeyError, TypeError, AttributeError):
        included, proof = False, []
    not_numbers = [
        f"{k} {_short(e[k])} is not a number" for k in ("index", "tree_size") if not _is_number(e[k])
    ]
    root_text = str(header.get("result_root", "")) if isinstance(header, dict) else ""
    checks.append(
        _check(
            "inclusion proof",
            included and size == stored_size and not false_leaf,
            f"result {index + 1 if index is not None else _short(e['index'])} of {_short(e['tree_size'])} "
            f"in block {_short(e['height'])} (leaf index {_short(e['index'])}), {len(proof)} proof hashes "
            f"→ result_root {_short(root_text, 17)}",
            "; ".join(
                false_leaf
                + not_numbers
                + (
                    []
                    if stored_size is None or size == stored_size
                    else [f"the ledger's block has {stored_size} results"]
                )
                # (found in a QA pass: a path that folds elsewhere read like a passing check)
                + (
                    []
                    if included or false_leaf or not_numbers
                    else ["the audit path does not lead to that root"]
                )
            ),
        )
    )
    # the seals: the validators and quorum the ledger had in force at that height
    validators, quorum = validator_set(index_conn, height) if height is not None else ({}, 1)
    named = e.get("validators")
    checks.append(
        _check(
            "validators and quorum are the ledger's",
            (named, e.get("quorum")) == (validators, quorum),
            f"{len(validators)} validators, quorum {quorum}, in force at block {_short(e['height'])}",
            f"the receipt names {len(named) if isinstance(named, dict) else _short(named)} validator(s) and "
            f"quorum {_short(e.get('quorum'))}, which are not used",
        )
    )
    valid, refused = [], []
    for seal in e["seals"] if isinstance(e["seals"], list) else []:
        try:
            env = parse_envelope(
                dumps_checked(seal), community=ledger.community.id, now=None, interval_s=None
            )
            check_seal_for(
                {k: {"key": v} for k, v in validators.items()}, ledger.community.id, height, computed, env
            )
            valid.append(env)
        except (Rejected, InvalidBlock, CanonicalError, ValueError, TypeError) as exc:
            signer = seal.get("signer", "?") if isinstance(seal, dict) else "?"
            refused.append(f"{_short(signer, 8)}: {' '.join(str(exc).split())}")
    best = most_seals_in_one_round(valid, validators)
    checks.append(
        _check(
            "seals reach the quorum",
            best >= quorum and not refused,
            f"{best} valid seal(s) of one round of the {len(validators)} validators, quorum {quorum}",
            "refused: " + "; ".join(refused) if refused else "",
        )
    )
    return checks


def verify_receipt(receipt: dict[str, Any], trade: dict[str, Any], ledger: LedgerReader, index_conn) -> dict:
    """Check a receipt (the ledger's own, or one posted back) against the trade row it claims to
    be about and against the dashboard's ledger. ``ok`` only when every check holds; ``checks``
    are about the receipt as a whole, ``entries`` about each of its parts."""
    where = locations(index_conn, trade)
    parts = [e["what"] for e in receipt["entries"]]
    named = ", ".join(_short(p) for p in parts) or "nothing"
    unknown = _unknown_fields(receipt, RECEIPT_FIELDS)
    if "how_to_check" in receipt and receipt["how_to_check"] not in HOW_TO_CHECK_TEXTS:
        unknown.append(f"how_to_check={_short(receipt['how_to_check'])} (not the dashboard's text)")
    checks = [
        _check(
            "receipt holds only a receipt's fields",
            not unknown,
            ", ".join(RECEIPT_FIELDS),
            "and fields no receipt has, which are not checked: " + ", ".join(unknown),
        ),
        _check(
            "receipt is of this trade",
            receipt.get("trade") == trade["id"],
            f"trade {trade['id']}",
            f"the receipt says {_short(receipt.get('trade'), 64)}",
        ),
        _check(
            "community",
            receipt.get("community") == ledger.community.id,
            f"this ledger's is {ledger.community.id}",
            f"the receipt says {_short(receipt.get('community'), 40)}",
        ),
        _check(
            "receipt holds the trade",
            "trade" in parts,
            f"it holds: {named}"
            + (
                f" (settled since, in block {where['settlement'][0]})"
                if "settlement" in where and "settlement" not in parts
                else ""
            ),
            "no trade entry",
        ),
    ]
    entries = [
        {
            "what": e["what"] if isinstance(e["what"], str) else _short(e["what"]),
            "height": e["height"],
            "checks": verify_entry(
                e, ledger, index_conn, trade, where.get(e["what"]) if e["what"] in PARTS else None
            ),
        }
        for e in receipt["entries"]
    ]
    ok = all(c["ok"] for c in checks) and all(c["ok"] for e in entries for c in e["checks"])
    return {"ok": ok, "checks": checks, "entries": entries}


class ReceiptError(ValueError):
    """A posted receipt that cannot be checked; the message (one line) says what is wrong."""


MAX_SAFE = 2**53 - 1
_NOT_JSON = ("bad_json", "non_finite_number")  # NaN and Infinity are not JSON (RFC 8259)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}", re.ASCII)


def parse_receipt(text: str) -> dict[str, Any]:
    """A receipt posted back for checking (strict JSON, as the ledger writes it). ReceiptError
    says why one is refused: text that is not JSON is "not valid JSON"; valid JSON that no
    receipt can hold (an integer beyond the ledger's ±(2**53 − 1), a number with a fraction, a
    duplicate key) names the field and what is wrong with it."""
    try:
        value = loads_strict(text)
    except CanonicalError as exc:
        if exc.reason in _NOT_JSON:
            raise ReceiptError(f"the posted receipt is not valid JSON: {exc}") from None
        if exc.reason in ("integer_out_of_range", "float_not_allowed"):
            located = _locate_number(text)
            if located is not None:
                raise ReceiptError(f"the posted receipt{located}") from None
        raise ReceiptError(f"the posted receipt holds what no receipt holds: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("entries"), list):
        raise ReceiptError("the posted JSON is not a receipt (an object with a list of entries)")
    return value


class _Refused:
    """A number the strict decoder refused, kept where it stood to name its place."""

    def __init__(self, text: str, why: str) -> None:
        self.text, self.why = (text if len(text) <= 32 else text[:32] + "…"), why


def _int_or_refused(text: str) -> int | _Refused:
    if len(text) <= 17 and -MAX_SAFE <= int(text) <= MAX_SAFE:
        return int(text)
    return _Refused(text, "outside the ledger's integers (±(2**53 − 1))")


def _locate_number(text: str) -> str | None:
    """``'s entries[0].index is 1180591620717411303424, outside ...`` (to follow "the posted
    receipt"): the first number of ``text`` (JSON) that the ledger cannot hold, with its place;
    None when it cannot be found."""
    try:
        value = json.loads(
            text,
            parse_int=_int_or_refused,
            parse_float=lambda t: _Refused(t, "not a whole number (the ledger's numbers are integers)"),
        )
        found = _find_refused(value, "")
    except (ValueError, RecursionError):
        return None
    if found is None:
        return None
    place, refused = found
    whose = f"'s {place}" if place else ""
    return f"{whose} is {refused.text}, {refused.why}"


def _find_refused(value: Any, place: str) -> tuple[str, _Refused] | None:
    if isinstance(value, _Refused):
        return place, value
    if isinstance(value, dict):
        items = (
            (f"{place}.{k}" if place else k) if _NAME_RE.fullmatch(k) else f"{place}[{json.dumps(k)[:42]}]"
            for k in value
        )
        for where, item in zip(items, value.values(), strict=True):
            if (found := _find_refused(item, where)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _find_refused(item, f"{place}[{i}]")) is not None:
                return found
    return None
