"""Erasure of departed members' personal data from a node's store, after the retention period.

A governance decision (``erase_member``, chain/governance.py) records ``{member: height}`` in the
ledger state (``state["chain"]["erased"]``). Once ``retention_s`` (a community parameter, default
0) has passed since the block of that decision, :func:`erase_departed` deletes from this node's
store the payloads (the signed envelopes: readings, orders) of every transaction signed by a
meter that member owns, and of every transaction another key signed about such a meter (the
grid operator's data: ``chain.verify.transactions_about``). Hash links, roots and seals stay;
`peerwatt verify` reports the erased transactions and checks the blocks from the first of them by
hash and seal only.

SQLite keeps deleted bytes in free pages and in the write-ahead log, so the erasure runs with
``secure_delete`` on, then ``VACUUM`` (rewrites the file without free pages) and a
``wal_checkpoint(TRUNCATE)`` (the WAL file is emptied): afterwards the erased payloads are not in
``ledger.sqlite`` or ``ledger.sqlite-wal``. Run it while the node is stopped.

Only the ledger's ``payloads`` are erased. Results (trades, settlements, order outcomes: energy,
prices and money per meter) and the state's balances are consensus data and stay. So does the
market state's copy of the meters' latest readings (for its correction window) and of the grid
operator's rows (for ``gridops_window_s``), which the node keeps in its snapshot
(``local_snapshot``): the state is committed by every block's state root, so a node that changed
it could neither restart nor agree on the next block. The market prunes them itself; the report
says how many it still holds and from when they can be gone (:func:`held_in_state`), and a run
after that (the node stopped again) leaves them in no file either.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from chain.engine import Ledger
from chain.engine import genesis_from_dict_bytes as _genesis_of
from chain.store import Store
from chain.verify import transactions_about
from market import params as market_params
from market.apps import load_app

RETENTION_PARAM = "retention_s"


@dataclass(frozen=True)
class Held:
    """What the ledger state still holds of the erased meters: ``count`` rows of one kind, the
    last of which the market prunes in a block at ``until`` (Unix s) or later, not before."""

    what: str
    count: int
    until: int


@dataclass
class ErasureReport:
    """What one run erased, what the ledger state still holds of it, and which erased members
    still wait for their retention period."""

    erased_members: dict[str, list[str]] = field(default_factory=dict)  # member -> its meters
    erased_payloads: int = 0
    waiting: dict[str, int] = field(default_factory=dict)  # member -> time its erasure is due
    held: list[Held] = field(default_factory=list)

    def summary(self) -> str:
        """One line, then one per kind of data the ledger state still holds."""
        line = f"erased {self.erased_payloads} payload(s) of {len(self.erased_members)} member(s)"
        if self.waiting:
            line += f"; {len(self.waiting)} member(s) wait for the retention period"
        for held in self.held:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(held.until))
            line += (
                f"\nthe ledger state (the node's snapshot in ledger.sqlite) still holds {held.count}"
                f" {held.what} of the erased meters: the market prunes them in its blocks, not before"
                f" {when} (--now {held.until}); run `peerwatt node erase` again, the node stopped,"
                " once it has made a block after that"
            )
        return line


def retention_s(params: dict) -> int:
    """The community's retention period in seconds (``retention_s``, default 0)."""
    value = params.get(RETENTION_PARAM, 0)
    if type(value) is not int or value < 0:
        raise ValueError(f"{RETENTION_PARAM} must be a non-negative integer number of seconds")
    return value


def held_in_state(app_state: dict, params: dict, meters: list[str]) -> list[Held]:
    """What the market's state holds of ``meters`` (its ``readings`` and ``gridops``, each
    ``{meter: {interval: row}}``), and from when the market's pruning (market.app, ``_prune``)
    can have dropped the last of each: a reading in a block later than its interval plus
    ``correction_window_intervals + 1`` intervals (later still while an interval before it waits
    for settlement), a grid operator's row in a block at or after its interval plus
    ``gridops_window_s`` and two intervals."""
    p = market_params.with_defaults(params)
    keep_s = {
        "readings": (p["correction_window_intervals"] + 1) * p["interval_s"],
        "gridops": p["gridops_window_s"] + 2 * p["interval_s"],
    }
    words = {"readings": "reading(s)", "gridops": "grid operator row(s)"}
    held = []
    for key, keep in keep_s.items():
        by_meter = app_state.get(key)
        if not isinstance(by_meter, dict):
            continue
        intervals = [int(i) for meter in meters for i in by_meter.get(meter, {})]
        if intervals:
            held.append(Held(words[key], len(intervals), max(intervals) + keep))
    return held


def erase_departed(store_dir: str | Path, now: int) -> ErasureReport:
    """Erase the payloads of erased members whose retention has passed at ``now`` (Unix s)."""
    store = Store.open(store_dir, readonly=True)
    try:
        app = load_app(_genesis_of(store.genesis_doc()).app_name)
    finally:
        store.close()
    ledger = Ledger.open(store_dir, app)
    try:
        chain = ledger.chain_state
        keep_s = retention_s(chain["params"])
        report = ErasureReport()
        due_members: dict[str, list[str]] = {}
        for member, height in sorted(chain["erased"].items()):
            header = ledger.store.header(height)
            decided_at = header["time"] if header is not None else ledger.head["time"]
            if now < decided_at + keep_s:
                report.waiting[member] = decided_at + keep_s
                continue
            due_members[member] = sorted(
                m for m, entry in chain["meters"].items() if entry["owner"] == member
            )
        meters = [meter for ms in due_members.values() for meter in ms]
        report.held = held_in_state(ledger.state["app"], chain["params"], meters)
        # one scan of txs for all of them (txs has no index by signer: store schema 3)
        rows = ledger.store.conn.execute(
            "SELECT hash FROM txs WHERE signer IN (SELECT value FROM json_each(?))", (json.dumps(meters),)
        )
        hashes = [bytes(h) for (h,) in rows]
        # what others signed about those meters (the grid operator's data), as verify allows
        about = transactions_about(ledger.store, app)
        departing = set(meters)
        hashes.extend(bytes.fromhex(tx) for tx, subject in about.items() if subject in departing)
    finally:
        ledger.close()  # also saves the state at the head, so reopening needs no erased payload
    if not due_members:
        return report
    store = Store.open(store_dir)
    try:
        store.conn.execute("PRAGMA secure_delete=ON")
        report.erased_payloads = store.erase_payloads(hashes)
        store.conn.execute("VACUUM")
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    report.erased_members = due_members
    return report
