"""Monthly statements for a community's treasurer: read the ledger, issue numbered statements into
the operator's billing store, write them as JSON, CSV and PDF, and verify one against the chain.

The figures come from ``market.billing`` (pure); this module does the I/O around it:

- :func:`ledger_view` reads a node's store up to one height into a ``LedgerView``;
- :class:`IssuedStore` is ``<billing>/issued.sqlite``: every statement and note ever issued,
  numbered gap-free per community and period, never updated or deleted (SQLite triggers refuse);
- :func:`issue_period` / :func:`issue_corrections` issue a month's statements or its credit/debit
  notes; :func:`write_files` writes ``<number>.json|.csv|.pdf``; :func:`verify_file` re-derives a
  JSON or PDF statement from the chain at its height and names every figure that differs.

The PDF carries the canonical JSON as an embedded file (``statement.json``), which
``verify_file`` reads back with pypdf and also checks against the PDF's visible text.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import logging
import re
import sqlite3
import tomllib
import unicodedata
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from importlib import resources
from itertools import permutations
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chain.canonical import dumps_checked, loads_strict
from chain.keys import key_id, load_public_key
from chain.private_files import COMPANIONS, private_file, private_folder, write_private
from chain.store import Store, is_corrupt
from market.app import estimate_ignored
from market.billing import (
    FORMAT,
    FORMATS,
    LedgerView,
    MeterInfo,
    VatSetting,
    correction_note,
    figures_of,
    member_statement,
    members_to_bill,
    note_between,
    note_shown,
    statement_number,
    with_number,
)
from market.params import GRIDOPS, METER_THEN_GRIDOPS, with_defaults
from market.spreadsheet import text_cell
from peerwatt.errors import UserError, write_outputs
from peerwatt.settings import one_line

ISSUED_DB = "issued.sqlite"
CONFIG = "billing.toml"
# how long a run waits for another one that holds the register's write lock (a run of several
# hundred households renders their PDFs inside its transaction)
LOCK_WAIT_S = 120

log = logging.getLogger("peerwatt.statements")
# the advice for a register that cannot be opened or written
_CANNOT_WRITE = (
    " (the file or the billing folder cannot be opened or written: check their owner and mode, and "
    "that the disk is not mounted read-only)"
)


# Writes issued documents' files (peerwatt.statements.write_files with its folder)
Writer = Callable[[list[dict[str, Any]]], object]


class BillingError(Exception):
    """Something the operator must fix; the message says what."""


# -- owner-only files ------------------------------------------------------------------------
# The register holds every household's statements and (after `statements bank-details`) names,
# IBANs and mandates; the statement files hold a household's name and its energy and money: the
# billing folder is made 0700, the register and its SQLite companions and each statement file 0600,
# whatever the umask; a wider billing folder or register is narrowed with one log line (as the
# dashboard does for its instance folder: chain/private_files.py).

# -- reading the ledger ------------------------------------------------------------------------


def _kid(sec1_hex: str) -> str:
    return key_id(load_public_key(sec1_hex))


@dataclass(frozen=True)
class Registry:
    """Who and what the community was after a block, from its genesis and its passed votes."""

    params: dict[str, Any]  # as last set, timezone included
    history: list[tuple[int, dict[str, Any]]]  # (height, params from then on)
    members: dict[str, str]  # key id -> name
    removed: dict[str, int]  # member key id -> time removed
    meters: dict[str, MeterInfo]


def registry(store: Store, height: int | None = None) -> Registry:
    """The community's registry after block ``height`` (default: the last block): the genesis's
    members, meters and parameters with every passed vote applied (what `peerwatt report` needs,
    without the readings and results :func:`ledger_view` also reads)."""
    height = store.height() if height is None else height
    genesis = loads_strict(store.genesis_doc())
    community = genesis["community"]
    params = dict(genesis.get("app", {}))
    history: list[tuple[int, dict[str, Any]]] = [(0, dict(params))]
    members = {mid: m.get("name", "") for mid, m in genesis["members"].items()}
    meters = {
        mid: MeterInfo(mid, m["owner"], m.get("name", ""), m["serial"], m["capacity_w"], community["time"])
        for mid, m in genesis["meters"].items()
    }
    removed: dict[str, int] = {}
    times = dict(store.conn.execute("SELECT height, time FROM blocks WHERE height <= ?", (height,)))
    for h, _idx, data in store.results_of_kinds(["gov"], high=height):
        g = loads_strict(data)
        if g["outcome"] != "passed":
            continue
        payload = store.payload(bytes.fromhex(g["proposal"]))
        if payload is None:
            raise BillingError(f"the proposal {g['proposal'][:12]} of block {h} is missing")
        args = loads_strict(payload)["body"]["args"]
        at = times[h]
        action = g["action"]
        if action == "enroll_meter":
            kid = _kid(args["key"])
            meters[kid] = MeterInfo(kid, args["owner"], "", args["serial"], args["capacity_w"], at)
        elif action == "revoke_meter":
            m = meters[args["meter"]]
            meters[m.meter] = MeterInfo(m.meter, m.owner, m.name, m.serial, m.capacity_w, m.enrolled_at, at)
        elif action == "add_member":
            kid = _kid(args["key"])
            members[kid] = args.get("name", "")
            removed.pop(kid, None)  # admitted again: a member once more
        elif action == "remove_member":
            removed[args["member"]] = at
        elif action == "set_param":
            params[args["name"]] = args["value"]
            history.append((h, dict(params)))
    return Registry(params, history, members, removed, meters)


def refused_txs(store: Store, height: int | None = None) -> set[tuple[int, int]]:
    """(height, index) of every transaction up to block ``height`` the ledger refused: it is in
    its block, but its content never took effect."""
    return {(h, loads_strict(data)["index"]) for h, _idx, data in store.refused_tx_results(high=height)}


def accepted_readings(
    store: Store, height: int | None = None, refused: set[tuple[int, int]] | None = None
) -> tuple[dict[str, dict[int, tuple[int, int, str]]], set[str]]:
    """Per meter, {interval: (import_wh, export_wh, serial)} of the readings the ledger accepted up
    to block ``height`` (a correction replaces the reading it corrects), and the meters with a
    reading whose payload was erased (their readings are incomplete)."""
    refused = refused_txs(store, height) if refused is None else refused
    readings: dict[str, dict[int, tuple[int, int, str]]] = {}
    erased: set[str] = set()
    for h, idx, signer, payload in store.payloads_of_type("reading", high=height):
        if (h, idx) in refused:
            continue
        if payload is None:
            erased.add(signer)
            continue
        body = loads_strict(payload)["body"]
        readings.setdefault(signer, {})[body["interval"]] = (
            body["import_wh"],
            body["export_wh"],
            body["serial"],
        )
    return readings, erased


def ledger_view(store: Store, height: int | None = None) -> LedgerView:
    """What the ledger held after block ``height`` (default: the last block)."""
    head = store.height()
    height = head if height is None else height
    row = store.block_row(height) if 0 <= height <= head else None
    if row is None:
        raise BillingError(f"the ledger has no block {height} (its last block is {head})")
    community = loads_strict(store.genesis_doc())["community"]
    reg = registry(store, height)
    params, history = reg.params, reg.history

    def rows(kind: str) -> list[dict[str, Any]]:
        return [
            dict(loads_strict(data), height=h)
            for h, _idx, data in store.results_of_kinds([kind], high=height)
        ]

    rejected = refused_txs(store, height)
    readings, erased = accepted_readings(store, height, rejected)
    gridops: dict[str, dict[int, tuple[int, int, str]]] = {}
    for h, idx, _signer, payload in store.payloads_of_type("gridops", high=height):
        if (h, idx) in rejected or payload is None:
            continue
        body = loads_strict(payload)["body"]
        held = gridops.setdefault(body["meter"], {})
        for r in body["rows"]:
            if estimate_ignored(held.get(r["interval"]), r["quality"]):
                continue  # the market does not record it either (market/app.py)
            held[r["interval"]] = (r["import_wh"], r["export_wh"], r["quality"])
    tz = params.get("timezone", community.get("timezone", "UTC"))
    market_params = {k: v for k, v in params.items() if k != "timezone"}
    return LedgerView(
        community=community["id"],
        timezone=tz,
        height=height,
        block_hash=bytes(row[1]).hex(),
        block_time=row[2],
        params=with_defaults(market_params),
        param_history=[(h, {k: v for k, v in p.items() if k != "timezone"}) for h, p in history],
        members=reg.members,
        removed_members=reg.removed,
        meters=reg.meters,
        readings=readings,
        trades=rows("trade"),
        settlements=rows("settlement"),
        adjustments=rows("adjustment"),
        balances=rows("balance"),
        erased_meters=erased,
        gridops=gridops,
    )


def period_bounds(period: str, timezone: str) -> tuple[int, int]:
    """[start, end) in Unix s of a month ``YYYY-MM`` in the community's time zone."""
    try:
        first = date.fromisoformat(f"{period}-01")
    except ValueError:
        raise BillingError(f"period {period!r}: use a month like 2026-06") from None
    if len(period) != 7:
        raise BillingError(f"period {period!r}: use a month like 2026-06")
    if (first.year, first.month) == (date.max.year, 12):  # (its end would be in year 10000)
        raise BillingError(
            f"period {period!r}: it ends on 10000-01-01, after the calendar's last day (9999-12-31); "
            "use a month like 2026-06"
        )
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    tz = ZoneInfo(timezone)
    return (
        int(datetime.combine(first, time(0), tz).timestamp()),
        int(datetime.combine(nxt, time(0), tz).timestamp()),
    )


