"""Full re-verification of a node's store from genesis (`peerwatt verify`).

Checks every byte of the ledger's tables: the genesis document against the genesis header; for
each block the header hash, time column, prev link, tx rows against payloads and tx_root, result
rows against result_root, every stored seal's signature against the validator set in force at
that height, and a quorum; and it re-executes every block with the app and compares results and
state root. Payloads erased by a governance decision are reported (the blocks from there on
cannot be re-executed, but links, roots and seals still verify); a payload missing for any
other reason, or a row nobody references, is tampering. The node-local state snapshot (what a node
starts from) is checked too: canonical, and its state root equal to its block's, so a store that
verifies is one its node will open.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from chain.app import Application
from chain.block import header_hash, most_seals_in_one_round, seal_rounds, tx_root
from chain.canonical import CanonicalError, dumps_checked, loads_strict
from chain.engine import (
    begin_block,
    check_seal_for,
    expected_proposer,
    genesis_block,
    genesis_from_dict_bytes,
    genesis_state,
)
from chain.envelope import Envelope, Rejected, parse_envelope
from chain.execute import InvalidBlock, execute_block
from chain.keys import KeyFileError, key_id, load_public_key
from chain.merkle import leaf_hash, merkle_root
from chain.state import State, copy_state, decode_state, encode_state, state_root
from chain.store import TX_ROW, Store, StoreError, sql_type
from chain.verify_workers import VERIFIED, CheckPool


class VerifyError(Exception):
    """The first bad height and what is wrong there."""

    def __init__(self, height: int, problem: str) -> None:
        super().__init__(f"height {height}: {problem}")
        self.height = height
        self.problem = problem
        self.file_checked = False  # name_corruption ran on it


def name_corruption(store: Store, exc: VerifyError) -> VerifyError:
    """``exc``, or when SQLite's ``PRAGMA quick_check`` finds the file itself damaged, a
    VerifyError at the same height saying so first: a damaged file (a -wal of another store
    beside it, a page overwritten) otherwise reads as missing seals or an unreadable row. For a
    failure before ``verify_store``'s own check of the file (which marks its errors)."""
    if exc.file_checked:
        return exc
    problems = store.integrity_problems()
    if problems:
        exc = _corrupt(store, exc.height, problems, f" (verification stopped at: {exc.problem})")
    exc.file_checked = True
    return exc


def _corrupt(store: Store, height: int, problems: list[str], stopped: str = "") -> VerifyError:
    more = " and more" if len(problems) > 1 else ""
    exc = VerifyError(
        height,
        f"{store.path} is corrupt (SQLite's quick_check: {problems[0]}{more}): restore the data"
        f" folder from a peer{stopped}",
    )
    exc.file_checked = True
    return exc


class _NotErased(VerifyError):
    """A payload is missing and no erasure decision read covers it."""


@dataclass
class VerifyReport:
    blocks: int = 0
    txs: int = 0
    seals: int = 0
    seconds: float = 0.0
    not_reexecuted_from: int | None = None
    erased_txs: list[str] = field(default_factory=list)
    snapshot_height: int | None = None
    workers: int = 1
    signatures_ahead: int = 0  # signatures checked ahead of execution (workers > 1)
    on_helpers: int = 0  # envelopes checked on the helper processes (the rest: by this one)
    # which chain verified: a prefix of a chain (its last blocks dropped) verifies too, and so does
    # another community's store, so the ok line names them for comparison with a peer's
    community: str = ""
    height: int = 0
    head_hash: str = ""  # hex of the head block's header hash (the genesis block's at height 0)
    genesis_hash: str = ""  # hex SHA-256 of the genesis document, as `node init` prints it

    def summary(self) -> str:
        line = (
            f"ok: {self.blocks} blocks, {self.txs} txs, {self.seals} seals verified in {self.seconds:.2f} s"
        )
        if self.workers > 1:
            line += (
                f" ({self.signatures_ahead} signatures checked ahead on {self.workers} processes,"
                f" {self.on_helpers} envelopes on the {self.workers - 1} helper(s))"
            )
        if self.snapshot_height is not None:
            line += f"; state snapshot at height {self.snapshot_height} matches"
        if self.not_reexecuted_from is not None:
            line += (
                f"; {len(self.erased_txs)} erased payload(s): blocks from height "
                f"{self.not_reexecuted_from} checked by hash and seal, not re-executed"
            )
        if self.community:
            line += (
                f"; community {self.community} at height {self.height}, head {self.head_hash},"
                f" genesis {self.genesis_hash}"
            )
        return line


