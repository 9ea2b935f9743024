"""Payments for a month's statements: the members' bank details, the SEPA payment files for the
bank, and the record of what was paid (docs/billing.md, "Pay and collect").

Everything here lives in the operator's billing store (``<billing>/issued.sqlite``), next to the
issued statements and never on the ledger:

- ``bank_details``: per member (key id) the account holder's name, IBAN (checked by ``schwifty``),
  optional BIC, and for direct debits the SEPA mandate id and date. Personal data: replaced by
  ``peerwatt statements bank-details``, deleted by :func:`erase_bank_details` (docs/privacy.md).
- ``payments``: one row per statement or note marked paid (its number, the date paid, the amount
  in cents). Append-only like the documents: a statement is never changed by being paid.
- ``payment_files``: one row per document put into a SEPA file by ``statements pay`` (its number,
  the file as written, the file's message id, the collection / execution date asked of the bank,
  when it was made). Append-only. A later ``pay`` leaves out a document an earlier file holds (it
  would be paid or collected twice if both files were uploaded), unless asked ``again``.
- ``before_payment_files``: in a register an older peerwatt (before 2026-12-07, b9924c8) made
  payment files for without recording them, the documents it held when this version began
  recording them, and that moment. Any of them may be in such a file, so ``pay`` leaves out those
  not marked paid, unless asked ``again`` (:func:`_set_up`). Append-only.

:func:`payment_run` turns the period's unpaid documents into a pain.008 file (direct debits: what
households owe, a negative total) and a pain.001 file (credit transfers: what the community owes
them, a positive total), built and validated against the ISO 20022 schemas by ``sepaxml``. Each
document is one payment of its shown total (whole cents, rounded half-even once when it was
issued), with its number as the end-to-end id and in the remittance text. :func:`pay` makes the
run under the register's write lock, writes its files and records them in one transaction.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from chain.private_files import FILE_MODE, FOLDER_MODE
from chain.store import integrity_problems
from market.billing import CENT, figures_of
from peerwatt.settings import one_line
from peerwatt.statements import CONFIG, ISSUED_DB, BillingError, IssuedStore, read_billing_toml

PAIN_008 = "pain.008.001.08"  # SEPA direct debits (EPC rulebook 2019+)
PAIN_001 = "pain.001.001.09"  # SEPA credit transfers

# the payment tables, each statement on its own: created in one transaction with what _set_up
# finds of an older register (a trigger's body holds a ';', so they are not split by it)
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bank_details (
    member TEXT PRIMARY KEY, name TEXT NOT NULL, iban TEXT NOT NULL, bic TEXT,
    mandate_id TEXT, mandate_date TEXT, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS payments (
    number TEXT PRIMARY KEY REFERENCES documents (number), paid_on TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, recorded_at TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS payments_never_change BEFORE UPDATE ON payments
    BEGIN SELECT RAISE(ABORT, 'a recorded payment never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS payments_never_deleted BEFORE DELETE ON payments
    BEGIN SELECT RAISE(ABORT, 'a recorded payment is never deleted'); END""",
    """CREATE TABLE IF NOT EXISTS payment_files (
    number TEXT NOT NULL REFERENCES documents (number), file TEXT NOT NULL, msg_id TEXT NOT NULL,
    requested_on TEXT NOT NULL, made_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS payment_files_by_number ON payment_files (number)",
    """CREATE TRIGGER IF NOT EXISTS payment_files_never_change BEFORE UPDATE ON payment_files
    BEGIN SELECT RAISE(ABORT, 'a recorded payment file never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS payment_files_never_deleted BEFORE DELETE ON payment_files
    BEGIN SELECT RAISE(ABORT, 'a recorded payment file is never deleted'); END""",
    """CREATE TABLE IF NOT EXISTS before_payment_files (
    number TEXT PRIMARY KEY REFERENCES documents (number), since TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS before_payment_files_never_change BEFORE UPDATE ON before_payment_files
    BEGIN SELECT RAISE(ABORT, 'a record of an older register never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS before_payment_files_never_deleted BEFORE DELETE ON before_payment_files
    BEGIN SELECT RAISE(ABORT, 'a record of an older register is never deleted'); END""",
)
# the names of the tables, index and triggers above
_SCHEMA_NAMES = frozenset(name for sql in _SCHEMA for name in re.findall(r"IF NOT EXISTS (\w+)", sql))

# SEPA's restricted Latin character set, as the banks accept it in ids (Max35Text)
_SEPA_ID = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]{1,35}")


@dataclass(frozen=True)
class BankDetails:
    member: str
    name: str
    iban: str
    bic: str | None = None
    mandate_id: str | None = None
    mandate_date: str | None = None


@dataclass(frozen=True)
class Due:
    """One unpaid document: what the member pays (``cents`` < 0) or is paid (> 0)."""

    number: str
    community: str
    member: str
    member_name: str
    cents: int
    currency: str
    kind: str = "statement"  # or credit_note, debit_note
    references: str | None = None  # a note's: the statement it corrects


@dataclass(frozen=True)
class EarlierFile:
    """A SEPA file an earlier ``pay`` wrote (as recorded in ``payment_files``)."""

    file: str  # the path it was written to
    made_at: str  # when, YYYY-MM-DDTHH:MM:SS
    requested_on: str  # the collection / execution date it asked of the bank


@dataclass
class PaymentRun:
    """The SEPA files of a period (file name -> XML) and what was left out, and why."""

    files: dict[str, bytes] = field(default_factory=dict)
    debits: list[Due] = field(default_factory=list)
    credits: list[Due] = field(default_factory=list)
    left_out: list[tuple[Due, str]] = field(default_factory=list)
    contents: dict[str, list[Due]] = field(default_factory=dict)  # file name -> its payments
    msg_ids: dict[str, str] = field(default_factory=dict)  # file name -> its message id (MsgId)
    # unpaid documents an earlier file holds: left out (or, asked again, in these files again)
    earlier: list[tuple[Due, EarlierFile]] = field(default_factory=list)
    again: list[tuple[Due, EarlierFile]] = field(default_factory=list)
    # unpaid documents in no recorded file that the register held when it began recording payment
    # files (``older_since``, YYYY-MM-DDTHH:MM:SS), an older version having made payment files
    # without recording them: left out (or, asked again, in these files)
    older: list[Due] = field(default_factory=list)
    older_again: list[Due] = field(default_factory=list)
    older_since: str | None = None


@contextmanager
def _register(billing_dir: Path, *, check: bool = True) -> Iterator[IssuedStore]:
    """The billing register with the payment tables, closed after. An SQLite error on it is one
    line (a BillingError, as :meth:`IssuedStore.error` words it: another run holding it, a folder
    that cannot be written), a damaged file said to be one. With ``check`` (every payment command)
    SQLite's quick_check first reads the whole file, so a damaged one is refused before anything
    is read from it, written or recorded: found in a QA pass, ``pay`` on a register with bytes
    overwritten in its pages ended in a traceback, and ``mark-paid`` said an existing statement
    was not there (its row could not be found in the damaged pages)."""
    issued = IssuedStore(billing_dir)
    try:
        _set_up(issued)
        if check:
            problems = integrity_problems(issued.conn, 1)
            if problems:
                raise _damaged(issued, problems[0])
        yield issued
    except sqlite3.Error as exc:
        raise issued.error(exc) from None
    finally:
        issued.close()


def _set_up(issued: IssuedStore) -> None:
    """Create the payment tables the register lacks, in one transaction with what is found of an
    older register: one that has the tables of bank details and payments (made by a peerwatt from
    2026-12-05, e278404, on) but no record of payment files (``payment_files``, from 2026-12-07,
    b9924c8) was used by a version that could write payment files without recording what they
    held. Every document it holds then goes into ``before_payment_files`` with this moment: a
    later ``pay`` leaves out those not marked paid (:func:`_older`). Found in a QA pass updating
    a real billing folder: an older version's ``pay`` wrote files for June, and the first ``pay``
    after the update wrote files holding every document of them not marked paid, in silence, so a
    treasurer who uploaded both would have paid and collected them twice.

    Done once: later calls find ``payment_files`` and record nothing, so the documents (and the
    moment) stay those of the first call. A register this version made never has the payment
    tables without ``payment_files`` (they are made together), whenever its documents were issued.
    The documents are recorded, not a time or a rowid: ``issued_at`` is a date the treasurer
    gives, and VACUUM (erase_bank_details) may renumber rowids."""
    conn = issued.conn
    names = lambda: {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}  # noqa: E731
    if _SCHEMA_NAMES <= names():
        return  # (no write lock taken: the payment commands that only read run on a read-only file)
    from datetime import datetime

    with issued.transaction():  # BEGIN IMMEDIATE: another run waits, then finds the tables made
        found = names()
        older = "payment_files" not in found and bool({"bank_details", "payments"} & found)
        for sql in _SCHEMA:
            conn.execute(sql)
        if older:
            conn.execute(
                "INSERT INTO before_payment_files SELECT number, ? FROM documents",
                (datetime.now().isoformat(timespec="seconds"),),
            )


def prepare(billing_dir: Path) -> None:
    """Set up the payment tables of the register in ``billing_dir``, if it has one (as every
    payment command does first: :func:`_set_up`). Called before a run issues statements or notes,
    so that on a register an older version made payment files for, those this version issues are
    not taken for documents that version may have put in a file. BillingError (one line) if the
    register cannot be used; a register never made is not made."""
    if not (billing_dir / ISSUED_DB).is_file():
        return
    with _register(billing_dir, check=False):
        pass


def _damaged(issued: IssuedStore, problem: str) -> BillingError:
    """The one line for a register SQLite's quick_check finds damaged (its first line)."""
    found = "" if problem == "database disk image is malformed" else f" ({problem})"
    return issued.damaged(f"database disk image is malformed{found}")


# the most characters of a name a SEPA file holds (Max70Text: sepaxml cuts a longer one to it)
SEPA_NAME_MAX = 70
# what a name may not hold besides control characters (Cc): formatting characters (Cf: the bidi
# overrides such as U+202E, zero-width spaces and joiners), line and paragraph separators
_INVISIBLE = {"Cf": "a formatting character", "Zl": "a line separator", "Zp": "a paragraph separator"}


def sepa_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an account holder's name in a SEPA file (None: it can). The file
    carries it transliterated to Latin letters (``text_unidecode``, as sepaxml's ``clean=True``
    does), at most SEPA_NAME_MAX characters of it, and XML carries no control character: found in
    a QA pass, a name with one ended every `pay` of the community in a traceback (sepaxml's pretty
    print), one that transliterates to nothing ('🙂🙂') in a 15-line schema error, neither naming
    the household. Nor may it hold a formatting character or a line or paragraph separator
    (invisible, they make a name read otherwise: found in a later QA pass, U+202E was stored and
    printed raw by the CLI), nor be longer than the file holds (a 200-character name was cut to 70
    in the file, in silence). One rule for a household's name and the community's ([sepa] name)."""
    from text_unidecode import unidecode

    for char in name:
        kind = unicodedata.category(char)
        if kind == "Cc":
            return f"it holds a control character (U+{ord(char):04X})"
        if kind == "Cs":
            return f"it holds a byte that is not UTF-8 text (U+{ord(char):04X})"
    written = unidecode(name).strip()
    if not written:
        return "written in Latin letters, as a SEPA file holds it, it is empty"
    for char in name:
        what = _INVISIBLE.get(unicodedata.category(char))
        if what is not None:
            return (
                f"it holds {what} (U+{ord(char):04X}), invisible, which can make a name read as another: "
                "a name may hold no control or formatting character, nor a line or paragraph separator"
            )
    if len(written) > SEPA_NAME_MAX:
        return (
            f"written in Latin letters, as a SEPA file holds it, it is {len(written)} characters long, and a "
            f"SEPA file holds at most {SEPA_NAME_MAX} (the bank would get it cut)"
        )
    return None


def quoted_name(name: str) -> str:
    """``name`` quoted for a one-line message (its control characters escaped by repr), its
    first 40 characters and '...' when it is longer than a SEPA file holds."""
    return repr(name) if len(name) <= SEPA_NAME_MAX else f"{name[:40]!r}..."


def check_iban(text: str) -> str:
    """The IBAN in compact form, or a one-line :class:`BillingError` naming what is wrong: not
    valid (country, length, structure, check digits), or of a country outside the SEPA scheme,
    which a SEPA payment file cannot pay to or collect from (found in a QA pass: SA... and BR...
    IBANs were stored). The SEPA countries are schwifty's registry's (``IBAN.in_sepa_zone``)."""
    from schwifty import IBAN
    from schwifty.exceptions import SchwiftyException

    try:
        iban = IBAN(text)
    except SchwiftyException as exc:
        raise BillingError(f"IBAN {text!r} is not valid: {exc}") from None
    if not iban.in_sepa_zone:
        raise BillingError(
            f"IBAN {text!r} is of {iban.country_code}, a country outside the SEPA scheme: a SEPA payment "
            "file cannot pay to or collect from it"
        )
    return iban.compact


# a SEPA creditor identifier (EPC262-08): country, check digits, creditor business code, national id
_CREDITOR_ID = re.compile(r"([A-Z]{2})([0-9]{2})([A-Z0-9]{3})([A-Z0-9]{1,28})")


def check_creditor_id(text: str) -> str:
    """The SEPA creditor identifier ``text`` in compact form (spaces taken out, capitals), or a
    one-line BillingError: 2 letters of a SEPA country, 2 check digits, a 3-character creditor
    business code (often ZZZ, not in the check) and the national id, up to 28 letters and digits;
    the check digits are ISO 7064 MOD 97-10 over the national id, the country and '00', letters
    as numbers (A=10 ... Z=35). Found in a QA pass: 'hello world <x>' went into the pain.008."""
    compact = text.replace(" ", "").upper()
    found = _CREDITOR_ID.fullmatch(compact)
    if found is None:
        raise BillingError(
            f"{text!r} is not a SEPA creditor identifier (2 letters of the country, 2 check digits, a "
            "3-character business code, often ZZZ, and the national id, up to 28 letters and digits, like "
            "DE98ZZZ09999999999): copy it as the bank gave it"
        )
    country, check, _business, national = found.groups()
    if not _sepa_country(country):
        raise BillingError(f"{text!r}: {country} is not a country of the SEPA scheme")
    digits = "".join(str(int(c, 36)) for c in national + country) + "00"
    expected = 98 - int(digits) % 97
    if int(check) != expected:
        raise BillingError(
            f"{text!r}: its check digits are {check}, and {national}{country}00 gives {expected:02d} "
            "(ISO 7064 MOD 97-10): a typo?"
        )
    return compact


def _sepa_country(code: str) -> bool:
    from schwifty.exceptions import SchwiftyException
    from schwifty.registry import get_iban_spec

    try:
        return bool(get_iban_spec(code).in_sepa_zone)
    except (SchwiftyException, KeyError):
        return False


def check_bic(text: str) -> str:
    from schwifty import BIC
    from schwifty.exceptions import SchwiftyException

    try:
        return BIC(text).compact
    except SchwiftyException as exc:
        raise BillingError(f"BIC {text!r} is not valid: {exc}") from None


def _check_date(text: str, what: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise BillingError(f"{what} {text!r}: use a date like 2026-07-05") from None


# how far ahead `statements pay --on` may ask the bank to collect or execute: the run is for the
# month just billed, so a later date is most likely a typo (2030 for 2026); banks' own limits vary
COLLECTION_DAYS_AHEAD = 30


def check_collection_date(on: date, today: date) -> date:
    """``on`` if it is a date the bank can still collect or execute on, from ``today`` up to
    COLLECTION_DAYS_AHEAD days ahead; else a one-line BillingError (found in a QA pass: 2020-01-01
    and 2030-01-01 were written into the SEPA files)."""
    if on < today:
        raise BillingError(
            f"--on {on.isoformat()} is in the past (today is {today.isoformat()}): give the date the bank "
            "is to collect or execute on, today or later"
        )
    if (on - today).days > COLLECTION_DAYS_AHEAD:
        raise BillingError(
            f"--on {on.isoformat()} is more than {COLLECTION_DAYS_AHEAD} days ahead (today is "
            f"{today.isoformat()}): a typo? give a date up to {COLLECTION_DAYS_AHEAD} days from today "
            "(docs/billing.md)"
        )
    return on


def set_bank_details(
    billing_dir: Path,
    member: str,
    *,
    name: str,
    iban: str,
    bic: str | None = None,
    mandate_id: str | None = None,
    mandate_date: str | None = None,
    now: str,
) -> BankDetails:
    """Record (or replace) a member's bank details; every field is checked first."""
    if not member or not name.strip():
        raise BillingError("give the member's key id and the account holder's name")
    problem = sepa_name_problem(name)
    if problem is not None:
        raise BillingError(
            f"account holder's name {quoted_name(name)} cannot go into a SEPA file: {problem}; give the name "
            "as the bank has it; nothing stored"
        )
    if (mandate_id is None) != (mandate_date is None):
        raise BillingError("a direct-debit mandate needs both --mandate-id and --mandate-date")
    if mandate_id is not None and not _SEPA_ID.fullmatch(mandate_id):
        raise BillingError(
            f"mandate id {mandate_id!r}: at most 35 characters of A-Z a-z 0-9 / - ? : ( ) . , ' + space"
        )
    signed = _check_date(mandate_date, "mandate date") if mandate_date else None
    today = now[:10]
    if signed is not None and signed > today:
        raise BillingError(
            f"mandate date {signed} is in the future (today is {today}): give the date the mandate "
            "was signed; nothing stored"
        )
    details = BankDetails(
        member,
        name.strip(),
        check_iban(iban),
        check_bic(bic) if bic else None,
        mandate_id,
        signed,
    )
    with _register(billing_dir) as issued:
        issued.conn.execute(
            "INSERT OR REPLACE INTO bank_details VALUES (?, ?, ?, ?, ?, ?, ?)",
            (member, details.name, details.iban, details.bic, details.mandate_id, details.mandate_date, now),
        )
    return details


def bank_details(billing_dir: Path) -> dict[str, BankDetails]:
    with _register(billing_dir, check=False) as issued:
        return _accounts(issued)


def _accounts(issued: IssuedStore) -> dict[str, BankDetails]:
    return {
        row[0]: BankDetails(*row)
        for row in issued.conn.execute(
            "SELECT member, name, iban, bic, mandate_id, mandate_date FROM bank_details"
        )
    }


def _earlier_files(issued: IssuedStore) -> dict[str, EarlierFile]:
    """number -> the latest SEPA file a ``pay`` run put it into."""
    return {
        number: EarlierFile(file, made_at, requested_on)
        for number, file, made_at, requested_on in issued.conn.execute(
            "SELECT number, file, made_at, requested_on FROM payment_files"
            " WHERE rowid IN (SELECT max(rowid) FROM payment_files GROUP BY number)"
        )
    }


def _older(issued: IssuedStore) -> tuple[set[str], str | None]:
    """The documents the register held when it began recording payment files, an older version
    having made payment files for it without recording them (:func:`_set_up`), and that moment
    (None: no such documents)."""
    rows = issued.conn.execute("SELECT number, since FROM before_payment_files").fetchall()
    return {n for n, _ in rows}, min((since for _, since in rows), default=None)


def erase_bank_details(billing_dir: Path, *members: str) -> list[str]:
    """Delete departed members' bank details so the bytes are gone from ``issued.sqlite`` and its
    WAL (``secure_delete``, ``VACUUM``, ``wal_checkpoint(TRUNCATE)``): those of all ``members`` in
    one transaction, or none. The members whose details there were, sorted.

    The issued statements and payment records stay (accounting records; they hold no bank
    details). Called by the erasure of departed members, after
    ``peerwatt.node.erasure.erase_departed`` (``peerwatt node erase``) with the billing folder,
    and usable on its own when a member leaves.

    A BillingError says what is left. One from opening the register (SQLite's quick_check first:
    a damaged one is refused before anything is deleted), or from the deletion, means nothing was
    deleted: it names the members whose details are still there. One after the deletion, when the
    file could not be compacted (another process reading it for longer than the lock wait, a full
    disk), says their rows are deleted but their bytes may remain in the file and its WAL until a
    later call compacts it (any call does, with nothing left to delete too). Found in a QA pass:
    `node erase` on a damaged register ended in a traceback, and a reader kept the checkpoint from
    rewriting the file while the call said the details were deleted."""
    path = billing_dir / "issued.sqlite"
    if not members or not path.exists():
        return []
    wanted = json.dumps(sorted(set(members)))
    gone: list[str] | None = None  # set once the deletion is committed
    try:
        with _register(billing_dir) as issued:
            issued.conn.execute("PRAGMA secure_delete=ON")
            with issued.transaction():
                found = [
                    m
                    for (m,) in issued.conn.execute(
                        "SELECT member FROM bank_details WHERE member IN (SELECT value FROM json_each(?))"
                        " ORDER BY member",
                        (wanted,),
                    )
                ]
                issued.conn.execute(
                    "DELETE FROM bank_details WHERE member IN (SELECT value FROM json_each(?))", (wanted,)
                )
            gone = found
            try:
                issued.conn.execute("VACUUM")
                busy = issued.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                why = "another process was reading it" if busy else None
            except sqlite3.Error as exc:
                why = str(exc)
            if why is not None:
                what = (
                    f"the bank details of {', '.join(gone)} are deleted from its table, but their bytes"
                    if gone
                    else f"no bank details of {', '.join(sorted(set(members)))} were left in its table, "
                    "but the bytes of any deleted before"
                )
                raise BillingError(
                    f"cannot compact the register {path} ({why}): {what} may remain in the file and its -wal"
                )
    except BillingError as exc:
        if gone is None:
            raise BillingError(
                f"{exc}; the bank details of {', '.join(sorted(set(members)))}, if it holds any, are not "
                "deleted"
            ) from None
        raise
    return gone


def mark_paid(billing_dir: Path, numbers: Sequence[str], *, on: str, now: str) -> list[Due]:
    """Record that the statements or notes ``numbers`` were paid on ``on``: all of them in one
    transaction, or none (a recorded payment never changes, so a list that fails halfway must not
    leave its first numbers recorded). The documents are not touched."""
    paid_on = _check_date(on, "--on")
    today = now[:10]
    if paid_on > today:  # a recorded payment never changes: a date it cannot have been paid on is refused
        raise BillingError(
            f"--on {paid_on} is in the future (today is {today}): mark a document paid once the bank "
            "statement shows it; nothing recorded"
        )
    repeated = sorted({n for n in numbers if list(numbers).count(n) > 1})
    if repeated:
        raise BillingError(f"{repeated[0]} is given twice: name each document once")
    with _register(billing_dir) as issued:
        dues = []
        with issued.transaction():  # read and recorded under one lock: all of them, or none
            for number in numbers:
                doc = issued.get(number)
                if doc is None:
                    raise BillingError(f"no statement or note {number} in {issued.path}: nothing recorded")
                done = issued.conn.execute(
                    "SELECT paid_on FROM payments WHERE number = ?", (number,)
                ).fetchone()
                if done is not None:
                    raise BillingError(f"{number} was already marked paid on {done[0]}: nothing recorded")
                if paid_on < doc["issued_at"]:
                    raise BillingError(
                        f"--on {paid_on} is before {number} was issued ({doc['issued_at']}): it cannot have "
                        "been paid then; nothing recorded"
                    )
                dues.append(_due(doc))
            issued.conn.executemany(
                "INSERT INTO payments VALUES (?, ?, ?, ?)", [(d.number, paid_on, d.cents, now) for d in dues]
            )
        return dues


def paid(billing_dir: Path) -> dict[str, tuple[str, int]]:
    """number -> (date paid, cents) of every document marked paid."""
    with _register(billing_dir, check=False) as issued:
        return {
            n: (on, c)
            for n, on, c in issued.conn.execute("SELECT number, paid_on, amount_cents FROM payments")
        }


def _due(doc: dict[str, Any]) -> Due:
    st = figures_of(doc)
    shown = st["shown"]["total"] if doc["kind"] == "statement" else doc["shown_total"]
    if shown % CENT:
        raise BillingError(f"{doc['number']}: its shown total {shown} is not whole cents")
    return Due(
        doc["number"],
        st["community"],
        st["member"],
        st["member_name"],
        shown // CENT,
        st["currency"],
        doc["kind"],
        doc.get("references"),
    )


def unpaid(billing_dir: Path, period: str) -> list[Due]:
    """The period's statements and notes not marked paid, with something to pay either way;
    BillingError if the register holds no statement of the period at all (another folder?)."""
    with _register(billing_dir) as issued:
        return _unpaid(issued, period)


def _unpaid(issued: IssuedStore, period: str) -> list[Due]:
    billing_dir = issued.path.parent
    done = {n for (n,) in issued.conn.execute("SELECT number FROM payments")}
    docs = [
        _due(_load(d))
        for (d,) in issued.conn.execute(
            "SELECT doc FROM documents WHERE period = ? ORDER BY community, seq", (period,)
        )
    ]
    if not docs:
        raise BillingError(
            f"{billing_dir / 'issued.sqlite'} holds no statements for {period}: issue them first, or "
            "give the --billing folder they were issued into (without --billing: NODE_DIR/billing)"
        )
    return [d for d in docs if d.number not in done and d.cents != 0]


def _load(data: bytes) -> dict[str, Any]:
    from chain.canonical import loads_strict

    return loads_strict(bytes(data))


def _creditor(billing_dir: Path) -> dict[str, str]:
    """The community's own account: ``[sepa]`` in ``billing.toml``."""
    path = billing_dir / CONFIG
    doc = read_billing_toml(path) if path.exists() else {}
    sepa = doc.get("sepa")
    if not isinstance(sepa, dict) or not sepa.get("name") or not sepa.get("iban"):
        raise BillingError(
            f"{path} has no [sepa] name and iban: the community's own account (docs/billing.md)"
        )
    problem = sepa_name_problem(str(sepa["name"]))
    if problem is not None:
        raise BillingError(
            f"{path}: [sepa] name {quoted_name(str(sepa['name']))} cannot go into a SEPA file: {problem}"
        )
    out = {"name": str(sepa["name"])}
    for key, check in (("iban", check_iban), ("bic", check_bic), ("creditor_id", check_creditor_id)):
        if sepa.get(key):
            try:
                out[key] = check(str(sepa[key]))
            except BillingError as exc:
                raise BillingError(f"{path}: [sepa] {key}: {exc}") from None
    return out


def _end_to_end(number: str) -> str:
    if _SEPA_ID.fullmatch(number):
        return number
    import hashlib

    return hashlib.sha256(number.encode()).hexdigest()[:35]


def payment_run(billing_dir: Path, period: str, *, on: date, again: bool = False) -> PaymentRun:
    """The SEPA files :func:`pay` would write now, built but neither written nor recorded."""
    with _register(billing_dir) as issued:
        return _build(issued, period, on=on, again=again)


def pay(
    billing_dir: Path, period: str, *, on: date, out_dir: Path, now: str, again: bool = False
) -> tuple[PaymentRun, list[Path]]:
    """Build the period's SEPA files, write them into ``out_dir`` and record in ``payment_files``
    which documents each holds, in one transaction of the register: under its write lock, so two
    runs at once never both put a document in a file (the second waits, then finds it in the
    first's), and all or nothing, so the record and the files agree: a run that cannot write its
    files records nothing (and leaves none of them), and one whose record cannot be kept removes
    the files it wrote. A document an earlier file holds and not yet marked paid is left out
    (``run.earlier``), or with ``again`` put in again (``run.again``): the bank refused or lost
    that file. So is one an older version's unrecorded file may hold (``run.older``, with
    ``again`` ``run.older_again``: :func:`_set_up`). The paths written, in the order of
    ``run.files``."""
    written: list[Path] = []
    try:
        with _register(billing_dir) as issued, issued.transaction():
            # BEGIN IMMEDIATE: what is in a file is read, written and recorded under one lock
            run = _build(issued, period, on=on, again=again)
            recorded = {f for (f,) in issued.conn.execute("SELECT DISTINCT file FROM payment_files")}
            written = write_run(run, out_dir, taken=recorded)
            _record(issued, run, written, on=on, now=now)
    except BaseException as exc:
        left = _remove(written)
        if left:
            raise BillingError(
                f"{exc or type(exc).__name__}; nothing recorded, and {left[0]}, written by this run, "
                "cannot be removed: delete it, it must not be uploaded"
            ) from None
        raise
    return run, written


def _record(issued: IssuedStore, run: PaymentRun, written: list[Path], *, on: date, now: str) -> None:
    issued.conn.executemany(
        "INSERT INTO payment_files VALUES (?, ?, ?, ?, ?)",
        [
            (due.number, str(path.resolve()), run.msg_ids[name], on.isoformat(), now)
            for name, path in zip(run.files, written, strict=True)
            for due in run.contents[name]
        ],
    )


def _build(issued: IssuedStore, period: str, *, on: date, again: bool) -> PaymentRun:
    """The SEPA files for the period's unpaid documents, to be executed / collected on ``on``.
    A member without bank details (or, for a debit, without a mandate) is left out and named."""
    from sepaxml import SepaDD, SepaTransfer

    billing_dir = issued.path.parent
    run = PaymentRun()
    dues = _unpaid(issued, period)
    earlier = _earlier_files(issued)
    older, run.older_since = _older(issued)
    for due in dues:
        if due.number in earlier:
            (run.again if again else run.earlier).append((due, earlier[due.number]))
        elif due.number in older:  # an older version may have put it in a file it did not record
            (run.older_again if again else run.older).append(due)
    if not again:
        dues = [d for d in dues if d.number not in earlier and d.number not in older]
    if not dues:
        return run
    creditor = _creditor(billing_dir)
    accounts = _accounts(issued)
    for due in dues:
        if due.currency != "EUR":
            raise BillingError(f"{due.number} is in {due.currency}: SEPA files are in EUR only")
        acct = accounts.get(due.member)
        if acct is None:
            run.left_out.append((due, "no bank details"))
        elif due.cents < 0 and acct.mandate_id is None:
            run.left_out.append((due, "no direct-debit mandate"))
        elif (problem := _unusable(acct)) is not None:  # stored before they were checked so
            run.left_out.append((due, problem))
        else:
            (run.debits if due.cents < 0 else run.credits).append(due)
    base = {"name": creditor["name"], "IBAN": creditor["iban"], "batch": True, "currency": "EUR"}
    if "bic" in creditor:
        base["BIC"] = creditor["bic"]
    stem = f"{dues[0].community}-{period}"
    if run.debits:
        if "creditor_id" not in creditor:
            raise BillingError(
                f"{billing_dir / CONFIG}: [sepa] creditor_id (the SEPA creditor identifier) is needed "
                "for direct debits"
            )
        debits = [
            (
                due,
                _payment(due, accounts[due.member], -due.cents, period)
                | {
                    "type": "RCUR",
                    "collection_date": on,
                    "mandate_id": accounts[due.member].mandate_id,
                    "mandate_date": _mandate_date(due, accounts[due.member]),
                },
            )
            for due in run.debits
        ]
        name = f"{stem}-{PAIN_008}.xml"
        run.files[name], run.msg_ids[name] = _file(
            lambda: SepaDD(dict(base, creditor_id=creditor["creditor_id"]), schema=PAIN_008, clean=True),
            debits,
            "direct debits",
        )
        run.contents[name] = run.debits
    if run.credits:
        credits = [
            (due, _payment(due, accounts[due.member], due.cents, period) | {"execution_date": on})
            for due in run.credits
        ]
        name = f"{stem}-{PAIN_001}.xml"
        run.files[name], run.msg_ids[name] = _file(
            lambda: SepaTransfer(dict(base), schema=PAIN_001, clean=True), credits, "credit transfers"
        )
        run.contents[name] = run.credits
    return run


def _unusable(acct: BankDetails) -> str | None:
    """Why stored bank details cannot go into a SEPA file (stored by a version that did not check
    them), or None."""
    problem = sepa_name_problem(acct.name)
    if problem is not None:
        return f"its account holder's name {quoted_name(acct.name)} cannot go into a SEPA file: {problem}"
    try:
        check_iban(acct.iban)
    except BillingError as exc:
        return f"its {exc}"
    return None


def _mandate_date(due: Due, acct: BankDetails) -> date:
    try:
        return date.fromisoformat(acct.mandate_date or "")
    except ValueError:
        raise BillingError(
            f"{due.number}: the mandate date {acct.mandate_date!r} stored for {due.member} is not a date: "
            "record the bank details again with peerwatt statements bank-details; no file written"
        ) from None


def remittance(due: Due, period: str) -> str:
    """The remittance text of a payment: what the document is (found in a QA pass: a note's said
    "energy community statement 2026-06" too). At most 140 characters (SEPA's Ustrd)."""
    if due.kind == "statement":
        return f"{due.number} energy community statement {period}"
    kind = {"credit_note": "credit note", "debit_note": "debit note"}.get(due.kind, "correction note")
    return f"{due.number} correction note ({kind}) to statement {due.references}, energy community {period}"[
        :140
    ]


def _payment(due: Due, acct: BankDetails, cents: int, period: str) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": acct.name,
        "IBAN": acct.iban,
        "amount": cents,
        "description": remittance(due, period),
        "endtoend_id": _end_to_end(due.number),
    }
    if acct.bic:
        p["BIC"] = acct.bic
    return p


def _file(make: Callable[[], Any], items: list[tuple[Due, dict[str, Any]]], what: str) -> tuple[bytes, str]:
    """The SEPA file (sepaxml's ``make()`` with a payment per item), validated against its
    schema, and its message id. If sepaxml cannot make it (its own checks raise Exception, its
    pretty print ExpatError, the schema ValidationError), a one-line BillingError that names the
    document whose payment is at fault, found by making a file of each payment alone."""
    try:
        return _export(make(), items)
    except Exception as exc:  # noqa: BLE001 (sepaxml raises plain Exception too): said in one line
        whole = _why(exc)
    faults = []
    for due, payment in items:
        try:
            _export(make(), [(due, payment)])
        except Exception as exc:  # noqa: BLE001
            faults.append((due, _why(exc)))
    if (faults and len(faults) < len(items)) or len(items) == 1:
        due, why = faults[0] if faults else (items[0][0], whole)
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise BillingError(
            f"cannot write the SEPA file of {what}: the payment of {due.number} to or from "
            f"{one_line(due.member_name or due.member)} ({due.member}){more} does not validate: {why}; "
            "no file written: check its bank details (peerwatt statements bank-details)"
        )
    raise BillingError(
        f"cannot write the SEPA file of {what}: {whole}; no file written: check [sepa] in billing.toml "
        "and the households' bank details"
    )


def _export(doc: Any, items: list[tuple[Due, dict[str, Any]]]) -> tuple[bytes, str]:
    for _due, payment in items:
        doc.add_payment(dict(payment))  # (sepaxml changes the dict it is given)
    return doc.export(validate=True, pretty_print=True), doc.msg_id


def _why(exc: Exception) -> str:
    """What sepaxml's exception says, in one line."""
    from xml.parsers.expat import ExpatError

    from sepaxml.validation import ValidationError

    if isinstance(exc, ValidationError) and exc.__cause__ is not None:
        cause = exc.__cause__
        reason, path = getattr(cause, "reason", None), getattr(cause, "path", None)
        text = f"{reason} (at {path})" if reason else str(cause)
    elif isinstance(exc, ExpatError):
        text = f"it would not be well-formed XML ({exc}): a character XML cannot carry"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def write_run(run: PaymentRun, out_dir: Path, taken: Iterable[str] = ()) -> list[Path]:
    """Write the run's SEPA files into ``out_dir`` (made 0700 when missing), each mode 0600
    whatever the umask: they hold every household's name and IBAN. A file is never written over
    one already there (an earlier run's file, perhaps not yet uploaded: found in a QA pass, a
    second `pay` replaced it) nor under a name ``taken`` (paths of files an earlier run wrote): it
    gets the next free name, ``NAME-2.xml``, ``NAME-3.xml``, ... On a failure the files this call
    wrote are removed again. The paths written, in the order of ``run.files``."""
    if run.files and not out_dir.is_dir():
        out_dir.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    taken = set(taken)
    written: list[Path] = []
    try:
        for name, data in run.files.items():
            written.append(_write_new(out_dir, name, data, taken))
    except BaseException as exc:
        left = _remove(written)
        if left:
            raise OSError(
                f"{exc}; and {left[0]}, written by this run, cannot be removed: delete it"
            ) from None
        raise
    return written


def _write_new(out_dir: Path, name: str, data: bytes, taken: set[str]) -> Path:
    """``data`` in a new file mode 0600 in ``out_dir``: ``name``, or the first of ``NAME-2.xml``,
    ``NAME-3.xml``, ... that neither exists (created exclusively) nor is ``taken``."""
    stem, dot, ext = name.rpartition(".")
    for n in range(1, 10_000):
        path = out_dir / (name if n == 1 else f"{stem}-{n}{dot}{ext}")
        if str(path.resolve()) in taken:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)  # whatever the umask
                f.write(data)
        except BaseException:
            _remove([path])
            raise
        return path
    raise FileExistsError(f"{out_dir} holds {name} and 9,999 more files of that name: clear it out")


def _remove(paths: Iterable[Path]) -> list[Path]:
    """Remove the files of a run that was not recorded; those that could not be removed."""
    left = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(path)
    return left
