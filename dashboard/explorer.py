"""Ledger explorer queries: blocks (keyset-paged), one block's transactions, results and seals,
governance proposals and votes, with household data shown only to whom it belongs.

What everyone sees: headers, hashes, roots, counts, seals, clearing results (community
aggregates) and governance outcomes. A household additionally sees the transactions its meters
signed and the results that name them; an admin sees everything. Hidden rows are counted, so
the numbers still add up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from chain.canonical import loads_strict
from chain.governance import electorate
from chain.keys import KeyFileError, key_id, load_public_key
from dashboard.accounts import User
from dashboard.community import households, owners, seen_clearing
from dashboard.directory import Directory
from dashboard.ledger import LedgerReader

PUBLIC_RESULT_KINDS = frozenset({"clearing", "gov"})
PUBLIC_TX_TYPES = frozenset({"propose", "vote"})
PAGE = 25


def _parties(result: dict[str, Any]) -> set[str]:
    return {result[k] for k in ("meter", "seller", "buyer", "account") if isinstance(result.get(k), str)}


def public_clearing(
    result: dict[str, Any], user: User | None, results: list[dict[str, Any]], owner_of: Mapping[str, str]
) -> dict[str, Any]:
    """A clearing result as households and visitors see it, by the overview book's rules
    (community.seen_clearing): a side of fewer than MIN_BOOK_HOUSEHOLDS households besides the
    viewer's own (one more for a visitor, who may be one of them) shows its count, not its
    energy, and then the volume is withheld too. The orders
    are the order outcomes of the interval in the same block (``results``, withdrawn ones left
    out, as the clearing left them out); a household is its meters' owner (``owner_of``:
    community.owners), so one member's meters count once (found in a QA pass: the explorer
    counted meters, and one member's three offers showed their sum). The admin sees it whole."""
    if user is not None and user.is_admin:
        return result
    own_meters = frozenset() if user is None else frozenset(user.meters)
    own_households = households(own_meters, owner_of)
    own: Counter[str] = Counter()
    others: dict[str, set[str]] = {"ask": set(), "bid": set()}
    for r in results:
        if (
            r.get("kind") != "order_outcome"
            or r.get("interval") != result.get("interval")
            or "withdrawn" in r
        ):
            continue
        side = "ask" if r.get("side") == "sell" else "bid"
        if r.get("meter") in own_meters:
            own[side] += 1
        household = owner_of.get(r.get("meter"), r.get("meter"))
        if household not in own_households:
            others[side].add(household)
    return seen_clearing(
        result,
        own,
        full=False,
        others={side: len(h) for side, h in others.items()},
        logged_in=user is not None,
    )


def seen_args(action: Any, args: Any, pseudonyms: Directory | None) -> Any:
    """A proposal's args as the viewer may read them: under pseudonyms, an add_member proposal's
    name is the member's pseudonym (with the key beside it, the name would undo the pseudonym)."""
    if pseudonyms is None or action != "add_member" or not isinstance(args, dict) or "name" not in args:
        return args
    try:
        label = pseudonyms.account_label(key_id(load_public_key(args["key"])))
    except (KeyError, TypeError, ValueError, KeyFileError):
        label = "a household"
    return {**args, "name": label}


def _seen_body(msg_type: str, envelope: dict[str, Any], pseudonyms: Directory | None) -> Any:
    body = envelope.get("body")
    if msg_type == "propose" and isinstance(body, dict):
        return {**body, "args": seen_args(body.get("action"), body.get("args"), pseudonyms)}
    return body


def visible(user: User | None, meters: set[str]) -> bool:
    if user is None:
        return False
    return user.is_admin or bool(meters & user.meters)