@dataclass
class _Walk:
    """What verification carries from one block to the next."""

    state: State
    prev: dict
    can_execute: bool = True
    results: int = 0
    payloads: set[bytes] = field(default_factory=set)
    # with workers: blocks read ahead and handed to the check pool (height -> _Ahead, or None if
    # reading failed: redone in order), and the signature checks that verified ahead, as
    # ("tx"|"seal", hash, key SEC1 hex)
    ahead: dict[int, _Ahead | None] = field(default_factory=dict)
    verified: dict[int, set[object]] = field(default_factory=dict)
    ahead_to: int = 0


@dataclass
class _Ahead:
    """A block read ahead: its transaction rows with their payloads, its seal rows, the keys
    their checks were sent with, and the pool's batches holding those checks (in item order)."""

    rows: list[tuple]
    payloads: list[bytes | None]
    seals: list[tuple[str, bytes]]
    keys: list[str | None]  # one per payload that is not None, then one per seal
    batches: list[int]


LOOKAHEAD_CHECKS_PER_CORE = 2048  # envelope checks kept queued ahead, per core
BATCH = 128  # envelopes per batch handed to the pool (a check costs ~70-100 us)
MIN_TXS_FOR_WORKERS = 2000  # below this, starting helpers (~0.1 s) costs more than it saves


