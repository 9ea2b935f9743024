"""Dashboard accounts: users, their meters, server-side sessions and the login lockout.

Kept in ``dashboard.sqlite`` in the instance folder (apart from the derived index, which may be
deleted and rebuilt; accounts may not). Passwords are hashed with scrypt (werkzeug's
``generate_password_hash``, salted, n=2**15, r=8, p=1) and never stored or logged in clear.
Sessions are random 256-bit tokens; the database keeps only their SHA-256, so a copy of it
does not let anyone log in. A session ends at logout, at its expiry, or when its user is removed.

Login lockout (``RateLimit``): failed logins are counted per account name and per client
address. After ``per_user`` failures an account is locked for ``lock_s`` seconds, and each
further failure after a lock doubles the lock (at most ``max_lock_s``); a client address is
locked the same way after ``per_address`` failures. While locked every attempt is refused, even
with the right password, and refused attempts do not count. The count is forgotten ``window_s``
after the last failure or the end of the last lock; a successful login clears its account's
count. Names that are no account are counted and locked exactly like real ones, so a failed
login never tells whether an account exists.

Each attempt is counted before its password is checked (in one transaction with the lock check),
so simultaneous attempts cannot get more passwords checked than the limit allows. A success gives
back its own reservation only: it forgets the failures counted before it, and keeps those counted
while it was being checked; it is refused only when those other failures alone locked the account
(tests/dashboard/test_lockout_concurrent.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from chain.private_files import private_file, private_folder
from chain.store import integrity_problems, is_corrupt, rollback_open
from dashboard.ledger import Unavailable

ROLES = ("admin", "household")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_NAME_LENGTH = 64
MIN_PASSWORD_LENGTH = 10
PASSWORD_METHOD = "scrypt:32768:8:1"


@functools.cache
def _dummy_hash(method: str) -> str:
    """A hash to check when the user does not exist, so both paths cost the same. Made when the
    accounts are opened (Accounts.__init__), never by a login: made on first use, it doubled the
    cost of the first failed login for an unknown name."""
    return generate_password_hash(secrets.token_hex(16), method=method)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('admin', 'household')),
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS user_meters (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, meter TEXT NOT NULL,
    PRIMARY KEY (user_id, meter));
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
DROP TABLE IF EXISTS login_failures;
CREATE TABLE IF NOT EXISTS login_locks (
    key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last INTEGER NOT NULL, locked_until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verify_runs (
    id INTEGER PRIMARY KEY, started INTEGER NOT NULL, finished INTEGER, status TEXT NOT NULL,
    height INTEGER, summary TEXT, bad_height INTEGER, requested_by TEXT);
"""


class AccountError(ValueError):
    """A user or password that cannot be accepted; the message says why in one line."""


@dataclass(frozen=True)
class User:
    """A logged-in person: an admin (sees everything) or a household (sees its meters)."""

    id: int
    name: str
    role: str
    meters: frozenset[str] = field(default_factory=frozenset)
    session_token: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, meter: str) -> bool:
        return self.is_admin or meter in self.meters

    # flask-login's user protocol
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.session_token


@dataclass(frozen=True)
class RateLimit:
    """The login lockout's numbers (see the module docstring)."""

    per_user: int = 5
    per_address: int = 20
    window_s: int = 900
    lock_s: int = 60
    max_lock_s: int = 3600

    def lock_for(self, failures: int, allowed: int) -> int:
        """Seconds of lock after ``failures`` counted failures (0 below ``allowed``)."""
        if failures < allowed:
            return 0
        return min(self.lock_s << min(failures - allowed, 32), self.max_lock_s)


def open_db(path: str | Path) -> sqlite3.Connection:
    """The accounts database, owner-only (created mode 0600, narrowed if wider: chain/private_files.py)."""
    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise accounts_fault(Path(path), exc) from None
    return conn


class AccountsFileError(Unavailable):
    """The accounts database cannot be used (not a database, damaged, on a full disk); the message
    says what to do (``accounts_fault``)."""