def blocks(ledger: LedgerReader, *, before: int | None = None, limit: int = PAGE) -> dict[str, Any]:
    """A page of blocks, newest first."""
    top = ledger.head().height + 1 if before is None else before
    rows = ledger.conn.execute(
        "SELECT b.height, b.hash, b.time, b.tx_count, b.result_count,"
        " (SELECT count(*) FROM seals s WHERE s.height = b.height)"
        " FROM blocks b WHERE b.height < ? ORDER BY b.height DESC LIMIT ?",
        (top, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "blocks": [
            {"height": h, "hash": bytes(hh).hex(), "time": t, "txs": tc, "results": rc, "seals": sc}
            for h, hh, t, tc, rc, sc in rows
        ],
        "next_before": rows[-1][0] if more and rows else None,
    }


def block(
    ledger: LedgerReader, index_conn, height: int, user: User | None, pseudonyms: Directory | None = None
) -> dict[str, Any] | None:
    """One block: header, transactions, results and seals, redacted for the viewer."""
    store = ledger.store()
    row = store.block_row(height)
    if row is None:
        return None
    header = loads_strict(bytes(row[3]))
    results = [loads_strict(bytes(r[2])) for r in store.result_rows(height)]
    status = {r["index"]: r for r in results if r.get("kind") == "tx"}
    adjust_parties = _adjustment_parties(index_conn, results)
    owner_of = owners(ledger.meters())
    tx_rows = store.tx_rows(height)
    signers = {r[0]: r[2] for r in tx_rows}
    types = {r[0]: r[3] for r in tx_rows}
    txs, hidden_txs = [], 0
    for idx, tx_hash, signer, msg_type, seq in tx_rows:
        shown = msg_type in PUBLIC_TX_TYPES or visible(user, {signer})
        if not shown:
            hidden_txs += 1
            continue
        payload = store.payload(bytes(tx_hash))
        outcome = status.get(idx, {})
        txs.append(
            {
                "index": idx,
                "hash": bytes(tx_hash).hex(),
                # a proposal or vote is public, who sent it only for logged-in users (as on the
                # governance page): None for visitors
                "signer": signer if user is not None else None,
                "type": msg_type,
                "seq": seq,
                "status": outcome.get("status"),
                "reason": outcome.get("reason"),
                "body": None if payload is None else _seen_body(msg_type, json.loads(payload), pseudonyms),
                "erased": payload is None,
            }
        )
    shown_results, hidden = [], Counter()
    for idx, result in enumerate(results):
        kind = result.get("kind", "")
        if kind == "tx":
            parties = {signers.get(result.get("index"), "")}
        elif kind == "adjustment":
            parties = adjust_parties.get(idx, set())
        else:
            parties = _parties(result)
        public = kind in PUBLIC_RESULT_KINDS or (
            kind == "tx" and types.get(result.get("index")) in PUBLIC_TX_TYPES
        )
        if kind == "clearing":
            result = public_clearing(result, user, results, owner_of)
        if public or visible(user, parties):
            shown_results.append({"index": idx, **result})
        else:
            hidden[kind] += 1
    seals = []
    for validator, envelope in store.seal_rows(height):
        env = json.loads(bytes(envelope))
        seals.append(
            {
                "validator": validator,
                "created": env.get("created"),
                "header": env.get("body", {}).get("header"),
                "sig": env.get("sig"),
            }
        )
    return {
        "height": height,
        "hash": bytes(row[1]).hex(),
        "time": row[2],
        "header": header,
        "tx_count": row[4],
        "result_count": row[5],
        "txs": txs,
        "hidden_txs": hidden_txs,
        "results": shown_results,
        "hidden_results": dict(sorted(hidden.items())),
        "result_kinds": dict(sorted(Counter(r.get("kind", "") for r in results).items())),
        "seals": seals,
    }


def _adjustment_parties(index_conn, results: list[dict[str, Any]]) -> dict[int, set[str]]:
    out = {}
    for idx, r in enumerate(results):
        if r.get("kind") == "adjustment":
            row = index_conn.execute(
                "SELECT seller, buyer FROM trades WHERE interval = ? AND trade_key = ?",
                (r.get("interval"), r.get("trade")),
            ).fetchone()
            out[idx] = set(row) if row else set()
    return out


GOV_COLUMNS = "height, idx, tx, signer, status, reason, action, args, deadline, note, erased"
# A page lists every counted vote of its proposals (at most one per key that may vote) and at
# most this many refused ones per proposal (a proposer of blocks could fill them with refusals).
MAX_REFUSED_VOTES = 20
_TOP = (2**53, 0)  # before every (height, index) of the ledger


def governance(
    ledger: LedgerReader,
    index_conn,
    user: User | None,
    pseudonyms: Directory | None = None,
    *,
    before: tuple[bool, int, int] | None = None,
    limit: int = PAGE,
) -> dict[str, Any]:
    """One page of proposals: the open ones first, then the others (passed, rejected, expired,
    refused), each newest first; at most ``limit``, after ``before`` (``next_before`` of the page
    before: ``(open?, height, index)`` of its last proposal). What each asked, its outcome and
    counts; who proposed and who voted how only for logged-in users (they are households).

    Paged as the blocks are (found in a QA pass: every proposal the ledger ever had was read and
    sent on each request, 32,000 expired ones 24 MB): a page reads its proposals by the index's
    keys, and their outcomes and votes by proposal, so it costs the same on a ledger of 100 or
    100,000 proposals. The open ones come from the state (at most max_open_proposals per key)."""
    open_now = ledger.open_proposals()
    open_ids = json.dumps(sorted(open_now))
    rows: list[tuple[bool, tuple]] = []
    if before is None or before[0]:
        after = _TOP if before is None else before[1:]
        rows += [
            (True, r)
            for r in index_conn.execute(
                f"SELECT {GOV_COLUMNS} FROM gov_txs WHERE type = 'propose'"
                " AND proposal IN (SELECT value FROM json_each(?)) AND (height, idx) < (?, ?)"
                " ORDER BY height DESC, idx DESC LIMIT ?",
                (open_ids, *after, limit + 1),
            )
        ]
    if len(rows) <= limit:
        after = before[1:] if before is not None and not before[0] else _TOP
        rows += [
            (False, r)
            for r in index_conn.execute(
                f"SELECT {GOV_COLUMNS} FROM gov_txs WHERE type = 'propose'"
                " AND proposal NOT IN (SELECT value FROM json_each(?)) AND (height, idx) < (?, ?)"
                " ORDER BY height DESC, idx DESC LIMIT ?",
                (open_ids, *after, limit + 1 - len(rows)),
            )
        ]
    more = len(rows) > limit
    rows = rows[:limit]
    proposals: dict[str, dict[str, Any]] = {}
    for is_open, (height, _idx, tx, signer, status, reason, action, args, deadline, note, erased) in rows:
        proposals[tx] = {
            "id": tx,
            "height": height,
            "proposer": signer if user is not None else None,
            "status": status,
            "reason": reason,
            "action": action,
            "args": seen_args(action, json.loads(args) if args else None, pseudonyms),
            "deadline": deadline,
            "note": note,
            "erased": bool(erased),
            "outcome": "open" if is_open else None,
            "yes": None,
            "no": None,
            "outcome_reason": None,
            "votes": [],
            "refused_votes_not_shown": False,
        }
    page_ids = json.dumps(sorted(proposals))
    for proposal, outcome, yes, no, why, height in index_conn.execute(
        "SELECT proposal, outcome, yes, no, reason, height FROM gov"
        " WHERE proposal IN (SELECT value FROM json_each(?)) ORDER BY height, idx",
        (page_ids,),
    ):
        if outcome != "opened":
            # outcome_reason: why a proposal that had its votes closed as rejected (ledger rules 2:
            # it no longer applied when it passed, chain/governance.py)
            proposals[proposal].update(
                outcome=outcome, yes=yes, no=no, outcome_reason=why, decided_height=height
            )
    if user is not None:
        for proposal, signer, vote, status, reason, height, refused_before in index_conn.execute(
            "SELECT proposal, signer, vote, status, reason, height, refused FROM ("
            " SELECT *, sum(status != 'ok') OVER (PARTITION BY proposal ORDER BY height, idx) AS refused"
            " FROM gov_txs WHERE type = 'vote' AND proposal IN (SELECT value FROM json_each(?)))"
            " WHERE status = 'ok' OR refused <= ? + 1 ORDER BY height, idx",
            (page_ids, MAX_REFUSED_VOTES),
        ):
            p = proposals[proposal]
            if status != "ok" and refused_before > MAX_REFUSED_VOTES:
                p["refused_votes_not_shown"] = True
                continue
            p["votes"].append(
                {"voter": signer, "vote": vote, "status": status, "reason": reason, "height": height}
            )
    chain = ledger.state()["chain"]
    for pid, p in proposals.items():
        voters, _ = electorate(chain, p.get("action"))
        if pid in open_now:
            # counted as the ledger tallies: the yes and no of the keys that may vote on it (a
            # member's proposal of a validators' action holds its yes, which does not count)
            p["outcome"] = "open"
            p["yes"] = len(voters.intersection(open_now[pid].get("yes", [])))
            p["no"] = len(voters.intersection(open_now[pid].get("no", [])))
        _proposers_yes(p, voters)
    last = rows[-1] if more and rows else None
    return {
        "proposals": list(proposals.values()),
        "open": len(open_now),
        "next_before": None
        if last is None
        else f"{'open' if last[0] else 'closed'}-{last[1][0]}-{last[1][1]}",
    }


def _proposers_yes(p: dict[str, Any], voters: set[str]) -> None:
    """Set ``proposer_yes``: whether proposing counted as the proposer's yes, so the page lists it
    with the votes (found in a QA pass: "passed 1 yes, 0 no" above a Votes column of "–"). It
    counts if the proposer may vote on the proposal (chain.governance.propose); a decided
    proposal's count shows whether it did (its yes beyond the yes votes the ledger took), an open
    or expired one is judged by who may vote now. ``votes`` stay the vote transactions."""
    p["proposer_yes"] = False
    proposer = p.get("proposer")
    if proposer is None or p.get("status") != "ok":  # hidden from visitors, or refused
        return
    sent_yes = sum(1 for v in p["votes"] if v["vote"] == "yes" and v["status"] == "ok")
    decided = p.get("outcome") in ("passed", "rejected") and p.get("yes") is not None
    p["proposer_yes"] = p["yes"] > sent_yes if decided else proposer in voters