def verify_store(
    store: Store,
    app: Application,
    progress: Callable[[int, int], None] | None = None,
    *,
    before_block: Callable[[int, dict, bool], None] | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Re-verify everything; raise VerifyError naming the first bad height.

    ``before_block(height, chain_state, state_known)`` is called before each block is checked,
    with the chain state in force before it (``state_known`` False once re-execution stopped at
    an erasure); ``chain.independent`` re-checks the block there with other libraries.
    ``workers`` > 1 uses that many cores: ``workers - 1`` helper processes and this one check
    the envelopes of the next blocks (strict parse, canonical bytes, signature:
    chain/verify_workers.py) while this one also executes in order; the verdict is the same
    either way. Stores of fewer than ``MIN_TXS_FOR_WORKERS`` transactions use one core.
    The walk reads one snapshot of the store, so a node may keep writing to it meanwhile.
    """
    conn = store.conn
    snapshot = not conn.in_transaction
    if snapshot:  # one consistent snapshot (WAL): the node may go on appending while we walk
        conn.execute("BEGIN")
    try:
        # the file first: a damaged one (a -wal of another store beside it, a page overwritten)
        # would otherwise read as missing seals or unreadable rows; quick_check reads every page
        # once, ~0.3 % of the time verify takes (docs/ledger.md)
        problems = store.integrity_problems()
        if problems:
            raise _corrupt(store, 0, problems)
        if workers > 1:
            with contextlib.suppress(sqlite3.DatabaseError):
                if conn.execute("SELECT count(*) FROM txs").fetchone()[0] < MIN_TXS_FOR_WORKERS:
                    workers = 1
        return _verify_store(store, app, progress, before_block, max(1, workers))
    except VerifyError as exc:
        exc.file_checked = True  # (the file passed quick_check above)
        raise
    except sqlite3.DatabaseError as exc:  # a read the walk does not name a height for
        raise VerifyError(0, f"unreadable row: {exc}") from None
    finally:
        if snapshot and conn.in_transaction:
            conn.execute("ROLLBACK")


def _verify_store(
    store: Store,
    app: Application,
    progress: Callable[[int, int], None] | None,
    before_block: Callable[[int, dict, bool], None] | None,
    workers: int,
) -> VerifyReport:
    started = time.perf_counter()
    report = VerifyReport(workers=workers)
    try:
        genesis = genesis_from_dict_bytes(store.genesis_doc())
    except (StoreError, CanonicalError, ValueError, KeyError, TypeError, sqlite3.DatabaseError) as exc:
        raise VerifyError(0, f"genesis document is damaged: {exc}") from None
    if genesis.app_name != app.name:
        raise VerifyError(0, f"store runs the {genesis.app_name!r} app, not {app.name!r}")
    state = genesis_state(genesis, app)
    expected = genesis_block(genesis, state)
    try:
        try:
            _check_block_row(store, 0, expected.header)
        except VerifyError as exc:
            raise _genesis_mismatch(store, expected.header, exc) from None
        if store.tx_rows(0) or store.result_rows(0) or store.seal_rows(0):
            raise VerifyError(0, "genesis block has rows it must not have")
        top = _check_heights(store)
        # key ids whose payloads were erased by decision, and ids of transactions about them; a
        # result row that does not decode is skipped here and reported at its height by the walk
        damaged: list[str] = []

        def skip(_height: int, _idx: int, exc: StoreError) -> None:
            damaged.append(str(exc))

        erased_signers = _erased_signers(store, genesis, skip)
        erased_signers |= {
            tx for tx, subject in transactions_about(store, app, skip).items() if subject in erased_signers
        }
    except sqlite3.DatabaseError as exc:
        raise VerifyError(0, f"unreadable row: {exc}") from None
    except StoreError as exc:
        raise VerifyError(0, str(exc)) from None
    walk = _Walk(copy_state(state), expected.header)  # executed in place from here on
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(CheckPool(workers - 1, genesis.community)) if workers > 1 else None
        for height in range(1, top + 1):
            try:
                if pool is not None:
                    _read_ahead(store, genesis, height, top, walk, pool, workers)
                if before_block is not None:
                    before_block(height, walk.state["chain"], walk.can_execute)
                _verify_block(store, app, genesis, height, walk, erased_signers, report, pool)
            except _NotErased as exc:
                if not damaged:
                    raise
                # (the decision that erased it may be in a result that does not decode)
                raise VerifyError(
                    height, f"{exc.problem}, or its erasure is decided in a damaged row: {damaged[0]}"
                ) from None
            except sqlite3.DatabaseError as exc:
                raise VerifyError(height, f"unreadable row: {exc}") from None
            except StoreError as exc:  # a stored row that no longer decodes, named with its block
                raise VerifyError(height, str(exc)) from None
            if progress is not None:
                progress(height, top)
        if pool is not None:
            report.on_helpers = pool.on_helpers
    try:
        stored = set(store.iter_payload_hashes())
        counts = (store.count("txs"), store.count("results"), store.count("seals"))
    except (sqlite3.DatabaseError, StoreError) as exc:
        raise VerifyError(top, f"unreadable row: {exc}") from None
    if stored - walk.payloads:
        raise VerifyError(top, f"{len(stored - walk.payloads)} payload row(s) belong to no block")
    if counts != (report.txs, walk.results, report.seals):
        raise VerifyError(top, "the tables hold transaction, result or seal rows that belong to no block")
    report.snapshot_height = _check_snapshot(store, top)
    report.community = genesis.community
    report.height = top
    report.head_hash = header_hash(walk.prev).hex()
    report.genesis_hash = genesis.hash.hex()  # the document's, as `node init` prints it
    report.seconds = time.perf_counter() - started
    return report


def _verify_block(
    store: Store,
    app: Application,
    genesis,
    height: int,
    walk: _Walk,
    erased_signers: set[str],
    report: VerifyReport,
    pool: CheckPool | None = None,
) -> None:
    try:
        header = store.header(height)
        if header is None:
            raise VerifyError(height, "block missing")
        _check_block_row(store, height, header)
    except (CanonicalError, KeyError, TypeError) as exc:
        raise VerifyError(height, f"header is damaged: {exc}") from None
    if header["prev"] != header_hash(walk.prev).hex():
        raise VerifyError(height, "prev does not link to the previous header")
    if header["time"] < walk.prev["time"]:
        raise VerifyError(height, "block time goes backwards")
    ahead = walk.ahead.pop(height, None)
    verified = walk.verified.pop(height, set())
    if ahead is not None and pool is not None:
        txs, hashes, erased = _load_txs_ahead(genesis, height, erased_signers, ahead, pool, verified)
    else:
        txs, hashes, erased = _load_txs(store, genesis, height, erased_signers)
    walk.payloads.update(hashes)
    if header["tx_root"] != tx_root(hashes).hex():
        raise VerifyError(height, "tx_root does not match the stored transactions")
    results, leaves = _load_results(store, height)
    if header["result_root"] != merkle_root(leaves).hex():
        raise VerifyError(height, "result_root does not match the stored results")
    chain = walk.state["chain"]
    report.signatures_ahead += len(verified)
    report.seals += _check_seals(
        store,
        genesis.community,
        height,
        header_hash(header),
        chain["validators"],
        chain["quorum"],
        verified,
        header["round"],
    )
    if walk.can_execute and erased:
        walk.can_execute = False
        report.not_reexecuted_from = height
    report.erased_txs.extend(erased)
    if walk.can_execute:
        if header["sequencer"] != expected_proposer(chain, header["round"]):
            raise VerifyError(
                height, f"block created by a key that was not the proposer of round {header['round']}"
            )
        try:
            execution = execute_block(
                begin_block(walk.state, header["sequencer"]),
                app,
                height=height,
                time=header["time"],
                txs=txs,
                in_place=True,
                preverified=(lambda env, sec1: ("tx", env.tx_hash, sec1) in verified) if verified else None,
            )
        except InvalidBlock as exc:
            raise VerifyError(height, f"invalid block: {exc}") from None
        if execution.results != results:
            raise VerifyError(height, "re-execution gives different results")
        if state_root(execution.state).hex() != header["state_root"]:
            raise VerifyError(height, "re-execution gives a different state root")
        walk.state = execution.state
    report.blocks += 1
    report.txs += len(hashes)
    walk.results += len(results)
    walk.prev = header


def _check_snapshot(store: Store, top: int) -> int:
    """The height of the node-local state snapshot, after checking that it is canonical and that
    its state root is the one its (already verified) block header commits to."""
    fix = "the node will refuse to open this store: restore the data folder from a peer"
    try:
        row = store.conn.execute("SELECT height, state FROM local_snapshot WHERE id = 0").fetchone()
    except sqlite3.DatabaseError as exc:
        raise VerifyError(top, f"state snapshot (local_snapshot) is unreadable: {exc}") from None
    if row is None:
        raise VerifyError(top, f"state snapshot (local_snapshot) is missing: {fix}")
    height, data = row
    if type(height) is not int or not 0 <= height <= top:
        raise VerifyError(top, f"state snapshot (local_snapshot) is for height {height!r}, beyond the chain")
    if type(data) is not bytes:
        raise VerifyError(
            height,
            f"state snapshot (local_snapshot) is damaged (stored as {sql_type(data)}, not BLOB); {fix}",
        )
    try:
        state = decode_state(data)
        canonical = encode_state(state) == data and type(state) is dict
        root = state_root(state).hex() if canonical else None
    except (CanonicalError, AttributeError, TypeError) as exc:
        raise VerifyError(height, f"state snapshot (local_snapshot) is damaged: {exc}; {fix}") from None
    if not canonical:
        raise VerifyError(height, f"state snapshot (local_snapshot) is not stored canonically; {fix}")
    if root != loads_strict(bytes(store.block_row(height)[3]))["state_root"]:
        raise VerifyError(
            height, f"state snapshot (local_snapshot) does not match block {height}'s state_root; {fix}"
        )
    return height


def _check_heights(store: Store) -> int:
    """The top height, after checking the block heights are exactly 0..top (no gap, no outlier)."""
    count, low, top = store.conn.execute("SELECT count(*), min(height), max(height) FROM blocks").fetchone()
    if count and low == 0 and top == count - 1:
        return top
    expected = 0
    for (height,) in store.conn.execute("SELECT height FROM blocks ORDER BY height"):
        if height != expected:
            break
        expected += 1
    raise VerifyError(expected, "block heights are not contiguous")


def transactions_about(
    store: Store, app: Application, on_damaged: Callable[[int, int, StoreError], None] | None = None
) -> dict[str, str]:
    """{transaction id (hex): the key id it is about} for accepted transactions that another key
    signed about a meter (the grid operator's data): the app names, in ``subject_results``, the
    result kinds that say so and their field (market: ``{"gridops": "meter"}``). Read from the
    results, which stay when the payload is erased. A result row that does not decode is a
    StoreError, or with ``on_damaged`` handed to it and skipped (Store.results_of_kinds)."""
    fields: dict[str, str] = getattr(app, "subject_results", {})
    if not fields:
        return {}
    about: dict[str, str] = {}
    last: tuple[int, str] | None = None  # (height, id) of the last accepted transaction
    for height, _idx, data in store.results_of_kinds(["tx", *fields], on_damaged=on_damaged):
        try:
            result = loads_strict(data)
        except CanonicalError:
            continue  # a damaged row is reported at its height by the main walk
        if not isinstance(result, dict):
            continue  # damaged: reported at its height by the main walk
        kind = result.get("kind")
        if kind == "tx":
            last = (height, result.get("tx")) if result.get("status") == "ok" else None
        elif kind in fields and last is not None and last[0] == height:
            subject = result.get(fields[kind])
            if isinstance(subject, str) and isinstance(last[1], str):
                about[last[1]] = subject
    return about


def _erased_signers(store: Store, genesis, on_damaged=None) -> set[str]:
    """Meters (and members) whose payloads a governance decision allowed to erase.

    From the ledger itself: passed ``erase_member`` proposals (their result is committed in a
    result_root, their payload in a tx_root), and every meter whose owner is such a member —
    enrolled at genesis or by a passed ``enroll_meter`` proposal.
    """
    passed: dict[str, str] = {}
    for _height, _idx, data in store.results_of_kinds(["gov"], on_damaged=on_damaged):
        try:
            result = loads_strict(data)
        except CanonicalError:
            continue  # a damaged row is reported at its height by the main walk
        if result.get("outcome") == "passed" and result.get("action") in ("erase_member", "enroll_meter"):
            passed[result["proposal"]] = result["action"]
    owners = {meter: entry["owner"] for meter, entry in genesis.doc["meters"].items()}
    members: set[str] = set()
    for proposal, action in passed.items():
        try:
            payload = store.payload(bytes.fromhex(proposal))
            args = loads_strict(payload)["body"]["args"] if payload is not None else None
        except (ValueError, CanonicalError, KeyError, TypeError, StoreError):
            continue  # a damaged payload is reported at its height by the main walk
        if args is None:
            continue
        if action == "erase_member":
            members.add(args.get("member"))
        elif isinstance(args.get("key"), str):
            try:
                owners[key_id(load_public_key(args["key"]))] = args.get("owner")
            except KeyFileError:
                continue
    return members | {meter for meter, owner in owners.items() if owner in members}


def _genesis_mismatch(store: Store, expected: dict, exc: VerifyError) -> VerifyError:
    """``exc`` (the genesis block's row differs from the header the genesis document gives) said
    more precisely: which header fields differ, and when ``tx_root`` does, that the genesis
    document does not match the genesis header (its tx_root commits to the document's hash, so a
    changed document, e.g. a community parameter, shows there)."""
    if exc.problem != "header bytes differ from the expected header":
        return exc
    try:
        stored = loads_strict(bytes(store.block_row(0)[3]))
    except (CanonicalError, StoreError, TypeError, IndexError):
        return exc
    if not isinstance(stored, dict):
        return exc
    fields = sorted(k for k in expected.keys() | stored.keys() if stored.get(k) != expected.get(k))
    if "tx_root" in fields:
        return VerifyError(
            0,
            "the genesis document does not match the genesis header: the header's tx_root commits to"
            " the SHA-256 of the genesis document, and the stored document hashes to another"
            f" (header fields that differ: {', '.join(fields)}); the document or the header was"
            " changed: restore the data folder from a peer",
        )
    if fields:
        return VerifyError(0, f"header bytes differ from the expected header (fields: {', '.join(fields)})")
    return exc


def _check_block_row(store: Store, height: int, header: dict) -> None:
    row = store.block_row(height)
    if row is None:
        raise VerifyError(height, "block missing")
    _, stored_hash, stored_time, stored_header, tx_count, result_count = row
    if bytes(stored_header) != dumps_checked(header):
        raise VerifyError(height, "header bytes differ from the expected header")
    if bytes(stored_hash) != header_hash(header):
        raise VerifyError(height, "stored block hash does not match the header")
    if stored_time != header["time"] or header["height"] != height:
        raise VerifyError(height, "block row does not match its header (time/height)")
    if (tx_count, result_count) != _row_counts(store, height):
        raise VerifyError(height, "block row's counts do not match its transactions/results")


def _row_counts(store: Store, height: int) -> tuple[int, int]:
    """How many transaction and result rows block ``height`` has (counted, not read)."""
    return store.conn.execute(
        "SELECT (SELECT count(*) FROM txs WHERE height = ?), (SELECT count(*) FROM results WHERE height = ?)",
        (height, height),
    ).fetchone()


def _tx_rows_with_payloads(store: Store, height: int) -> list[tuple]:
    """Block ``height``'s transaction rows (idx, hash, signer, type, seq) each with its payload
    row as stored (None if there is none), in one query instead of one per payload; a value of
    another type than its column's is a StoreError naming the row."""
    return [
        store.check_row(row, _TX_ROW_WITH_PAYLOAD, f"the row of transaction {row[0]!r} of block {height}")
        for row in store.conn.execute(
            "SELECT t.idx, t.hash, t.signer, t.type, t.seq, p.envelope FROM txs AS t"
            " LEFT JOIN payloads AS p ON p.hash = t.hash WHERE t.height = ? ORDER BY t.idx",
            (height,),
        )
    ]


_TX_ROW_WITH_PAYLOAD = (*TX_ROW, ("envelope", None))  # (the payload's type: Store.decode_row)


def _load_txs(store: Store, genesis, height: int, erased_signers: set[str]):
    rows = _tx_rows_with_payloads(store, height)

    def payload_of(i: int, tx_hash: bytes) -> bytes | None:
        stored = rows[i][5]
        return None if stored is None else store.decode_row(stored, f"the payload of {tx_hash.hex()}")

    return _check_txs(genesis, height, erased_signers, rows, payload_of)


def _check_txs(genesis, height, erased_signers, rows, payload_of, checks=None, verified=None):
    """(envelopes, hashes, erased ids) of block ``height``'s transaction rows, each checked in
    order: contiguous indexes, the payload (``payload_of(i, hash)``, see :func:`_check_tx`) and
    its index row. ``checks``: an iterator of (verdict, key) from the pool, one per payload that
    is not None; a VERIFIED signature is added to ``verified``."""
    txs, hashes, erased = [], [], []
    for expected_idx, (idx, tx_hash, signer, msg_type, seq, _stored) in enumerate(rows):
        tx_hash = bytes(tx_hash)
        if idx != expected_idx:
            raise VerifyError(height, "transaction indexes are not contiguous")
        hashes.append(tx_hash)
        payload = payload_of(expected_idx, tx_hash)
        verdict, key = next(checks) if checks is not None and payload is not None else (0, None)
        env = _check_tx(
            genesis, height, idx, tx_hash, signer, payload, erased_signers, erased, fast=verdict > 0
        )
        if env is None:
            continue
        if (env.signer, env.type, env.seq) != (signer, msg_type, seq):
            raise VerifyError(height, f"transaction {idx}'s index row does not match its payload")
        if verdict == VERIFIED:
            verified.add(("tx", tx_hash, key))
        txs.append(env)
    return txs, hashes, erased


def _check_tx(genesis, height, idx, tx_hash, signer, payload, erased_signers, erased, fast=False):
    """The envelope of transaction ``idx`` after the checks of its payload (present unless
    erased, its hash, strictly valid, canonical); None if it was erased (listed in ``erased``).
    ``fast``: the strict checks already passed on these bytes (chain/verify_workers.py), so a
    plain parse gives the same envelope."""
    if payload is None:
        if signer in erased_signers or tx_hash.hex() in erased_signers:
            erased.append(tx_hash.hex())
            return None
        raise _NotErased(height, f"payload of transaction {idx} is missing (not an erasure)")
    if _sha(payload) != tx_hash:
        raise VerifyError(height, f"payload of transaction {idx} does not match its hash")
    if fast:
        env = _parsed(payload)
        if env is not None:
            return env
    try:
        env = parse_envelope(payload, community=genesis.community, now=None, interval_s=genesis.interval_s)
    except Rejected as exc:
        raise VerifyError(height, f"transaction {idx} is malformed: {exc}") from None
    if env.to_bytes() != payload:
        raise VerifyError(height, f"transaction {idx} is not stored canonically")
    return env


def _parsed(payload: bytes) -> Envelope | None:
    """The envelope of bytes that already passed ``parse_envelope`` and the canonical check:
    for such bytes (no duplicate keys, floats or unsafe integers) a plain parse is the same."""
    try:
        env = Envelope(**orjson.loads(payload))
    except (orjson.JSONDecodeError, TypeError):
        return None
    env._wire = payload
    return env


def _load_results(store: Store, height: int) -> tuple[list[dict], list[bytes]]:
    """The results of block ``height`` and their Merkle leaves (over the stored bytes, which are
    checked to be the results' canonical bytes)."""
    results, leaves = [], []
    for expected_idx, (idx, kind, data) in enumerate(store.result_rows(height)):
        if idx != expected_idx:
            raise VerifyError(height, "result indexes are not contiguous")
        data = bytes(data)
        try:
            result = loads_strict(data)
        except CanonicalError as exc:
            raise VerifyError(height, f"result {idx} is damaged: {exc}") from None
        if dumps_checked(result) != data or result.get("kind", "") != kind:
            raise VerifyError(height, f"result {idx} is not stored canonically or its kind differs")
        results.append(result)
        leaves.append(leaf_hash(data))
    return results, leaves


def _read_ahead(
    store: Store, genesis, height: int, top: int, walk: _Walk, pool: CheckPool, workers: int
) -> None:
    """Read the next blocks' transactions and seals and hand their envelope checks to the pool
    (with the keys known now: a signer enrolled in between is simply checked again in order).
    Nothing is judged here: a block whose rows cannot be read ahead is read again in its turn, and
    every check that did not pass ahead is redone in order, so the first bad height and its error
    are the ones the walk on one core reports."""
    keys = None
    walk.ahead_to = max(walk.ahead_to, height - 1)
    while walk.ahead_to < top and pool.queued_items < LOOKAHEAD_CHECKS_PER_CORE * workers:
        if keys is None:
            chain = walk.state["chain"]
            keys = {
                kid: entry["key"]
                for reg in ("meters", "members", "validators")
                for kid, entry in chain[reg].items()
            }
        j = walk.ahead_to = walk.ahead_to + 1
        try:
            rows = _tx_rows_with_payloads(store, j)
            payloads = [None if row[5] is None else store.decode_row(row[5], "a payload") for row in rows]
            seals = store.seal_rows(j)
        except Exception:  # noqa: BLE001 - read again (and reported) in order
            walk.ahead[j] = None
            continue
        items = [
            (payload, keys.get(row[2]), genesis.interval_s)
            for row, payload in zip(rows, payloads, strict=True)
            if payload is not None
        ]
        items += [(bytes(envelope), keys.get(validator), None) for validator, envelope in seals]
        batches = [pool.submit(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]
        walk.ahead[j] = _Ahead(rows, payloads, seals, [item[1] for item in items], batches)


def _load_txs_ahead(genesis, height: int, erased_signers: set[str], ahead: _Ahead, pool: CheckPool, verified):
    """``_load_txs`` for a block read ahead: the same checks in the same order, the strict parse
    skipped for payloads the pool found strictly valid and canonical (a plain parse gives the same
    envelope), and the signatures it verified added to ``verified``."""
    verdicts = b"".join(pool.result(batch) for batch in ahead.batches)
    checks = iter(zip(verdicts, ahead.keys, strict=True))
    loaded = _check_txs(
        genesis, height, erased_signers, ahead.rows, lambda i, _hash: ahead.payloads[i], checks, verified
    )
    for (_validator, envelope), (verdict, key) in zip(ahead.seals, list(checks), strict=True):
        if verdict == VERIFIED:
            verified.add(("seal", _sha(bytes(envelope)), key))
    return loaded


def _check_seals(
    store, community, height, block_hash, validators, quorum, verified=frozenset(), created_round=0
) -> int:
    valid = []
    for validator, envelope in store.seal_rows(height):
        try:
            seal = parse_envelope(bytes(envelope), community=community, now=None, interval_s=None)
            if seal.to_bytes() != bytes(envelope) or seal.signer != validator:
                raise VerifyError(height, f"seal row of {validator} does not match its envelope")
            entry = validators.get(seal.signer)
            checked = (
                entry["key"]
                if entry is not None and ("seal", _sha(bytes(envelope)), entry["key"]) in verified
                else None
            )
            check_seal_for(validators, community, height, block_hash, seal, signature_checked_with=checked)
        except (Rejected, InvalidBlock) as exc:
            raise VerifyError(height, f"seal of {validator} is invalid: {exc}") from None
        valid.append(seal)
    best = most_seals_in_one_round(valid, validators)
    if best < quorum:
        raise VerifyError(height, f"only {best} valid seals of one round, quorum is {quorum}")
    by_round = seal_rounds(valid, validators)
    early = [r for r, signers in by_round.items() if r < created_round and len(signers) >= quorum]
    if early:  # a block is final in the round its header names or later (Ledger.commit: bad_round)
        raise VerifyError(
            height, f"block names round {created_round}, but a quorum sealed it in round {min(early)}"
        )
    return sum(len(signers) for signers in by_round.values())


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
