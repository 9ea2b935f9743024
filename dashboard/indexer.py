"""Builds and updates the derived index from the ledger, block range by block range.

Reads only: the ledger's ``results`` (clearing, order_outcome, trade, settlement, adjustment,
gov, and the rejections among the per-transaction results) and the ``reading``/``propose``/
``vote`` transactions with their payloads. One index transaction per batch of blocks records
the batch's rows and the height and hash of its last block, so a crash leaves a consistent
prefix. If the ledger under the index changes (another block at the indexed height, a shorter
chain; or, at start, an index of another genesis) the index is emptied and rebuilt. A data folder
that comes to hold another genesis under a running dashboard is not indexed (LedgerReplaced); nor
is one moved away, a damaged ledger or index, or an index on a full disk: each is one log line
while it lasts (and one when a full disk has room again), and the index is caught up afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chain.canonical import CanonicalError, loads_strict
from chain.genesis import default_quorum
from chain.keys import KeyFileError, key_id, load_public_key, public_key_sec1
from chain.store import rollback_open
from dashboard.indexdb import TABLES, IndexDB, IndexFull, index_fault
from dashboard.ledger import LedgerReader, Unavailable, damaged_file
from market.settlement import Reading, check_meter

log = logging.getLogger("peerwatt.dashboard")

RESULT_KINDS = ("clearing", "order_outcome", "trade", "settlement", "adjustment", "gov")
VALIDATOR_ACTIONS = ("add_validator", "remove_validator")


@dataclass
class SyncReport:
    blocks: int = 0
    trades: int = 0
    settlements: int = 0
    readings: int = 0
    rebuilt: bool = False
    forgotten: int = 0  # readings removed because the node erased their payloads
    seconds: float = 0.0
    stopped: str | None = None  # why nothing was indexed (Unavailable.public): e.g. another ledger


class Indexer:
    """Keeps an IndexDB in step with a LedgerReader."""

    def __init__(self, ledger: LedgerReader, db: IndexDB, *, batch_blocks: int = 500) -> None:
        self.ledger = ledger
        self.db = db
        self.batch_blocks = batch_blocks
        self._last_check = 0.0
        self._busy = threading.Lock()
        self._wal_to_empty = False  # after forgetting erased readings, until the WAL is emptied
        self._caught_up = False  # a sync succeeded: faults are reported from then on, not raised

    # -- entry points ------------------------------------------------------------------------

    def sync_if_due(self, *, min_interval_s: float = 1.0, max_blocks: int | None = 2000) -> None:
        """Cheap per-request catch-up: at most once per ``min_interval_s``; never blocks a
        request behind another thread's sync (that request uses the index as it is)."""
        now = time.monotonic()
        if now - self._last_check < min_interval_s or not self._busy.acquire(blocking=False):
            return
        try:
            self._last_check = now
            self._sync_ours(max_blocks)
        finally:
            self._busy.release()

    def sync(self, max_blocks: int | None = None) -> SyncReport:
        """Index every block not yet indexed (or at most ``max_blocks`` of them).

        A file that cannot be used (``dashboard.ledger.Unavailable``: the ledger moved away, of
        another genesis or damaged, the index damaged or on a full disk) is raised as long as no
        sync succeeded (the start refuses in one line); afterwards the report's ``stopped`` says it
        (without a path) and the fault is logged once while it lasts, so a caller that syncs every
        few seconds logs nothing. A full disk that has room again is logged once too."""
        with self._busy:
            return self._sync_ours(max_blocks)

    def _sync_ours(self, max_blocks: int | None) -> SyncReport:
        try:
            try:
                report = self._sync(max_blocks)
            except sqlite3.Error as exc:
                fault = self.fault(exc)
                if fault is None:
                    raise
                raise fault from None
        except Unavailable as exc:
            if not self._caught_up:
                raise  # the caller's one line (not logged as well)
            self.ledger.faults.fault(exc)
            return SyncReport(stopped=exc.public)
        self._caught_up = True
        self.ledger.faults.over(IndexFull, f"{self.db.path} is written again: the index caught up")
        return report

    def fault(self, exc: sqlite3.Error) -> Unavailable | None:
        """The one-line fault of an SQLite error while indexing: the index's disk full (the ledger
        is only read), or which file is damaged; None for any other error."""
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
            return index_fault(self.db.path, exc)
        return damaged_file(exc, (self.db, self.ledger))

    def indexed_height(self) -> int:
        value = self.db.meta("height")
        return int(value) if value is not None else 0

    # -- work --------------------------------------------------------------------------------

    def _sync(self, max_blocks: int | None) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        w = self.db.writer
        head = self.ledger.head()
        with self.db.write_lock:
            meta = dict(w.execute("SELECT key, value FROM meta").fetchall())
            height = int(meta.get("height", 0))
            if (
                meta.get("genesis") != self.ledger.community.genesis_hash
                or height > head.height
                or (height > 0 and self.ledger.block_hash(height) != meta.get("block_hash"))
            ):
                self._reset()
                report.rebuilt = True
                height = 0
            else:
                report.forgotten = self._forget_erased()
                self._empty_wal()
            budget = head.height - height if max_blocks is None else min(max_blocks, head.height - height)
            target = height + budget
            while height < target:
                end = min(target, height + self.batch_blocks)
                with _transaction(w):
                    self._ingest(height + 1, end, report)
                    w.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [("height", str(end)), ("block_hash", self.ledger.block_hash(end) or "")],
                    )
                report.blocks += end - height
                height = end
        report.seconds = time.perf_counter() - started
        return report

    def _reset(self) -> None:
        w = self.db.writer
        genesis = self.ledger.community.doc
        with _transaction(w):
            for table in TABLES:
                if table != "meta":
                    w.execute(f"DELETE FROM {table}")
            w.execute("DELETE FROM meta WHERE key != 'schema'")
            w.execute("INSERT INTO meta VALUES ('genesis', ?)", (self.ledger.community.genesis_hash,))
            w.execute(
                "INSERT INTO validator_sets VALUES (1, ?, ?)",
                (
                    json.dumps({k: v["key"] for k, v in genesis["validators"].items()}, sort_keys=True),
                    genesis["chain"]["quorum"],
                ),
            )

    def _forget_erased(self) -> int:
        """Remove the readings whose payloads the node erased since they were indexed (the
        module's docstring); returns how many rows went."""
        erased = self.ledger.erased()
        if not erased:
            return 0
        w = self.db.writer
        lconn = self.ledger.conn
        gone: list[str] = []
        for meter, entry in sorted(self.ledger.meters().items()):
            if entry.get("owner") not in erased:
                continue
            oldest = w.execute(
                "SELECT height FROM readings WHERE meter = ? ORDER BY interval LIMIT 1", (meter,)
            ).fetchone()
            if (
                oldest is not None
                and lconn.execute(
                    "SELECT 1 FROM txs AS t LEFT JOIN payloads AS p ON p.hash = t.hash WHERE t.height = ?"
                    " AND t.signer = ? AND t.type = 'reading' AND p.hash IS NULL LIMIT 1",
                    (oldest[0], meter),
                ).fetchone()
            ):
                gone.append(meter)
        if not gone:
            return 0
        # the blocks that hold those meters' erased readings (one scan: txs has no signer index)
        rows = lconn.execute(
            "SELECT DISTINCT t.signer, t.height FROM txs AS t LEFT JOIN payloads AS p ON p.hash = t.hash"
            " WHERE t.type = 'reading' AND p.hash IS NULL AND t.signer IN (SELECT value FROM json_each(?))",
            (json.dumps(gone),),
        ).fetchall()
        before = w.total_changes
        secure = w.execute("PRAGMA secure_delete").fetchone()[0]
        w.execute("PRAGMA secure_delete=ON")
        try:
            with _transaction(w):
                w.executemany("DELETE FROM readings WHERE meter = ? AND height = ?", rows)
            removed = w.total_changes - before
            w.execute("VACUUM")  # no free page keeps them
        finally:
            w.execute(f"PRAGMA secure_delete={int(secure)}")
        self._wal_to_empty = True
        self._empty_wal()
        if self._wal_to_empty:
            log.warning(
                "%s: the index forgot %d erased reading(s), but a reader kept its write-ahead log"
                " from being emptied; tried again at each indexing round",
                self.db.path,
                removed,
            )
        return removed

    def _empty_wal(self) -> None:
        """Empty the index's write-ahead log (its old pages may hold forgotten readings), if it
        still has to be: a reader in a read transaction keeps it from being truncated."""
        if self._wal_to_empty:
            busy = self.db.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            self._wal_to_empty = bool(busy)

    def _ingest(self, lo: int, hi: int, report: SyncReport) -> None:
        lconn = self.ledger.conn
        rejected: dict[tuple[int, int], str] = {}
        store = self.ledger.store()
        for height, _idx, data in store.refused_tx_results(low=lo, high=hi):
            result = json.loads(data)
            rejected[(height, result["index"])] = result.get("reason", "")
        tx_rows = lconn.execute(
            "SELECT height, idx, hash, signer, type FROM txs WHERE height BETWEEN ? AND ?"
            " AND type IN ('reading', 'propose', 'vote') ORDER BY height, idx",
            (lo, hi),
        ).fetchall()
        interval_s = self.ledger.params()["interval_s"]
        for height, idx, tx_hash, signer, msg_type in tx_rows:
            status = "rejected" if (height, idx) in rejected else "ok"
            body = self._body(bytes(tx_hash))
            if msg_type == "reading":
                if status == "ok" and body is not None:
                    self._reading(signer, body, height, interval_s)
                    report.readings += 1
            else:
                self._gov_tx(
                    height,
                    idx,
                    bytes(tx_hash).hex(),
                    signer,
                    msg_type,
                    status,
                    rejected.get((height, idx)),
                    body,
                )
        by_kind: dict[str, list[tuple[int, int, dict[str, Any]]]] = {k: [] for k in RESULT_KINDS}
        for height, idx, data in store.results_of_kinds(RESULT_KINDS, low=lo, high=hi):
            result = json.loads(data)
            by_kind[result["kind"]].append((height, idx, result))
        self._clearings(by_kind["clearing"])
        self._outcomes(by_kind["order_outcome"])
        report.trades += self._trades(by_kind["trade"])
        report.settlements += self._settlements(by_kind["settlement"])
        adjusted = self._adjustments(by_kind["adjustment"])
        self._mirror_sides(lo, hi, adjusted)
        self._gov(by_kind["gov"])

    def _body(self, tx_hash: bytes) -> dict[str, Any] | None:
        payload = self.ledger.store().payload(tx_hash)
        if payload is None:
            return None  # erased (GDPR)
        try:
            return loads_strict(payload).get("body")
        except CanonicalError:
            return None

    # -- per kind ----------------------------------------------------------------------------

    def _reading(self, meter: str, body: dict[str, Any], height: int, interval_s: int) -> None:
        w = self.db.writer
        interval = body["interval"]
        current = (body["import_wh"], body["export_wh"], body["serial"])
        previous = w.execute(
            "SELECT import_wh, export_wh, serial FROM readings WHERE meter = ? AND interval = ?",
            (meter, interval - interval_s),
        ).fetchone()
        enrolled = self.ledger.meters().get(meter, {})
        d_import, d_export = metered_delta(previous, current, enrolled, interval_s)
        w.execute(
            "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (meter, interval, *current, d_import, d_export, height),
        )
        following = w.execute(
            "SELECT import_wh, export_wh, serial FROM readings WHERE meter = ? AND interval = ?",
            (meter, interval + interval_s),
        ).fetchone()
        if following is not None:
            w.execute(
                "UPDATE readings SET d_import_wh = ?, d_export_wh = ? WHERE meter = ? AND interval = ?",
                (*metered_delta(current, following, enrolled, interval_s), meter, interval + interval_s),
            )

    def _gov_tx(self, height, idx, tx, signer, msg_type, status, reason, body) -> None:
        body = body or {}
        proposal = tx if msg_type == "propose" else body.get("proposal")
        self.db.writer.execute(
            "INSERT OR REPLACE INTO gov_txs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                height,
                idx,
                tx,
                signer,
                msg_type,
                status,
                reason,
                proposal,
                body.get("action"),
                json.dumps(body["args"], sort_keys=True) if "args" in body else None,
                body.get("deadline"),
                body.get("note"),
                body.get("vote"),
                int(not body),
            ),
        )

    def _clearings(self, rows) -> None:
        self.db.writer.executemany(
            "INSERT OR REPLACE INTO clearings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["interval"],
                    r.get("mechanism", ""),
                    r.get("price"),
                    r.get("volume_wh", 0),
                    r.get("trades", 0),
                    r.get("asks", 0),
                    r.get("bids", 0),
                    r.get("ask_wh", 0),
                    r.get("bid_wh", 0),
                    h,
                    i,
                )
                for h, i, r in rows
            ],
        )

    def _outcomes(self, rows) -> None:
        self.db.writer.executemany(
            "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["meter"],
                    r["interval"],
                    r["side"],
                    r["energy_wh"],
                    r["limit_price"],
                    r["filled_wh"],
                    r.get("order", ""),
                    h,
                    i,
                )
                for h, i, r in rows
            ],
        )

    def _trades(self, rows) -> int:
        if not rows:
            return 0
        w = self.db.writer
        before = w.execute("SELECT coalesce(max(id), 0) FROM trades").fetchone()[0]
        w.executemany(
            "INSERT OR IGNORE INTO trades (interval, trade_key, seller, buyer, sell_order, buy_order,"
            " energy_wh, price, value, grid_fee, levies, height, idx)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["interval"],
                    trade_key(r),
                    r["seller"],
                    r["buyer"],
                    r["sell_order"],
                    r["buy_order"],
                    r["energy_wh"],
                    r["price"],
                    r["value"],
                    r.get("grid_fee", 0),
                    r.get("levies", 0),
                    h,
                    i,
                )
                for h, i, r in rows
            ],
        )
        w.execute(
            "INSERT OR IGNORE INTO trade_sides (meter, interval, trade, side, energy_wh, price, value,"
            " grid_fee, levies)"
            " SELECT seller, interval, id, 'sell', energy_wh, price, value, grid_fee, levies FROM trades"
            " WHERE id > ? UNION ALL"
            " SELECT buyer, interval, id, 'buy', energy_wh, price, value, grid_fee, levies FROM trades"
            " WHERE id > ?",
            (before, before),
        )
        return len(rows)

    def _settlements(self, rows) -> int:
        self.db.writer.executemany(
            "UPDATE trades SET status = ?, settled_wh = ?, s_value = ?, s_grid_fee = ?, s_levies = ?,"
            " flag = ?, flagged_meter = ?, settle_height = ?, settle_idx = ?, source = ?"
            " WHERE interval = ? AND trade_key = ?",
            [
                (
                    r.get("status", "settled"),
                    r.get("settled_wh", 0),
                    r.get("value", 0),
                    r.get("grid_fee", 0),
                    r.get("levies", 0),
                    r.get("flag"),
                    r.get("flagged_meter"),
                    h,
                    i,
                    r.get("source"),
                    r["interval"],
                    r["trade"],
                )
                for h, i, r in rows
            ],
        )
        return len(rows)

    def _mirror_sides(self, lo: int, hi: int, adjusted: list[int]) -> None:
        """Copy the settlement state of the trades settled or adjusted in blocks lo..hi to both
        of their trade_sides rows."""
        w = self.db.writer
        rows = w.execute(
            "SELECT id, interval, seller, buyer, status, settled_wh, s_value, s_grid_fee, s_levies"
            " FROM trades WHERE settle_height BETWEEN ? AND ?",
            (lo, hi),
        ).fetchall()
        if adjusted:
            marks = ",".join("?" * len(adjusted))
            rows += w.execute(
                "SELECT id, interval, seller, buyer, status, settled_wh, s_value, s_grid_fee, s_levies"
                f" FROM trades WHERE id IN ({marks})",
                adjusted,
            ).fetchall()
        w.executemany(
            "UPDATE trade_sides SET status = ?, settled_wh = ?, s_value = ?, s_grid_fee = ?, s_levies = ?"
            " WHERE meter = ? AND interval = ? AND trade = ?",
            [
                (status, wh, value, fee, levies, meter, interval, trade)
                for trade, interval, seller, buyer, status, wh, value, fee, levies in rows
                for meter in (seller, buyer)
            ],
        )

    def _adjustments(self, rows) -> list[int]:
        w = self.db.writer
        touched: list[int] = []
        for h, i, r in rows:
            found = w.execute(
                "SELECT id, coalesce(settled_wh, 0) FROM trades WHERE interval = ? AND trade_key = ?",
                (r["interval"], r["trade"]),
            ).fetchone()
            d_wh = r.get("delta_wh", 0)
            w.execute(
                "INSERT INTO adjustments (trade, interval, trade_key, delta_wh, delta_value,"
                " delta_grid_fee, delta_levies, reason, height, idx) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    found[0] if found else None,
                    r["interval"],
                    r["trade"],
                    d_wh,
                    r.get("delta_value", 0),
                    r.get("delta_grid_fee", 0),
                    r.get("delta_levies", 0),
                    r.get("reason"),
                    h,
                    i,
                ),
            )
            if found is None:
                continue
            touched.append(found[0])
            settled_wh = found[1] + d_wh
            status = r.get("status") or ("settled" if settled_wh > 0 else None)
            w.execute(
                "UPDATE trades SET settled_wh = ?, s_value = coalesce(s_value, 0) + ?,"
                " s_grid_fee = coalesce(s_grid_fee, 0) + ?, s_levies = coalesce(s_levies, 0) + ?,"
                " status = coalesce(?, status), flag = CASE WHEN ? = 'settled' THEN NULL ELSE"
                " coalesce(?, flag) END,"
                " flagged_meter = CASE WHEN ? = 'settled' THEN NULL ELSE flagged_meter END,"
                " adjusted = adjusted + 1, source = coalesce(?, source) WHERE id = ?",
                (
                    settled_wh,
                    r.get("delta_value", 0),
                    r.get("delta_grid_fee", 0),
                    r.get("delta_levies", 0),
                    status,
                    status,
                    r.get("flag"),
                    status,
                    r.get("source"),
                    found[0],
                ),
            )
        return touched

    def _gov(self, rows) -> None:
        w = self.db.writer
        for h, i, r in rows:
            w.execute(
                "INSERT OR REPLACE INTO gov VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (h, i, r["proposal"], r["action"], r["outcome"], r.get("yes"), r.get("no"), r.get("reason")),
            )
            if r["outcome"] == "passed" and r["action"] in VALIDATOR_ACTIONS:
                self._validator_change(h, r)

    def _validator_change(self, height: int, result: dict[str, Any]) -> None:
        """A validator-set change in block h applies from block h + 1 (docs/ledger.md)."""
        w = self.db.writer
        row = w.execute(
            "SELECT args FROM gov_txs WHERE tx = ? AND type = 'propose'", (result["proposal"],)
        ).fetchone()
        if row is None or row[0] is None:
            return  # the proposal's payload was erased: keep the last known set
        args = json.loads(row[0])
        current = w.execute(
            "SELECT validators FROM validator_sets WHERE from_height <= ? ORDER BY from_height DESC LIMIT 1",
            (height,),
        ).fetchone()
        validators: dict[str, str] = json.loads(current[0])
        if result["action"] == "add_validator":
            try:
                public = load_public_key(args["key"])
            except (KeyFileError, AttributeError, KeyError):
                return
            validators[key_id(public)] = public_key_sec1(public).hex()
        else:
            validators.pop(args.get("validator"), None)
        w.execute(
            "INSERT OR REPLACE INTO validator_sets VALUES (?, ?, ?)",
            (height + 1, json.dumps(validators, sort_keys=True), default_quorum(len(validators))),
        )


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One index write transaction: committed, or rolled back on any error. SQLite ends it itself
    on some errors (a full disk): a failed ROLLBACK never hides the error that caused it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        rollback_open(conn)
        raise


def trade_key(result: dict[str, Any]) -> str:
    """The ledger's id of a trade within its interval (market.app.trade_id)."""
    return f"{result['sell_order'][:24]}:{result['buy_order'][:24]}"


def metered_delta(
    previous: tuple[int, int, str] | None,
    current: tuple[int, int, str],
    enrolled: dict[str, Any],
    interval_s: int,
) -> tuple[int | None, int | None]:
    """Energy (Wh imported, exported) between two consecutive counter readings, by the
    settlement's own rules (market.settlement.check_meter); None for a gap, a new meter, a
    counter that went backwards, a serial that is not the enrolled one, or more energy than the
    meter's enrolled capacity can move in an interval: never guessed, never counted."""
    if previous is None:
        return None, None
    delivery = check_meter(
        Reading(*previous),
        Reading(*current),
        enrolled.get("capacity_w", 0),
        interval_s,
        enrolled.get("serial"),
    )
    if isinstance(delivery, str):
        return None, None
    return delivery.import_wh, delivery.export_wh