# -- the operator's billing folder -----------------------------------------------------------


@dataclass(frozen=True)
class BillingConfig:
    """``billing.toml``: currency and VAT (the operator's, not the ledger's)."""

    currency: str
    vat: VatSetting


DEFAULT_VAT_NOTE = "VAT not charged."


# what billing.toml may hold: its tables and their keys (docs/billing.md); anything else is refused,
# as a misspelt key silently took its default (found in a QA pass: `currancy = "USD"` issued
# statements in EUR, and an issued statement never changes)
BILLING_TABLES: dict[str, tuple[str, ...]] = {
    "vat": ("charged", "rate_percent", "note"),
    "sepa": ("name", "iban", "bic", "creditor_id"),
    "gridops": ("metering_points",),
}
BILLING_KEYS = ("currency", *BILLING_TABLES)
_CURRENCY = re.compile(r"[A-Z]{3}")  # an ISO 4217 alphabetic code
_RATE = re.compile(r"([0-9]+)(?:\.([0-9]{0,2}))?")  # ASCII digits only: str.isdigit takes '²' and '٢'
# the highest VAT rate billing.toml takes, in basis points: the highest standard rate anywhere is 27 %
# (Hungary), so a higher one is a typo ("200" for "20.0", "77" for "7.7"), and an issued statement
# never changes (found in a QA pass: 1000 % issued 50.71 VAT on 0.51 net). docs/billing.md
VAT_MAX_BP = 3000
CURRENCIES_FILE = "data/iso4217.txt"  # in this package: the active ISO 4217 codes billed in


