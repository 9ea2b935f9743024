"""Login lockout (issue 13, item 11): per account with exponential backoff, per client address
only as a second line, and the client's address taken from X-Forwarded-For only when the request
came through a configured trusted proxy, so one attacker behind the proxy does not lock everybody
out. Failed logins never reveal whether an account exists."""

from __future__ import annotations

import re
import time

import pytest

from dashboard.accounts import Accounts, RateLimit, RateLimited
from dashboard.proxies import ProxyConfigError, client_address, parse_trusted
from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, csrf_token, make_app

RIGHT = "right password 1"
TOKEN_RE = re.compile(r'(content|value)="[^"]*"')  # CSRF tokens and the name typed differ


class Clock:
    """A clock the test moves (Accounts takes any callable returning Unix seconds)."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts(tmp_path):
    clock = Clock()
    a = Accounts(
        tmp_path / "a.sqlite",
        rate_limit=RateLimit(per_user=5, per_address=1000, window_s=86400, lock_s=60, max_lock_s=3600),
        password_method=TEST_PASSWORD_METHOD,
        clock=clock,
    )
    a.add_user("alice", RIGHT, role="admin")
    a.clock_ = clock
    yield a
    a.close()


def attempt(accounts, name: str, password: str, address: str = "192.0.2.1"):
    """'ok', 'wrong' or the lock's Retry-After seconds."""
    try:
        user = accounts.login(name, password, address, session_s=60)
    except RateLimited as exc:
        return exc.retry_after_s
    return "ok" if user is not None else "wrong"


def test_account_locks_after_five_failures_with_doubling_backoff(accounts):
    clock = accounts.clock_
    assert [attempt(accounts, "alice", "wrong password") for _ in range(5)] == ["wrong"] * 5
    assert attempt(accounts, "alice", RIGHT) == 60  # locked: even the right password waits
    for lock in (120, 240, 480, 960, 1920, 3600, 3600):  # each failure after a lock doubles it
        clock.now += 10_000
        assert attempt(accounts, "alice", "wrong password") == "wrong"
        assert attempt(accounts, "alice", RIGHT) == lock
    # another client address does not get around the account's lock
    assert attempt(accounts, "alice", RIGHT, address="198.51.100.7") == 3600


def test_lock_ends_after_the_backoff(accounts):
    clock = accounts.clock_
    for _ in range(5):
        attempt(accounts, "alice", "wrong password")
    clock.now += 59
    assert attempt(accounts, "alice", RIGHT) == 1
    clock.now += 1
    assert attempt(accounts, "alice", RIGHT) == "ok"
    # a successful login starts the count afresh
    assert [attempt(accounts, "alice", "wrong password") for _ in range(4)] == ["wrong"] * 4
    assert attempt(accounts, "alice", RIGHT) == "ok"


def test_failures_are_forgotten_after_a_quiet_window(accounts):
    clock = accounts.clock_
    for _ in range(4):
        attempt(accounts, "alice", "wrong password")
    clock.now += 86400  # a day without a failure
    assert [attempt(accounts, "alice", "wrong password") for _ in range(4)] == ["wrong"] * 4
    assert attempt(accounts, "alice", RIGHT) == "ok"


def test_unknown_account_locks_exactly_like_a_real_one(accounts):
    clock = accounts.clock_
    real, ghost = [], []
    for name, out in (("alice", real), ("nobody", ghost)):
        for _ in range(7):
            out.append(attempt(accounts, name, "wrong password"))
        clock.now += 60
        out.append(attempt(accounts, name, "wrong password"))
        out.append(attempt(accounts, name, "wrong password"))
    assert real == ghost == ["wrong"] * 5 + [60, 60, "wrong", 120]


def test_address_limit_is_a_lock_with_backoff_too(tmp_path):
    clock = Clock()
    a = Accounts(
        tmp_path / "a.sqlite",
        rate_limit=RateLimit(per_user=5, per_address=20, window_s=86400, lock_s=60, max_lock_s=3600),
        password_method=TEST_PASSWORD_METHOD,
        clock=clock,
    )
    a.add_user("alice", RIGHT, role="admin")
    for i in range(20):
        assert attempt(a, f"guess{i}", "wrong password") == "wrong"
    assert attempt(a, "alice", RIGHT) == 60  # this address, any account
    assert attempt(a, "alice", RIGHT, address="192.0.2.99") == "ok"  # another address
    a.close()


# -- the client's address -----------------------------------------------------------------------