def accounts_fault(path: Path, exc: sqlite3.Error) -> AccountsFileError:
    """The one-line fault of an SQLite error on the accounts database: a full disk, or a damaged
    file (it holds the accounts: restored, not deleted), or what SQLite said."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return AccountsFileError(
            f"cannot write {path}: the disk is full ({exc}): free space on it (logins and sessions are "
            "written there)",
            "the dashboard cannot record logins now (its disk is full): try again later",
        )
    if is_corrupt(exc):
        return AccountsFileError(
            f"{path} is damaged ({exc}): it holds the dashboard's accounts, sessions and verify runs: "
            "restore it from a backup, or move it away to start with no accounts (deleting it loses "
            "them)",
            "the dashboard's accounts database is damaged: logins are not possible until its operator "
            "restores it",
        )
    return AccountsFileError(f"cannot use {path}: {exc}", f"the dashboard's accounts cannot be used ({exc})")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    """The accounts database (thread-safe: one connection guarded by a lock)."""

    def __init__(
        self,
        path: str | Path,
        *,
        rate_limit: RateLimit | None = None,
        password_method: str = PASSWORD_METHOD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.password_method = password_method
        private_folder(self.path.parent)  # the instance folder (`peerwatt dashboard user add` makes it)
        self.conn = open_db(self.path)
        self.lock = threading.Lock()
        self.damage: AccountsFileError | None = None  # found damaged (until restored, at restart)
        self.rate_limit = rate_limit or RateLimit()
        self._dummy_hash = _dummy_hash(password_method)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; a full disk or a damaged file is its one-line fault."""
        with self.lock:
            try:
                yield self.conn
            except sqlite3.DatabaseError as exc:
                rollback_open(self.conn)
                fault = accounts_fault(self.path, exc)
                if is_corrupt(exc):
                    self.damage = fault
                elif getattr(exc, "sqlite_errorname", "") != "SQLITE_FULL":
                    raise
                raise fault from None

    def check_damage(self, exc: sqlite3.Error) -> AccountsFileError | None:
        """The accounts' fault if the file is damaged (``dashboard.ledger.damaged_file``)."""
        if self.damage is None:
            with self.lock:
                if integrity_problems(self.conn, 1):
                    self.damage = accounts_fault(self.path, exc)
        return self.damage

    # -- the community this folder belongs to --------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._db():
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, values: dict[str, str]) -> None:
        with self._db():
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
            self.conn.execute("COMMIT")

    def holds_anything(self) -> bool:
        """Whether there are accounts or verify runs (what belongs to one community)."""
        with self._db():
            return any(
                self.conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                for table in ("users", "verify_runs")
            )

    # -- users ---------------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str,
        *,
        role: str,
        meters: list[str] | tuple[str, ...] = (),
    ) -> int:
        """Create an account; AccountError for a bad name, a weak password or a taken name."""
        if not NAME_RE.fullmatch(name):
            raise AccountError(f"user name {name!r} is not allowed (letters, digits and _ . @ -, at most 64)")
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        if role == "household" and not meters:
            raise AccountError("a household account needs at least one meter (--meter KEYID)")
        if role == "admin" and meters:
            raise AccountError("an admin account sees every meter: give --admin or --meter, not both")
        check_password(password)
        password_hash = generate_password_hash(password, method=self.password_method)
        with self._db():
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                cur = self.conn.execute(
                    "INSERT INTO users (name, password_hash, role, created) VALUES (?, ?, ?, ?)",
                    (name, password_hash, role, int(time.time())),
                )
                user_id = cur.lastrowid
                self.conn.executemany(
                    "INSERT INTO user_meters VALUES (?, ?)", [(user_id, m) for m in sorted(set(meters))]
                )
                self.conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self.conn.execute("ROLLBACK")
                raise AccountError(f"a user named {name!r} already exists") from None
        return int(user_id)

    def remove_user(self, name: str) -> None:
        with self._db():
            cur = self.conn.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise AccountError(f"no user named {name!r}")

    def users(self) -> list[tuple[str, str, list[str]]]:
        """(name, role, meters) of every account."""
        with self._db():
            rows = self.conn.execute("SELECT id, name, role FROM users ORDER BY name").fetchall()
            meters = self.conn.execute("SELECT user_id, meter FROM user_meters ORDER BY meter").fetchall()
        by_user: dict[int, list[str]] = {}
        for user_id, meter in meters:
            by_user.setdefault(user_id, []).append(meter)
        return [(name, role, by_user.get(uid, [])) for uid, name, role in rows]

    def _load_user(self, user_id: int, token: str) -> User | None:
        row = self.conn.execute("SELECT id, name, role FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return None
        meters = frozenset(
            m for (m,) in self.conn.execute("SELECT meter FROM user_meters WHERE user_id = ?", (user_id,))
        )
        return User(row[0], row[1], row[2], meters, token)

    # -- login and sessions ----------------------------------------------------------------------

    def login(self, name: str, password: str, address: str, *, session_s: int) -> User | None:
        """Check a password and open a session; None if wrong. RateLimited while the account or
        the address is locked (even with the right password).

        The attempt is counted (reserved) before its password is checked, in one transaction with
        the lock check, so simultaneous attempts cannot get more than the limit's passwords
        checked: the one that reaches the limit sets the lock, and later ones are refused while
        the first are still being checked. A right password then gives back its own reservation
        (``_settle_success``)."""
        keys = _lock_keys(name, address)
        before = self._reserve(keys)
        with self._db():
            row = self.conn.execute("SELECT id, password_hash FROM users WHERE name = ?", (name,)).fetchone()
        stored = row[1] if row else self._dummy_hash
        ok = check_password_hash(stored, password) and row is not None
        if not ok:
            return None  # counted already
        return self._settle_success(keys, before, row[0], session_s)

    def _reserve(self, keys: list[tuple[str, str]]) -> dict[str, tuple[int, int, int] | None]:
        """Count an attempt against its keys (account name, address) unless one is locked
        (RateLimited). Returns each key's row (failures, last, locked_until) before this attempt."""
        limit = self.rate_limit
        allowed = {"user": limit.per_user, "addr": limit.per_address}
        now = int(self.clock())
        with self._db():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "DELETE FROM login_locks WHERE max(last, locked_until) <= ?", (now - limit.window_s,)
                )
                rows = {key: self._lock_row(key) for key, _ in keys}
                locked_until = max((row[2] for row in rows.values() if row is not None), default=0)
                if locked_until > now:
                    self.conn.execute("ROLLBACK")
                    raise RateLimited(locked_until - now)
                for key, kind in keys:
                    failures = (rows[key][0] if rows[key] else 0) + 1
                    lock = limit.lock_for(failures, allowed[kind])
                    self.conn.execute(
                        "INSERT OR REPLACE INTO login_locks VALUES (?, ?, ?, ?)",
                        (key, failures, now, now + lock if lock else 0),
                    )
                self.conn.execute("COMMIT")
            except RateLimited:
                raise
            except BaseException:
                rollback_open(self.conn)
                raise
        return rows

    def _lock_row(self, key: str) -> tuple[int, int, int] | None:
        row = self.conn.execute(
            "SELECT failures, last, locked_until FROM login_locks WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _without_own(self, key: str, kind: str, before: tuple[int, int, int] | None):
        """The row of ``key`` with this attempt's reservation taken back: (row now, failures
        counted after it, the row without it). The lock is what the other failures alone set
        (``last`` + the lock for one failure fewer): a lock this reservation's count made,
        which refused attempts meanwhile, goes with it. None if the row is gone."""
        row = self._lock_row(key)
        if row is None:
            return None
        counted = before[0] if before else 0
        later = max(row[0] - counted - 1, 0)
        if later == 0 and row[0] == counted + 1:
            return row, 0, before  # nothing counted since: the row as it was
        failures = row[0] - 1
        allowed = self.rate_limit.per_user if kind == "user" else self.rate_limit.per_address
        lock = self.rate_limit.lock_for(failures, allowed)
        return row, later, (failures, row[1], row[1] + lock if lock else 0)

    def _put_row(self, key: str, row: tuple[int, int, int] | None) -> None:
        if row is None or row[0] <= 0:
            self.conn.execute("DELETE FROM login_locks WHERE key = ?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO login_locks VALUES (?, ?, ?, ?)", (key, *row))

    def _settle_success(
        self,
        keys: list[tuple[str, str]],
        before: dict[str, tuple[int, int, int] | None],
        user_id: int,
        session_s: int,
    ) -> User | None:
        """A right password: it gives back its own reservation (on the account and the address),
        and only its own: failures counted after it, while it was checked, stay counted. It opens
        a session and forgets the account's failures counted before it, unless the failures of
        other attempts alone locked the account meanwhile (RateLimited, and its reservation is
        taken back: refused attempts do not count). A lock its own reservation made goes."""
        (user_key, user_kind), (addr_key, addr_kind) = keys
        now = int(self.clock())
        token = secrets.token_urlsafe(32)
        with self._db():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                addr = self._without_own(addr_key, addr_kind, before[addr_key])
                if addr is not None:
                    self._put_row(addr_key, addr[2])
                user = self._without_own(user_key, user_kind, before[user_key])
                if user is not None:
                    _, later, others = user
                    if later and others is not None and others[2] > now:
                        self._put_row(user_key, others)
                        self.conn.execute("COMMIT")
                        raise RateLimited(others[2] - now)
                    if later:  # failures counted while it was checked stay (their own lock, if any)
                        lock = self.rate_limit.lock_for(later, self.rate_limit.per_user)
                        self._put_row(user_key, (later, user[0][1], user[0][1] + lock if lock else 0))
                    else:
                        self._put_row(user_key, None)
                self.conn.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?)",
                    (_token_hash(token), user_id, now, now + session_s),
                )
                self.conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
                self.conn.execute("COMMIT")
            except RateLimited:
                raise
            except BaseException:
                rollback_open(self.conn)
                raise
            return self._load_user(user_id, token)

    def session_user(self, token: str) -> User | None:
        """The user of a live session token, or None (unknown, expired or user removed)."""
        with self._db():
            row = self.conn.execute(
                "SELECT user_id, expires FROM sessions WHERE token_hash = ?", (_token_hash(token),)
            ).fetchone()
            if row is None or row[1] <= int(time.time()):
                return None
            return self._load_user(row[0], token)

    def logout(self, token: str) -> None:
        with self._db():
            self.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


class RateLimited(Exception):
    """Too many failed logins; ``retry_after_s`` says when to try again."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins: try again in {-(-retry_after_s // 60)} min")
        self.retry_after_s = retry_after_s


def _lock_keys(name: str, address: str) -> list[tuple[str, str]]:
    """The lockout rows of an attempt: its account name (any name, account or not) and address."""
    return [(f"user:{name.lower()[:MAX_NAME_LENGTH]}", "user"), (f"addr:{address[:64]}", "addr")]


def check_password(password: str) -> None:
    """Refuse passwords that are too short or all one character."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) < 4:
        raise AccountError("the password is too simple (use at least 4 different characters)")