@cache
def currencies() -> frozenset[str]:
    """The active ISO 4217 currency codes a community may bill in (peerwatt/data/iso4217.txt)."""
    text = resources.files("peerwatt").joinpath(CURRENCIES_FILE).read_text(encoding="utf-8")
    return frozenset(
        line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _close_codes(code: str) -> list[str]:
    """Active codes a typo of ``code`` may have meant: its letters in another order first ("ERU":
    EUR), then one letter changed; at most three."""
    codes = currencies()
    swapped = sorted({"".join(p) for p in permutations(code)} & codes)
    changed = sorted(c for c in codes if sum(a != b for a, b in zip(c, code, strict=True)) == 1)
    return list(dict.fromkeys(swapped + changed))[:3]


def check_currency(currency: Any, path: Path) -> str:
    """``currency`` if it is an active ISO 4217 code, else BillingError naming it and the file."""
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise BillingError(
            f'{path}: currency {currency!r} must be an ISO 4217 code, three capital letters like "EUR"'
        )
    if currency not in currencies():
        close = _close_codes(currency)
        hint = "did you mean " + " or ".join(f'"{c}"' for c in close) + "? " if close else ""
        raise BillingError(
            f"{path}: currency {currency!r} is not an active ISO 4217 currency code ({hint}the codes "
            f"are in peerwatt/{CURRENCIES_FILE}; docs/billing.md)"
        )
    return currency


def vat_rate_bp(rate: Any, path: Path) -> int:
    """``[vat] rate_percent`` ("20", "7.7") in basis points, within 0 to VAT_MAX_BP; BillingError."""
    if not isinstance(rate, str):
        raise BillingError(f'{path}: vat.rate_percent must be a string like "20" or "7.7"')
    match = _RATE.fullmatch(rate)
    if match is None:
        raise BillingError(
            f"{path}: vat.rate_percent {rate!r} must be a number of percent with at most two decimals, "
            'e.g. "20" or "7.7"'
        )
    whole, frac = match.groups()
    rate_bp = int(whole) * 100 + int(((frac or "") + "00")[:2])
    if rate_bp > VAT_MAX_BP:
        raise BillingError(
            f"{path}: vat.rate_percent {rate!r} is above {VAT_MAX_BP // 100} %, the highest VAT rate "
            'billing.toml takes (the highest standard rate anywhere is 27 %): a typo? write e.g. "20" '
            'or "7.7" (docs/billing.md)'
        )
    return rate_bp


def check_billing_keys(doc: dict[str, Any], path: Path) -> None:
    """BillingError naming the first unknown key or table of billing.toml ``doc``."""
    for key in doc:
        if key not in BILLING_KEYS:
            raise BillingError(
                f"{path}: unknown key {key!r} (billing.toml holds currency, [vat], [sepa] and "
                "[gridops.metering_points]: docs/billing.md)"
            )
    for table, keys in BILLING_TABLES.items():
        value = doc.get(table)
        if isinstance(value, dict):
            for key in value:
                if key not in keys:
                    raise BillingError(
                        f"{path}: unknown key {key!r} in [{table}] (it holds {', '.join(keys)}: "
                        "docs/billing.md)"
                    )


def read_billing_toml(path: Path) -> dict[str, Any]:
    """The parsed ``billing.toml`` at ``path`` (it must exist), its keys checked; BillingError
    names the file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BillingError(
            f"{path} is not a TOML text file (not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): write billing.toml as in docs/billing.md"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise BillingError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise BillingError(f"cannot read {path}: {exc.strerror or exc}") from None
    check_billing_keys(doc, path)
    return doc


def load_config(billing_dir: Path) -> BillingConfig:
    """Read ``billing.toml`` (absent, or without a [vat] table: VAT not charged with the default
    note; without currency: EUR). Found in a QA pass: a file holding only [gridops.metering_points],
    as docs/billing.md shows it, was refused for its missing vat.note."""
    path = billing_dir / CONFIG
    if not path.exists():
        return BillingConfig("EUR", VatSetting(False, 0, DEFAULT_VAT_NOTE))
    doc = read_billing_toml(path)
    currency = doc.get("currency", "EUR")
    check_currency(currency, path)
    if "vat" not in doc:  # a file of other settings ([sepa], [gridops.metering_points]): as without it
        return BillingConfig(currency, VatSetting(False, 0, DEFAULT_VAT_NOTE))
    vat = doc["vat"]
    if not isinstance(vat, dict):
        raise BillingError(
            f"{path}: vat must be a table: [vat] with charged, rate_percent, note (docs/billing.md)"
        )
    charged = vat.get("charged", False)
    if not isinstance(charged, bool):
        raise BillingError(f"{path}: vat.charged must be true or false")
    if charged:
        rate_bp = vat_rate_bp(vat.get("rate_percent"), path)
        return BillingConfig(currency, VatSetting(True, rate_bp, str(vat.get("note", ""))))
    note = vat.get("note")
    if not isinstance(note, str) or not note:
        raise BillingError(
            f"{path}: with vat.charged = false, vat.note must state why (the legal note); without a [vat] "
            f'table VAT is not charged, with the note "{DEFAULT_VAT_NOTE}"'
        )
    return BillingConfig(currency, VatSetting(False, 0, note))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    number TEXT PRIMARY KEY, community TEXT NOT NULL, period TEXT NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, member TEXT NOT NULL, refers_to TEXT, issued_at TEXT NOT NULL,
    height INTEGER NOT NULL, doc BLOB NOT NULL, sha256 TEXT NOT NULL,
    UNIQUE (community, period, seq));
CREATE TABLE IF NOT EXISTS runs (
    community TEXT NOT NULL, period TEXT NOT NULL, kind TEXT NOT NULL, issued_at TEXT NOT NULL,
    height INTEGER NOT NULL, first_seq INTEGER, last_seq INTEGER);
CREATE TRIGGER IF NOT EXISTS documents_never_change BEFORE UPDATE ON documents
    BEGIN SELECT RAISE(ABORT, 'an issued statement never changes; issue a correction note'); END;
CREATE TRIGGER IF NOT EXISTS documents_never_deleted BEFORE DELETE ON documents
    BEGIN SELECT RAISE(ABORT, 'an issued statement is never deleted'); END;
"""


class IssuedStore:
    """``issued.sqlite``: every statement and note issued, gap-free numbers, append-only."""

    def __init__(self, billing_dir: Path) -> None:
        self.path = billing_dir / ISSUED_DB
        if self.path.exists() and not self.path.is_file():  # refused before anything is changed
            raise BillingError(
                f"cannot use the register {self.path}: it is not a file (a folder?); it should be the "
                "billing folder's register of issued statements"
            )
        self.folder_made = not billing_dir.exists()  # removed again with a register that holds nothing
        try:
            private_folder(billing_dir)
        except OSError as exc:
            raise BillingError(
                f"cannot create the billing folder {billing_dir}: {exc.strerror or exc}"
            ) from None
        try:
            self.made = private_file(self.path)  # made by this run: removed again if nothing is kept
        except OSError as exc:
            raise self.error(exc) from None
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_WAIT_S)
        except sqlite3.Error as exc:
            self.discard()
            raise self.error(exc) from None
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self.conn.close()
            self.discard()
            raise self.error(exc) from None
        self._outer = False  # inside transaction(): issue() is part of it
        self._ledger_checked: set[str] = set()  # communities whose documents name this store's blocks

    def error(self, exc: sqlite3.Error | OSError) -> BillingError:
        """A one-line BillingError for an error on the register, its advice what is true of the
        kind of error: another run holding it, a file or folder that cannot be written (owner,
        mode, a read-only disk), a damaged file (restore it from its backup), a full disk, a disk
        I/O error; any other error said as SQLite says it, with no advice. Found in a QA pass:
        every error, a damaged file too ("file is not a database"), was told to check the billing
        folder's owner and mode. Every caller has recorded nothing when it raises this (an error
        in a transaction rolls it back)."""
        if isinstance(exc, OSError):  # making the file (private_file)
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return BillingError(f"cannot use the register {self.path}: {exc.strerror}{_CANNOT_WRITE}")
            return BillingError(f"cannot use the register {self.path}: {exc.strerror or exc}")
        name = getattr(exc, "sqlite_errorname", None) or ""
        if is_corrupt(exc):
            return self.damaged(str(exc))
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or (not name and "locked" in str(exc)):
            return BillingError(
                f"cannot use the register {self.path}: another run (peerwatt statements, pay, mark-paid) "
                f"has held it for more than {LOCK_WAIT_S} s; run this again when it has finished"
            )
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
            return BillingError(f"cannot use the register {self.path}: {exc}{_CANNOT_WRITE}")
        if name == "SQLITE_FULL":
            return BillingError(
                f"cannot use the register {self.path}: {exc} (the disk is full: free space and run "
                "this again; nothing recorded)"
            )
        if name.startswith("SQLITE_IOERR"):
            return BillingError(
                f"cannot use the register {self.path}: {exc} (the disk reported an I/O error: check "
                "the disk; nothing recorded)"
            )
        return BillingError(f"cannot use the register {self.path}: {exc}")

    def damaged(self, problem: str) -> BillingError:
        """The one line for a damaged register: ``problem`` is what SQLite or its quick_check
        found."""
        return BillingError(
            f"cannot use the register {self.path}: {problem}: the file is damaged, nothing recorded: "
            "restore it from its backup (docs/billing.md)"
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> IssuedStore:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """Closed after the run; a failed or interrupted one goes through close_after_failure."""
        if kind is None:
            self.close()
        else:
            self.close_after_failure()

    def close_after_failure(self) -> None:
        """Close after a run that failed (or was interrupted): a register this run made and that
        holds nothing is removed with its companions (a run that issues nothing makes none)."""
        empty = False
        if self.made:
            try:
                tables = [
                    t for (t,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                empty = not any(self.conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)
            except sqlite3.Error:
                empty = False
        self.conn.close()
        if empty:
            self.discard()

    def discard(self) -> None:
        """Remove the register (and its companions) if this run made it: for a register just made
        that could not be set up or holds nothing."""
        if not self.made:
            return
        for candidate in (self.path, *(self.path.with_name(self.path.name + s) for s in COMPANIONS)):
            try:
                candidate.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the empty register %s: %s", candidate, exc.strerror)
        if self.folder_made:
            try:
                self.path.parent.rmdir()  # only when empty
            except OSError:
                pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction around several :meth:`issue` calls (a month-end run): all of them are
        issued, or none."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        self._outer = True
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite discards the transaction on close
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc) from None
            raise
        finally:
            self._outer = False

    def locked(self) -> AbstractContextManager[None]:
        """The write lock for a read-decide-write (what was issued, what to issue now, issuing it):
        a transaction of its own, or the one already open. Another run waits for it, so it never
        decides on what it read before this one's documents were kept (found in a QA pass: two
        `--corrections` runs at once issued every correction note twice)."""
        return nullcontext() if self._outer else self.transaction()

    def check_ledger(self, store: Store, community: str) -> None:
        """BillingError unless every document of ``community`` in the register names a block this
        store has at its height (one document per height is read: a run's documents share it).
        Found in a QA pass: a register issued from another ledger of the same community id had a
        correction run issue a note reversing every household's statement, and late statements
        for that ledger's households; `statements verify` refuses such a document, so issuing
        on top of it is refused too (docs/billing.md)."""
        if community in self._ledger_checked:
            return
        head = store.height()
        for number, height, data in self.conn.execute(
            "SELECT number, height, doc FROM documents WHERE rowid IN ("
            "SELECT min(rowid) FROM documents WHERE community = ? GROUP BY height) ORDER BY height",
            (community,),
        ):
            named = figures_of(loads_strict(bytes(data)))["ledger"]["block_hash"]
            row = store.block_row(height) if 0 <= height <= head else None
            if row is None:
                raise BillingError(
                    f"{self.path} holds {number}, computed from block {height}, and this store's last "
                    f"block is {head}: run on a node that has caught up, or give --billing the folder "
                    "of this ledger's statements; nothing issued"
                )
            if bytes(row[1]).hex() != named:
                raise BillingError(
                    f"{self.path} holds documents of another ledger: {number} was computed from block "
                    f"{height} {named[:16]}..., this store's block {height} is {bytes(row[1]).hex()[:16]}... "
                    "(another chain or a forged statement); nothing issued: give --billing the folder "
                    "of this ledger's statements"
                )
        self._ledger_checked.add(community)

    def documents(self, community: str, period: str) -> list[dict[str, Any]]:
        return [
            loads_strict(bytes(d))
            for (d,) in self.conn.execute(
                "SELECT doc FROM documents WHERE community = ? AND period = ? ORDER BY seq",
                (community, period),
            )
        ]

    def has_final(self, community: str, member: str) -> bool:
        """Whether a statement marked final was issued to ``member`` (any period)."""
        return any(
            loads_strict(bytes(d)).get("final") is True
            for (d,) in self.conn.execute(
                "SELECT doc FROM documents WHERE community = ? AND member = ? AND kind = 'statement'",
                (community, member),
            )
        )

    def get(self, number: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT doc FROM documents WHERE number = ?", (number,)).fetchone()
        return None if row is None else loads_strict(bytes(row[0]))

    def first_run(self, community: str, period: str) -> tuple[str, int, int | None, int | None] | None:
        return self.conn.execute(
            "SELECT issued_at, height, first_seq, last_seq FROM runs"
            " WHERE community = ? AND period = ? AND kind = 'statements'",
            (community, period),
        ).fetchone()

    def issue(
        self,
        community: str,
        period: str,
        kind: str,
        height: int,
        issued_at: str,
        docs: list[dict[str, Any]],
        write: Writer | None = None,
    ) -> list[dict[str, Any]]:
        """Number ``docs`` in order after the period's last number and store them, all in one
        transaction (so numbers are gap-free even if the machine stops halfway). ``write`` gets
        the numbered documents before the transaction commits: if it fails, nothing is issued."""
        if not self._outer:
            with self.transaction():
                return self.issue(community, period, kind, height, issued_at, docs, write)
        if kind == "statements" and self.first_run(community, period) is not None:
            raise BillingError(f"statements for {period} were already issued")
        (last,) = self.conn.execute(
            "SELECT coalesce(max(seq), 0) FROM documents WHERE community = ? AND period = ?",
            (community, period),
        ).fetchone()
        issued = []
        for i, doc in enumerate(docs, start=last + 1):
            number = statement_number(community, period, i)
            if doc["kind"] == "statement":
                doc = with_number(doc, number, issued_at)
            else:
                doc = dict(doc, number=number)
            data = dumps_checked(doc)
            self.conn.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    number,
                    community,
                    period,
                    i,
                    doc["kind"],
                    doc["member"],
                    doc.get("references"),
                    issued_at,
                    height,
                    data,
                    hashlib.sha256(data).hexdigest(),
                ),
            )
            issued.append(doc)
        if write is not None:
            write(issued)
        self.conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                community,
                period,
                kind,
                issued_at,
                height,
                last + 1 if docs else None,
                last + len(docs) or None,
            ),
        )
        return issued