def test_client_address_honours_forwarded_for_only_from_trusted_proxies():
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8", "::1"])
    # straight from a client: the header is whatever the client wrote, so it is ignored
    assert client_address("203.0.113.9", ["198.51.100.1"], trusted) == "203.0.113.9"
    assert client_address("203.0.113.9", [], trusted) == "203.0.113.9"
    # through the proxy: the right-most address that is not one of our proxies
    assert client_address("127.0.0.1", ["198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", ["spoofed, 198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("127.0.0.1", ["6.6.6.6", "198.51.100.1, 10.1.2.3"], trusted) == "198.51.100.1"
    assert client_address("::1", ["2001:db8::5"], trusted) == "2001:db8::5"
    # a header that names no usable client: the proxy's own address (never something made up)
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["not an address"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["10.0.0.7"], trusted) == "10.0.0.7"
    assert client_address(None, [], trusted) == "?"
    # nothing trusted (the default): the peer, always
    assert client_address("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


@pytest.mark.parametrize(
    "entry, client",
    [
        # what proxies write (QA: these fell back to the proxy's address, so everybody behind
        # such a proxy shared one address lock)
        ("203.0.113.11:4711", "203.0.113.11"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("[2001:db8::5]:4711", "2001:db8::5"),
        (" 203.0.113.11:4711 ", "203.0.113.11"),
        # not an address: the proxy's own
        ("203.0.113.11:", "127.0.0.1"),
        ("203.0.113.11:port", "127.0.0.1"),
        ("203.0.113.11:123456", "127.0.0.1"),
        ("[203.0.113.11]", "127.0.0.1"),
        ("[2001:db8::5", "127.0.0.1"),
        ("[2001:db8::5]x", "127.0.0.1"),
        ("2001:db8::5:4711", "2001:db8::5:4711"),  # no brackets: an IPv6 address, as written
        ("host.example:4711", "127.0.0.1"),
    ],
)
def test_forwarded_for_entries_with_a_port_or_in_brackets(entry, client):
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    assert client_address("127.0.0.1", [entry], trusted) == client
    # a trusted hop with a port is skipped like one without
    assert client_address("127.0.0.1", [f"{entry}, 10.0.0.7:80"], trusted) == client


@pytest.mark.parametrize("entry", ["localhost", "300.1.1.1", "10.0.0.0/33", "", "10.0.0.1/8"])
def test_bad_trusted_proxy_is_a_one_line_error(entry):
    with pytest.raises(ProxyConfigError) as info:
        parse_trusted([entry])
    assert "\n" not in str(info.value) and "trusted" in str(info.value).lower()


# -- through the app ------------------------------------------------------------------------------


def post_login(client, name: str, password: str, forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf_token(client)},
        headers=headers,
    )


def test_one_attacker_behind_the_proxy_does_not_lock_others_out(built, tmp_path):
    app = make_app(built, tmp_path / "i", TRUSTED_PROXIES=["127.0.0.1"])  # the test client's peer
    attacker = app.test_client()
    for _ in range(5):
        post_login(attacker, "villa", "wrong password", forwarded_for="203.0.113.9")
    for i in range(25):
        post_login(attacker, f"guess{i}", "wrong password", forwarded_for="203.0.113.9")
    assert post_login(attacker, "admin", PASSWORDS["admin"], forwarded_for="203.0.113.9").status_code == 429
    neighbour = app.test_client()
    assert post_login(neighbour, "flat", PASSWORDS["flat"], forwarded_for="198.51.100.4").status_code == 302
    assert post_login(app.test_client(), "admin", PASSWORDS["admin"], "198.51.100.5").status_code == 302
    # the account the attacker hammered is locked for everybody, with a Retry-After
    locked = post_login(app.test_client(), "villa", PASSWORDS["villa"], forwarded_for="198.51.100.4")
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


def test_forwarded_for_from_an_untrusted_peer_is_ignored(built, tmp_path):
    app = make_app(built, tmp_path / "i")  # no trusted proxy: the header is the client's word
    attacker = app.test_client()
    for i in range(20):
        post_login(attacker, f"guess{i}", "wrong password", forwarded_for=f"192.0.2.{i}")
    assert post_login(attacker, "flat", PASSWORDS["flat"], forwarded_for="192.0.2.200").status_code == 429


def test_failed_logins_look_the_same_for_real_and_unknown_accounts(built, tmp_path):
    app = make_app(built, tmp_path / "i", TRUSTED_PROXIES=["127.0.0.1"])
    seen = {}
    for name in ("villa", "nobody"):
        c = app.test_client()
        responses = [post_login(c, name, "wrong password", f"192.0.2.{len(seen)}") for _ in range(6)]
        assert name in responses[0].get_data(as_text=True)  # the form keeps the name typed
        seen[name] = [
            # Retry-After counts down in real seconds: compare that it is there
            (r.status_code, "Retry-After" in r.headers, TOKEN_RE.sub("", r.get_data(as_text=True)))
            for r in responses
        ]
    assert seen["villa"] == seen["nobody"]
    assert [s for s, _, _ in seen["villa"]] == [401] * 5 + [429]


def test_the_lock_ends_through_the_app(built, tmp_path):
    app = make_app(built, tmp_path / "i", LOGIN_LOCK_S=2)
    c = app.test_client()
    for _ in range(5):
        assert post_login(c, "flat", "wrong password").status_code == 401
    refused = post_login(c, "flat", PASSWORDS["flat"])
    assert refused.status_code == 429 and refused.headers["Retry-After"] in ("1", "2")
    time.sleep(2.05)
    assert post_login(c, "flat", PASSWORDS["flat"]).status_code == 302