def _ended(view: LedgerView, period: str, store: Store) -> tuple[int, int]:
    """[start, end) of ``period``; BillingError if it has not ended on the ledger, or ended before
    the ledger began."""
    start, end = period_bounds(period, view.timezone)
    began = loads_strict(store.genesis_doc())["community"]["time"]
    if end <= began:
        raise BillingError(
            f"{period} ended before this ledger began "
            f"({datetime.fromtimestamp(began, ZoneInfo(view.timezone)).isoformat()}): nothing in it to bill"
        )
    if view.block_time < end:
        raise BillingError(
            f"{period} has not ended on the ledger: its last block is at "
            f"{datetime.fromtimestamp(view.block_time, ZoneInfo(view.timezone)).isoformat()}"
        )
    return start, end


def issue_period(
    store: Store,
    billing_dir: Path,
    period: str,
    *,
    issued_at: str,
    height: int | None = None,
    write: Writer | None = None,
    register: IssuedStore | None = None,
    view: LedgerView | None = None,
) -> list[dict[str, Any]]:
    """Issue every member's statement for ``period`` from the ledger at ``height`` (default: the
    last block). Refuses a period that has not ended on the ledger, or one already issued.
    ``write``: see :meth:`IssuedStore.issue`; ``register``: an open one (default: its own);
    ``view``: the ledger at ``height`` if the caller built it already."""
    view = ledger_view(store, height) if view is None else view
    config = load_config(billing_dir)  # the issuer's settings are checked whatever the period
    start, end = _ended(view, period, store)
    with (
        nullcontext(register) if register is not None else IssuedStore(billing_dir) as issued,
        issued.locked(),  # checked and issued under one lock: a run at the same time waits
    ):
        issued.check_ledger(store, view.community)
        run = issued.first_run(view.community, period)
        if run is not None:
            first, last = run[2], run[3]
            numbers = (
                f"{statement_number(view.community, period, first)} to "
                f"{statement_number(view.community, period, last)}"
                if first
                else "none"
            )
            raise BillingError(
                f"statements for {period} were issued on {run[0]} from ledger height {run[1]} "
                f"({numbers}) and are never issued again; for changes since, run with --corrections"
            )
        billed = members_to_bill(view, start, end)
        docs = [
            member_statement(
                view, m, period=period, start=start, end=end, vat=config.vat, currency=config.currency
            )
            for m in sorted({*billed, *_closing(view, issued, start, end, billed)})
        ]
        return issued.issue(view.community, period, "statements", view.height, issued_at, docs, write)


def issue_corrections(
    store: Store,
    billing_dir: Path,
    period: str,
    *,
    issued_at: str,
    height: int | None = None,
    write: Writer | None = None,
    register: IssuedStore | None = None,
    view: LedgerView | None = None,
) -> list[dict[str, Any]]:
    """Re-derive the period's statements at ``height`` (default: the last block) and issue a credit
    or debit note for every member whose figures changed since the last document issued for them
    (and a statement for a member first billable now). The issued documents are not touched.
    ``view``: the ledger at ``height`` if the caller built it already."""
    view = ledger_view(store, height) if view is None else view
    start, end = period_bounds(period, view.timezone)
    if register is None and not (billing_dir / ISSUED_DB).exists():  # (not made just to say so)
        raise BillingError(f"no statements for {period} were issued yet; issue them first")
    with (
        nullcontext(register) if register is not None else IssuedStore(billing_dir) as issued,
        issued.locked(),  # what was issued is read under the lock the notes are issued with
    ):
        if issued.first_run(view.community, period) is None:
            raise BillingError(f"no statements for {period} were issued yet; issue them first")
        issued.check_ledger(store, view.community)
        latest: dict[str, dict[str, Any]] = {}
        for doc in issued.documents(view.community, period):
            latest[doc["member"]] = doc
        newest = max(figures_of(d)["ledger"]["height"] for d in latest.values()) if latest else -1
        if view.height < newest:  # its notes would take back what the later figures billed
            raise BillingError(
                f"the register's documents for {period} were computed up to ledger height {newest}: "
                f"corrections from height {view.height}, before it, are not issued (give --height "
                f"{newest} or later, or leave it out for the last block)"
            )
        docs = []
        billed = set(latest) | set(members_to_bill(view, start, end))
        for member in sorted(billed | set(_closing(view, issued, start, end, billed))):
            previous = latest.get(member)
            vat = (
                VatSetting.from_json(figures_of(previous)["vat"])
                if previous
                else load_config(billing_dir).vat
            )
            currency = previous["currency"] if previous else load_config(billing_dir).currency
            now = member_statement(
                view, member, period=period, start=start, end=end, vat=vat, currency=currency
            )
            if previous is None:
                docs.append(now)
                continue
            note = correction_note(previous, now, number="", issued_at=issued_at)
            if note is not None:
                docs.append(note)
        return issued.issue(view.community, period, "corrections", view.height, issued_at, docs, write)


def _closing(
    view: LedgerView, issued: IssuedStore, start: int, end: int, billed: Collection[str]
) -> list[str]:
    """Members removed during [start, end) whom the period has nothing to bill and who have no
    final statement yet: they get the period's statement, their final one (docs/billing.md), also
    when their meters were revoked in an earlier month whose statement was issued before the
    removal and so not final. One issued after the removal is final already: no second one (found
    in an update pass)."""
    return [
        member
        for member, at in view.removed_members.items()
        if start <= at < end and member not in billed and not issued.has_final(view.community, member)
    ]


def earlier_periods(period: str, months: int = 2) -> list[str]:
    """The ``months`` months before ``period`` (YYYY-MM), oldest first."""
    year, month = int(period[:4]), int(period[5:7])
    out = []
    for back in range(months, 0, -1):
        y, m = divmod(year * 12 + month - 1 - back, 12)
        out.append(f"{y:04d}-{m + 1:02d}")
    return out


def issue_month_end(
    store: Store,
    billing_dir: Path,
    period: str,
    *,
    issued_at: str,
    height: int | None = None,
    write: Writer | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The month-end run: ``period``'s statements, then the correction notes of each of the two
    months before it whose statements were issued, for what changed on the ledger since (late
    readings, the grid operator's data): corrections show up with the next statements. All of it
    is issued (and written by ``write``) in one transaction: a run that fails issues nothing."""
    view = ledger_view(store, height)
    community = view.community
    load_config(billing_dir)  # the issuer's settings are checked whatever the period
    start, end = _ended(view, period, store)  # what is refused is refused before the register is made
    if not (billing_dir / ISSUED_DB).exists() and not members_to_bill(view, start, end):
        return [], {}  # nothing issued before, nothing to issue now: nothing is made (no register)
    notes: dict[str, list[dict[str, Any]]] = {}
    numbered: list[dict[str, Any]] = []  # written together at the end: all files or none
    collect = None if write is None else numbered.extend
    # a failed or interrupted run: a register made for it holding nothing goes (IssuedStore.__exit__)
    with IssuedStore(billing_dir) as register, register.transaction():  # all issued, or none
        # one view of the ledger for the whole run (building it reads every record: 4.5 s for 10
        # homes and 120 days here, built up to four times per run before)
        statements = issue_period(
            store, billing_dir, period, issued_at=issued_at, height=height, write=collect,
            register=register, view=view,
        )  # fmt: skip
        for earlier in earlier_periods(period):
            if register.first_run(community, earlier) is not None:
                notes[earlier] = issue_corrections(
                    store, billing_dir, earlier, issued_at=issued_at, height=height, write=collect,
                    register=register, view=view,
                )  # fmt: skip
        if write is not None and numbered:
            write(numbered)
    return statements, notes


# -- formatting ------------------------------------------------------------------------------


def fmt_money(micro: int) -> str:
    """Whole-cent micro-units as ``-1,234.56`` (ASCII, for the PDF's core font)."""
    cents = abs(micro) // 10_000
    sign = "-" if micro < 0 and cents else ""
    return f"{sign}{cents // 100:,}.{cents % 100:02d}"


def fmt_kwh(wh: int) -> str:
    return f"{'-' if wh < 0 else ''}{abs(wh) // 1000:,}.{abs(wh) % 1000:03d} kWh"


def fmt_rate(price: int | None) -> str:
    """micro-units per kWh as cents per kWh, exact (``95000`` -> ``9.50 ct/kWh``)."""
    if price is None:
        return ""
    whole, frac = divmod(price, 10_000)
    digits = f"{frac:04d}".rstrip("0").ljust(2, "0")
    return f"{whole}.{digits} ct/kWh"


def fmt_day(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def fmt_flag(flag: str, tz: str) -> str:
    """``1a2b3c4d:missing_reading@X..Y`` (interval starts, Unix s) as ``1a2b3c4d missing_reading,
    intervals 2026-06-15 00:00 to 2026-06-16 00:00`` in the community's time zone."""
    what, _, at = flag.rpartition("@")
    first, _, last = at.partition("..")
    if not (first.isdigit() and (not last or last.isdigit())):
        return flag
    when = (
        f"intervals {fmt_day(int(first), tz)} to {fmt_day(int(last), tz)}"
        if last
        else (f"interval {fmt_day(int(first), tz)}")
    )
    return f"{what.replace(':', ' ', 1)}, {when}"


def fmt_bp(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d} %"


def total_sentence(doc: dict[str, Any]) -> str:
    """'To pay: EUR 12.34' / 'To be paid to you: EUR 12.34' / 'Nothing to pay'."""
    st = figures_of(doc)
    total = st["shown"]["total"] if doc["kind"] == "statement" else doc["shown_total"]
    cur = st["currency"]
    if total < 0:
        return f"To pay: {cur} {fmt_money(-total)}"
    if total > 0:
        return f"To be paid to you: {cur} {fmt_money(total)}"
    return f"Nothing to pay: {cur} 0.00"


def csv_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """The statement as rows: section, code, label, counterparty, energy_wh, rate, amount (micro-units),
    shown (whole cents as micro-units), provisional."""
    header = [
        "section",
        "code",
        "label",
        "counterparty",
        "energy_wh",
        "rate_per_kwh",
        "amount",
        "shown",
        "provisional",
    ]
    rows: list[list[Any]] = [header]
    rows.append(["document", doc["kind"], doc["number"], doc.get("references", ""), "", "", "", "", ""])
    rows.append(
        ["ledger", "height", doc["ledger"]["block_hash"], "", "", "", doc["ledger"]["height"], "", ""]
    )
    if doc["kind"] != "statement":
        changes = note_shown(doc)
        for code, delta in doc["deltas"].items():
            rows.append(["correction", code, "change", "", "", "", delta, changes[code], ""])
        rows.append(["total", "total", total_sentence(doc), "", "", "", doc["total"], doc["shown_total"], ""])
        return rows
    for k, v in doc["energy"].items():
        rows.append(["energy", k, "", "", v, "", "", "", ""])
    for name, key in (("sold_to", "sold_to"), ("bought_from", "bought_from")):
        for p, shown in zip(doc[key], doc["shown"][key], strict=True):
            sign = 1 if key == "sold_to" else -1
            rows.append(
                [
                    name,
                    p["member"],
                    p["name"],
                    p["member"],
                    p["energy_wh"],
                    p["avg_price"],
                    sign * p["amount"],
                    shown,
                    sign * p["provisional"],
                ]
            )
    for line in doc["lines"]:
        rows.append(
            [
                "line",
                line["code"],
                line["label"],
                "",
                line["energy_wh"],
                line["rate"],
                line["amount"],
                doc["shown"]["lines"][line["code"]],
                line["provisional"],
            ]
        )
    rows.append(["net", "net", "", "", "", "", doc["net"], doc["shown"]["net"], doc["provisional"]])
    rows.append(
        [
            "vat",
            "vat",
            doc["vat"]["note"],
            "",
            "",
            doc["vat"]["rate_bp"],
            doc["vat"]["amount"],
            doc["shown"]["vat"],
            "",
        ]
    )
    rows.append(["total", "total", total_sentence(doc), "", "", "", doc["total"], doc["shown"]["total"], ""])
    for k, v in doc["balance"].items():
        rows.append(["balance", k, "", "", "", "", v, "", ""])
    if doc["savings"]:
        for k, v in doc["savings"].items():
            rows.append(["savings", k, "", "", "", "", v, doc["shown"].get("savings", {}).get(k, ""), ""])
    return rows


def render_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([text_cell(c) for c in row] for row in csv_rows(doc))
    return out.getvalue()


def render_pdf(doc: dict[str, Any], source: str | None = None) -> bytes:
    """The statement (or note) as a one-or-two-page PDF with its canonical JSON embedded.
    ``source``: the community's settlement_source at the document's height, which words where
    its metered energy came from (None: not known, as a document does not say it)."""
    from fpdf import FPDF

    st = figures_of(doc)
    cur = st["currency"]
    tz = st["timezone"]
    pdf = FPDF(format="A4")
    pdf.set_creator("peerwatt")
    pdf.set_title(doc["number"])
    pdf.set_subject(f"{doc['kind'].replace('_', ' ')} {doc['number']}")
    pdf.add_page()

    # Every text is printed on one line per line it has (pdf_text: a control or formatting
    # character escaped, never a line break), and a name from the ledger (any string of up to 64
    # characters a genesis or vote gave) cut to its place with "..." (fit), the key id beside it.
    def text(s: str, size: int = 10, bold: bool = False, h: float = 5.5) -> None:
        pdf.set_font("Helvetica", "B" if bold else "", size)
        pdf.multi_cell(0, h, pdf_text(s), new_x="LMARGIN", new_y="NEXT")

    def row(cells: list[str], bold: bool = False, size: int = 9) -> None:
        widths = (80, 30, 32, 38)
        pdf.set_font("Helvetica", "B" if bold else "", size)
        for i, (w, c) in enumerate(zip(widths, cells, strict=False)):
            pdf.cell(w, 5.5, fit(pdf, c, w - 2 * pdf.c_margin), align="L" if i == 0 else "R")
        pdf.ln(5.5)

    def party(what: str, p: dict[str, Any]) -> None:
        """A neighbour's row: its name (cut to the cell) and, beneath, its full key id."""
        cells = [fmt_kwh(p["energy_wh"]), fmt_rate(p["avg_price"]), ""]
        if not p["name"]:
            row([f"  {what} {p['member']}", *cells])
            return
        row([f"  {what} {p['name']}", *cells])
        row([f"    key id {p['member']}"], size=7)

    def cut(s: str, width: float, size: int = 10) -> str:
        """``s`` as printed (pdf_text), cut to ``width`` mm at ``size`` pt."""
        pdf.set_font("Helvetica", "", size)
        return fit(pdf, s, width)

    def member_line() -> str:
        """'Member: NAME (KEYID)' on one line of the page: the name cut to what the rest leaves."""
        rest = f" ({st['member']})"
        pdf.set_font("Helvetica", "", 10)
        room = pdf.epw - 2 * pdf.c_margin - pdf.get_string_width(f"Member: {rest}")
        return f"Member: {cut(st['member_name'] or st['member'], room)}{rest}"

    title = {"statement": "Statement", "credit_note": "Credit note", "debit_note": "Debit note"}[doc["kind"]]
    text(f"{title} {doc['number']}", 15, bold=True, h=8)
    text(f"Community {st['community']} - period {st['period']} ({tz})")
    text(member_line())
    text(
        f"Issued {doc['issued_at']}. Computed from ledger height {st['ledger']['height']}, "
        f"block {st['ledger']['block_hash']}"
    )
    if doc["kind"] != "statement":
        text(
            f"Corrects {doc['references']} (replacing the figures of {doc['replaces_figures_of']}); "
            f"that document is unchanged."
        )
        pdf.ln(2)
        # the changes of the figures shown, which add up to the total paid (note_shown)
        changes = note_shown(doc)
        labels = {line["code"].partition("@")[0]: line["label"] for line in st["lines"]}
        row(["Line", "", "Rate", f"Change {cur}"], bold=True)
        for code in changes:
            if code not in ("vat", "total"):
                name, _, rate = code.partition("@")
                rate_shown = fmt_rate(int(rate)) if rate.isdigit() else ""
                row([labels.get(name, code), "", rate_shown, fmt_money(changes[code])])
        if st["vat"]["charged"] or changes["vat"]:
            row([f"VAT {fmt_bp(st['vat']['rate_bp'])}", "", "", fmt_money(changes["vat"])])
        row(["Total", "", "", fmt_money(changes["total"])], bold=True)
        pdf.ln(2)
        text(total_sentence(doc), 12, bold=True)
    else:
        for m in st["meters"]:
            text(
                f"Meter {cut(m['name'] or m['meter'][:8], 70)} (serial {cut(m['serial'], 50)}): billed from "
                f"{fmt_day(m['billed_from'], tz)} to {fmt_day(m['billed_to'], tz)}"
            )
            if "gridops_intervals" in m:
                text(f"  metered energy: {_energy_source(m, source)}", 8)
        e = st["energy"]
        pdf.ln(2)
        text("Energy", 11, bold=True)
        row(["Metered import", fmt_kwh(e["import_wh"]), "", ""])
        row(["Metered export", fmt_kwh(e["export_wh"]), "", ""])
        for p in st["sold_to"]:
            party("sold to", p)
        for p in st["bought_from"]:
            party("bought from", p)
        if e["pending_bought_wh"] or e["pending_sold_wh"]:
            row(
                [
                    "Cleared, not yet settled (bought/sold)",
                    fmt_kwh(e["pending_bought_wh"]),
                    fmt_kwh(e["pending_sold_wh"]),
                    "",
                ]
            )
        if e["unsettled_bought_wh"] or e["unsettled_sold_wh"]:
            row(
                [
                    "Not settled, readings flagged (bought/sold)",
                    fmt_kwh(e["unsettled_bought_wh"]),
                    fmt_kwh(e["unsettled_sold_wh"]),
                    "",
                ]
            )
        pdf.ln(2)
        text("Money with the community", 11, bold=True)
        row(["Line", "Energy", "Rate", f"Amount {cur}"], bold=True)
        for line in st["lines"]:
            prefix = "avg " if line["code"].startswith("p2p") and line["rate"] is not None else ""
            row(
                [
                    line["label"],
                    fmt_kwh(line["energy_wh"]),
                    prefix + fmt_rate(line["rate"]),
                    fmt_money(st["shown"]["lines"][line["code"]]),
                ]
            )
        row(["Net", "", "", fmt_money(st["shown"]["net"])], bold=True)
        if st["vat"]["charged"]:
            row([f"VAT {fmt_bp(st['vat']['rate_bp'])}", "", "", fmt_money(st["shown"]["vat"])])
        text(st["vat"]["note"], 8)
        if st["provisional"]:
            text(
                f"Of the net, {cur} {fmt_money(_round(st['provisional']))} is provisional: "
                + (
                    "readings for the last hours may still be corrected"
                    if not any("gridops_intervals" in m for m in st["meters"])
                    else "the grid operator's data may still be corrected or replace an estimated value"
                    if source == GRIDOPS
                    else "readings may still be corrected and the grid operator's validated data is due"
                )
                + "; a change comes as a credit or debit note.",
                8,
            )
        pdf.ln(1)
        text(total_sentence(doc), 12, bold=True)
        b = st["balance"]
        text(
            f"Community account on the ledger: {fmt_money(_round(b['before']))} before the period, "
            f"{fmt_money(_round(b['period']))} in it, {fmt_money(_round(b['after']))} after it.",
            8,
        )
        if st["final"]:
            text(
                "Final statement: the membership has ended; this statement closes the account.", 9, bold=True
            )
        s = st["savings"]
        if s:
            sh = st["shown"]["savings"]
            pdf.ln(2)
            text("Savings against buying and selling only through the grid", 11, bold=True)
            row(
                [
                    "Grid-only cost (import at retail - export at feed-in)",
                    "",
                    "",
                    fmt_money(sh["baseline_cost"]),
                ]
            )
            row(
                [
                    "Actual cost (community lines + grid supply - feed-in)",
                    "",
                    "",
                    fmt_money(sh["actual_cost"]),
                ]
            )
            row(["Savings", "", "", fmt_money(sh["savings"])], bold=True)
            text(
                f"Retail {fmt_rate(s['retail_price'])}, feed-in {fmt_rate(s['feed_in_price'])}; grid supply "
                f"{fmt_kwh(s['residual_import_wh'])} and feed-in {fmt_kwh(s['residual_export_wh'])} "
                "are billed "
                "by your supplier, not by the community.",
                8,
            )
        flags = "; ".join(fmt_flag(f, tz) for f in st["flags"])
        for note in st["notes"] + [f"Readings not counted: {flags}"] * bool(flags):
            text(note, 8)
    text(
        "Verify: peerwatt statements verify --data NODE_DIR THIS_FILE re-derives every figure the ledger "
        "determines; the VAT setting, currency and numbering are the issuer's, checked with --billing DIR "
        "(the statement's JSON is embedded in this PDF as statement.json).",
        7,
    )
    pdf.embed_file(bytes=dumps_checked(doc), basename="statement.json", desc="canonical statement JSON")
    return bytes(pdf.output())


def pdf_text(s: str) -> str:
    """``s`` as the PDF's core font prints it: every character that is not printable (a control
    or formatting character, a line or paragraph separator: Unicode's "other" and separators but
    the space) escaped as ``\\uXXXX`` (``peerwatt.settings.one_line``), never a line break (found
    in a QA pass: a neighbour named "Eve\\nTotal to be paid to you: 999.00" printed that line of
    its own on the member's statement, and U+202E reversed a name), and what Latin-1 lacks as
    "?", after composing what can be (NFC: a decomposed "José" prints as "José", not "Jose?", a
    QA pass). Line breaks the text itself holds (none of peerwatt's own texts has one) are escaped
    too."""
    return one_line(unicodedata.normalize("NFC", s)).encode("latin-1", "replace").decode("latin-1")


def fit(pdf: Any, s: str, width: float) -> str:
    """``s`` as printed (:func:`pdf_text`) and cut with "..." to at most ``width`` mm in ``pdf``'s
    current font, never inside a character's escape (found in a QA pass: a long neighbour's name
    printed over the kWh column of its row)."""
    units = [pdf_text(c) for c in unicodedata.normalize("NFC", s)]
    text = "".join(units)
    if pdf.get_string_width(text) <= width:
        return text
    while units and pdf.get_string_width("".join(units) + "...") > width:
        units.pop()
    return "".join(units) + "..."


def _energy_source(meter: dict[str, Any], source: str | None) -> str:
    """Where a meter's metered energy on a statement came from, by the community's settlement
    source (found in a QA pass: under "gridops" the PDF said "the meter's own readings for the
    others", which are never used there, and nothing said the grid operator's data was still due)."""
    n = meter["gridops_intervals"]
    if source != GRIDOPS:
        return (
            f"the grid operator's validated data for {n} intervals, the meter's own readings for the others"
            + (" until the grid operator's data for them arrives" if source == METER_THEN_GRIDOPS else "")
        )
    if n == 0:
        return (
            "the community settles on the grid operator's validated data only, and none of it is in for "
            "this meter yet: its energy and trades are not billed here; the data is still due, and what "
            "it bills comes as a correction note"
        )
    due = meter.get("intervals_left_out", 0)
    return (
        f"the grid operator's validated data for {n} intervals (the community settles on it only, "
        "never on the meter's readings)" + (f"; for {due} more it is still due (flags below)" if due else "")
    )


def settlement_source(store: Store, height: int | None = None) -> str:
    """The community's ``settlement_source`` after block ``height`` (default: the last block)."""
    params = {k: v for k, v in registry(store, height).params.items() if k != "timezone"}
    return with_defaults(params)["settlement_source"]


def _round(micro: int) -> int:
    from market.billing import round_cents

    return round_cents(micro)


SUMMARY_COLUMNS = [
    "number", "kind", "references", "member", "name", "total", "shown_total", "provisional", "final"
]  # fmt: skip


def write_files(
    docs: list[dict[str, Any]],
    out_dir: Path,
    *,
    undo: list[Callable[[], None]] | None = None,
    earlier: Callable[[str], dict[str, Any] | None] | None = None,
    source: str | None = None,
) -> list[Path]:
    """``<number>.json``, ``.csv`` and ``.pdf`` per document, and ``<community>-<period>.csv``
    listing each period's (one row per document), mode 0600. All of them are written, or none
    (BillingError, one line), by :func:`peerwatt.errors.write_outputs`: a file that cannot be put
    in place has those put before it taken away again, and a file that was there before put back
    as it was; a folder made for them goes again; nothing to write makes no folder. ``undo`` gets
    a function that does the same after they were all written (for a run that fails after writing
    them: :func:`files_of_run`). ``earlier`` looks up an issued document
    by number (a note's summary row needs the figures it replaces); ``source``: see
    :func:`render_pdf`."""
    if not docs:
        return []  # nothing issued: no folder, no file
    outputs: dict[Path, bytes] = {}  # every document rendered before the first file is written
    for doc in docs:
        base = out_dir / doc["number"]
        outputs[base.with_name(base.name + ".json")] = dumps_checked(doc)
        outputs[base.with_name(base.name + ".csv")] = render_csv(doc).encode()
        outputs[base.with_name(base.name + ".pdf")] = render_pdf(doc, source)
    periods: dict[Path, list[dict[str, Any]]] = {}
    for doc in docs:
        periods.setdefault(out_dir / f"{doc['community']}-{doc['period']}.csv", []).append(doc)
    for summary, period_docs in periods.items():
        outputs[summary] = _summary(summary, period_docs, earlier)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BillingError(f"cannot write the statements to {out_dir}: {exc.strerror or exc}") from None

    def remove_folder() -> None:
        if made:
            try:
                out_dir.rmdir()  # only when empty
            except OSError:
                pass

    taken: list[Callable[[], None]] = []  # write_outputs' take-back of the files
    try:  # every file or none: a failed run leaves no statement files of numbers never issued
        write_outputs({path: _private(data) for path, data in outputs.items()}, overwrite=True, undo=taken)
    except BaseException as exc:
        remove_folder()
        if isinstance(exc, UserError):
            raise BillingError(f"cannot write the statements: {exc}") from None
        raise
    if undo is not None:

        def take_back() -> None:
            for files in taken:
                files()
            remove_folder()

        undo.append(take_back)
    return list(outputs)


def _private(data: bytes) -> Callable[[Path], None]:
    """A writer (:func:`peerwatt.errors.write_outputs`) of ``data`` as a file mode 0600."""
    return lambda path: write_private(path, data)


@contextmanager
def files_of_run(
    out_dir: Path, billing_dir: Path | None = None, source: str | None = None
) -> Iterator[tuple[Writer, list[Path]]]:
    """A writer for a run's documents (:func:`write_files` into ``out_dir``) and the list of the
    files it wrote; when the run fails or is interrupted after writing them (its register could
    not keep them), the files are taken away again and those that were there before put back, so
    no file is left of a number never issued (found in a QA pass: a run whose third household's
    file could not be written left the first two households' files behind). ``billing_dir``: the
    register notes' replaced figures are read from (for the summary); ``source``: the community's
    settlement source, for the PDFs' wording."""
    undo: list[Callable[[], None]] = []
    written: list[Path] = []

    def write(docs: list[dict[str, Any]]) -> None:
        replaced = _replaced_in_register(docs, billing_dir)
        written.extend(write_files(docs, out_dir, undo=undo, earlier=replaced.get, source=source))

    try:
        yield write, written
    except BaseException:
        for take_back in reversed(undo):
            take_back()
        written.clear()
        raise


def _replaced_in_register(docs: list[dict[str, Any]], billing_dir: Path | None) -> dict[str, dict[str, Any]]:
    """The documents whose figures ``docs``' notes replace and that are not among ``docs``, by
    number, as the register in ``billing_dir`` holds them (read with one connection of its own,
    which sees what was kept before this run); those it does not hold or cannot be read, or all
    when there is no register, are left out (their summary rows name no provisional change)."""
    own = {d["number"] for d in docs}
    wanted = sorted({d["replaces_figures_of"] for d in docs if d["kind"] != "statement"} - own)
    path = None if billing_dir is None else billing_dir / ISSUED_DB
    if not wanted or path is None or not path.is_file():
        return {}
    found: dict[str, dict[str, Any]] = {}
    try:
        conn = read_register(path)
        try:
            for number in wanted:
                rows = conn.execute("SELECT doc FROM documents WHERE number = ?", (number,)).fetchall()
                if rows:
                    found[number] = loads_strict(bytes(rows[0][0]))
        finally:
            conn.close()
    except (sqlite3.Error, BillingError):
        pass  # (those read before it)
    return found


def _summary(
    summary: Path,
    docs: list[dict[str, Any]],
    earlier: Callable[[str], dict[str, Any] | None] | None = None,
) -> bytes:
    """The period's summary CSV with ``docs``' rows added to those already in ``summary``. A
    note's ``provisional`` is its change of the provisional part, as its total is the change of
    the total (so a household's rows add up to its figures now): the figures it replaces are
    looked up with ``earlier`` (not found: empty). Found in a QA pass: it held the corrected
    figures' whole provisional part."""
    # one row per document number: a run again after a failed one replaces its rows
    rows: dict[str, list[Any]] = {}
    if summary.is_file():
        try:
            with summary.open(newline="") as f:
                rows = {row[0]: row for row in list(csv.reader(f))[1:] if row}
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BillingError(f"cannot read {summary} (to add this run's rows): {exc}") from None
    by_number = {d["number"]: d for d in docs}
    for doc in docs:
        st = figures_of(doc)
        shown_total = st["shown"]["total"] if doc["kind"] == "statement" else doc["shown_total"]
        provisional: int | str = st["provisional"]
        if doc["kind"] != "statement":
            replaced = by_number.get(doc["replaces_figures_of"]) or (
                earlier(doc["replaces_figures_of"]) if earlier is not None else None
            )
            provisional = "" if replaced is None else provisional - figures_of(replaced)["provisional"]
        rows[doc["number"]] = [
            doc["number"],
            doc["kind"],
            doc.get("references", ""),
            st["member"],
            text_cell(st["member_name"]),
            doc["total"],
            shown_total,
            provisional,
            st["final"],
        ]
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    w.writerows(rows[n] for n in sorted(rows))
    return text.getvalue().encode()


# -- verification ----------------------------------------------------------------------------


def read_document(path: Path) -> tuple[dict[str, Any], str | None]:
    """The statement JSON in ``path`` (.json, or .pdf with it embedded), and the PDF's text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BillingError(f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(b"%PDF"):
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        pdf_log = logging.getLogger("pypdf")
        level = pdf_log.level
        pdf_log.setLevel(logging.CRITICAL)  # its own lines ("EOF marker not found") are not ours
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = PdfReader(io.BytesIO(data))
                attached = reader.attachments.get("statement.json")
                page_text = "\n".join(p.extract_text() for p in reader.pages)
        except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BillingError(f"{path} is not a readable PDF: {exc}") from None
        finally:
            pdf_log.setLevel(level)
        if not attached:
            raise BillingError(f"{path} has no embedded statement.json: not a peerwatt statement")
        return loads_strict(attached[0]), page_text
    try:
        return loads_strict(data), None
    except ValueError as exc:
        raise BillingError(f"{path} is not a statement JSON: {exc}") from None


def diff(expected: Any, actual: Any, where: str = "", source: str = "the ledger gives") -> list[str]:
    """Every path at which ``actual`` (the document) differs from ``expected`` (the ledger's, or
    ``source``'s: "the issuer's register holds")."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual), key=str):
            out += diff(expected.get(k), actual.get(k), f"{where}.{k}" if where else str(k), source)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += diff(e, a, f"{where}[{i}]", source)
        return out
    if expected != actual or type(expected) is not type(actual):
        return [f"{where}: the document says {actual!r}, {source} {expected!r}"]
    return []


def _view_at(store: Store, ledger: dict[str, Any]) -> LedgerView:
    """The ledger view at a document's ``ledger`` (its height); BillingError when this store's
    block at that height is not the document's."""
    height, block_hash = ledger["height"], ledger["block_hash"]
    view = ledger_view(store, height)
    if view.block_hash != block_hash:
        raise BillingError(
            f"the ledger's block {height} is {view.block_hash}, not {block_hash}: "
            "another chain or a forged statement"
        )
    return view


def _rederive(view: LedgerView, st: dict[str, Any]) -> dict[str, Any]:
    """The figures ``st`` states (a statement's, or a note's corrected ones) as ``view`` gives
    them, at ``st``'s VAT setting, currency and format."""
    start, end = period_bounds(st["period"], view.timezone)
    return member_statement(
        view,
        st["member"],
        period=st["period"],
        start=start,
        end=end,
        vat=VatSetting.from_json(st["vat"]),
        currency=st["currency"],
        layout=st["format"],
    )


def _numbering(doc: dict[str, Any], community: str) -> list[str]:
    """The document's number (and a note's references and replaces_figures_of) against what the
    ledger determines of it: ``<community>-<period>-<NNNN>``, the community's id and the period's
    month; and a note's order: it is numbered after the document whose figures it replaces, which
    is the statement it corrects or a note after it. The sequence is the issuer's."""
    prefix = f"{community}-{figures_of(doc)['period']}-"
    problems = []
    fields = ("number",) if doc["kind"] == "statement" else ("number", "references", "replaces_figures_of")
    seqs: dict[str, int] = {}
    for field in fields:
        value = doc.get(field)
        seq = value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else ""
        if not (len(seq) >= 4 and seq.isascii() and seq.isdigit()):
            problems.append(
                f"{field}: the document says {value!r}, "
                f"the ledger's community and the period give {prefix}NNNN"
            )
        else:
            seqs[field] = int(seq)
    if len(seqs) == 3 and not seqs["references"] <= seqs["replaces_figures_of"] < seqs["number"]:
        problems.append(
            f"replaces_figures_of: the document says {doc['replaces_figures_of']!r}, which is not from "
            f"its references {doc['references']!r} up to before its own number {doc['number']!r} (a note "
            "replaces the figures of the statement it corrects or of a later note, and is numbered after it)"
        )
    return problems


def _verify_note(store: Store, view: LedgerView, doc: dict[str, Any]) -> list[str]:
    """Every field of a credit or debit note the ledger determines: its corrected figures at its
    height (``view``), the figures it replaces at ``previous_ledger``'s, and from both (as
    ``market.billing.correction_note`` made them) the deltas, total, shown total, kind (from the
    total's sign), the member, name, community, period, currency, ledger and previous_ledger; its
    format is its corrected figures' (a note is issued in the layout of its figures). Found in a
    QA pass: a note whose total, member, kind, references, ... were edited verified with "matches
    the ledger in every figure"."""
    corrected = _rederive(view, doc["corrected"])
    previous = _rederive(_view_at(store, doc["previous_ledger"]), doc["corrected"])
    problems = _numbering(doc, corrected["community"])
    # (whatever correction_note's rule for issuing one at all, which is checked here instead, so
    # a note issued under an earlier rule still verifies)
    expected = note_between(
        dict(previous, number=doc.get("replaces_figures_of")),
        corrected,
        number=doc["number"],
        issued_at=doc["issued_at"],
    )
    if not any(expected["deltas"].values()) and previous["energy"] == corrected["energy"]:
        ledger = doc["previous_ledger"]["height"], corrected["ledger"]["height"]
        problems.append(
            f"deltas: the ledger gives no change in money or energy from height {ledger[0]} to "
            f"{ledger[1]}: the note corrects nothing"
        )
    # the numbers are the issuer's sequence (their form and order are checked above)
    expected["references"] = doc.get("references")
    expected["format"] = corrected["format"]
    return problems + diff(expected, doc)


def verify_document(
    store: Store, doc: dict[str, Any], page_text: str | None = None, *, caveats: list[str] | None = None
) -> list[str]:
    """The differences between a document and the ledger (empty: every field the ledger determines
    re-derived, and its VAT and total computed at its stated rate). The VAT setting, the currency,
    the number's sequence and the issue date are the issuer's, not the ledger's: taken from the
    document here (:func:`issuer_settings` names them; :func:`verify_in_register` checks them).
    ``caveats``, when given, gets for a document without differences the lines of
    :func:`_older_format_caveats`, from the ledger view its figures were re-derived from."""
    problems: list[str] = []
    if doc.get("kind") == "statement":
        view = _view_at(store, doc["ledger"])
        expected = with_number(_rederive(view, doc), doc["number"], doc["issued_at"])
        problems += diff(expected, doc)
        problems += _numbering(doc, expected["community"])
    elif doc.get("kind") in ("credit_note", "debit_note"):
        view = _view_at(store, doc["corrected"]["ledger"])
        problems += _verify_note(store, view, doc)
    else:
        return [f"unknown document kind {doc.get('kind')!r}"]
    if page_text is not None:
        flat = " ".join(page_text.split())
        for needed in (doc["number"], total_sentence(doc)):
            if needed not in flat:
                problems.append(f"the PDF's text does not show {needed!r}")
    if caveats is not None and not problems:
        caveats += _older_format_caveats(view, doc)
    return problems


def _older_format_caveats(view: LedgerView, doc: dict[str, Any]) -> list[str]:
    """What a document in an older layout than this version issues does not show and the ledger
    (``view``, at the document's height) gives (a format-1 document names no intervals left out
    without their readings): one line per meter, for `statements verify` to print. Empty for a
    current one. The format is the issuer's (an older peerwatt issued format 1): the ledger cannot
    tell which version issued a document, so a format-2 statement re-labelled as format 1 (its
    missing_reading flags dropped) still verifies; these lines say what it leaves out, and
    --billing finds the re-labelling."""
    st = figures_of(doc)
    if st["format"] >= FORMAT:
        return []
    current = _rederive(view, dict(st, format=FORMAT))
    return [
        f"format {st['format']} does not show intervals left out: at its height the ledger gives "
        f"{m['intervals_left_out']} interval(s) of meter {m['name'] or m['meter'][:8]} not billed, without "
        "their data or with readings that cannot be true (format 2 names them)"
        for m in current["meters"]
        if m.get("intervals_left_out")
    ]


def issuer_settings(doc: dict[str, Any]) -> str:
    """What a document states from its issuer's settings, not from the ledger: 'VAT 20.00 % and
    currency EUR' (or 'VAT not charged and currency EUR')."""
    st = figures_of(doc)
    vat = f"VAT {fmt_bp(st['vat']['rate_bp'])}" if st["vat"]["charged"] else "VAT not charged"
    return f"{vat} and currency {st['currency']}"


def verify_in_register(billing_dir: Path, doc: dict[str, Any]) -> list[str]:
    """The differences between a document and its copy in the issuer's register
    (``<billing>/issued.sqlite``, read only): what the ledger cannot tell (the VAT setting, the
    currency, the number, the issue date) is checked there. BillingError: no register to read."""
    path = billing_dir / ISSUED_DB
    if not path.is_file():
        raise BillingError(
            f"{billing_dir} has no {ISSUED_DB}: give the billing folder the statement was issued from"
        )
    try:
        conn = read_register(path)
        try:
            row = conn.execute("SELECT doc FROM documents WHERE number = ?", (doc["number"],)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BillingError(f"cannot read the register {path}: {exc}") from None
    if row is None:
        return [f"number: the issuer's register {path} holds no document {doc['number']}"]
    return diff(loads_strict(bytes(row[0])), doc, source="the issuer's register holds")


def read_register(path: Path) -> sqlite3.Connection:
    """A connection that reads the register ``path`` (an existing file) and never changes it, also
    in a folder that cannot be written (a copy of the register on a read-only medium or folder):
    ``mode=rw`` where it can (never creates it, and closing removes the -wal and -shm that
    ``mode=ro`` would leave), else ``mode=ro``, else ``immutable=1`` when no -wal file holds what
    the register itself does not yet (found in a QA pass: `statements verify --billing` of a
    read-only copy failed "unable to open database file"). sqlite3.Error or BillingError."""
    uri = path.resolve().as_uri()
    failed: sqlite3.Error | None = None
    for query in ("mode=rw", "mode=ro"):
        conn = sqlite3.connect(f"{uri}?{query}", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # (opening is lazy)
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            failed = exc
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise BillingError(
            f"cannot read the register {path}: {failed}; its folder cannot be written and its -wal file "
            "holds changes not yet in it: copy the billing folder (with issued.sqlite-wal) to a folder "
            "that can be written"
        )
    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)  # the folder's files cannot change now
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


DOCUMENT_KINDS = ("statement", "credit_note", "debit_note")


def _not_a_document(doc: Any) -> str | None:
    """Why ``doc`` is no statement or note whose figures can be re-derived (None: it is one).
    Only the fields the re-derivation starts from are looked at; the rest is compared."""
    if not isinstance(doc, dict):
        return f"it holds a JSON {type(doc).__name__}, not an object"
    kind = doc.get("kind")
    if kind not in DOCUMENT_KINDS:
        return f"its kind is {kind!r}, not {', '.join(DOCUMENT_KINDS[:-1])} or {DOCUMENT_KINDS[-1]}"
    ledgers = []
    if kind == "statement":
        st, where = doc, ""
    else:
        st, where = doc.get("corrected"), "corrected."
        if not isinstance(st, dict):
            return "its corrected figures are not an object"
        ledgers.append(("previous_ledger", doc.get("previous_ledger")))
    ledgers.append((f"{where}ledger", st.get("ledger")))
    for name, ledger in ledgers:
        if not isinstance(ledger, dict) or type(ledger.get("height")) is not int:
            return f"{name}.height is missing or not an integer"
        if not isinstance(ledger.get("block_hash"), str):
            return f"{name}.block_hash is missing or not a string"
    if type(st.get("format")) is not int or st["format"] not in FORMATS:
        return (
            f"{where}format is {st.get('format')!r}: this version of peerwatt re-derives formats "
            f"{', '.join(map(str, FORMATS))} (a newer document needs a newer peerwatt)"
        )
    for name in ("period", "member", "currency"):
        if not isinstance(st.get(name), str):
            return f"{where}{name} is missing or not a string"
    vat = st.get("vat")
    if not isinstance(vat, dict) or not {"charged", "rate_bp", "note"} <= set(vat):
        return f"{where}vat is missing or incomplete"
    if not isinstance(doc.get("number"), str):
        return "number is missing or not a string"
    return None


def verify_file(
    store: Store, path: Path, *, caveats: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A document read from ``path`` and its differences from the ledger; BillingError (not a
    difference) when the file holds no statement or note at all. ``caveats``: see
    :func:`verify_document`."""
    doc, page_text = read_document(path)
    why = _not_a_document(doc)
    if why is not None:
        raise BillingError(f"{path} is not a peerwatt statement or note: {why}")
    try:
        return doc, verify_document(store, doc, page_text, caveats=caveats)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a field of the wrong shape
        raise BillingError(
            f"{path} is not a well-formed peerwatt statement or note ({type(exc).__name__}: {exc})"
        ) from None
