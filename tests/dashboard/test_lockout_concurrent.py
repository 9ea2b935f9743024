"""Concurrent logins cannot get past the lockout (QA: 8 simultaneous POSTs to /login for one
account checked 8 passwords instead of 5, and a right password among them got in and wiped the
count). Each attempt is reserved in the lockout count before its password is checked, so at most
``per_user`` passwords are checked per lock, and a success whose burst reached the limit while
its password was being checked is refused like any attempt on a locked account."""

from __future__ import annotations

import threading
import time

import pytest

import dashboard.accounts as accounts_module
from dashboard.accounts import Accounts, RateLimit, RateLimited
from tests.dashboard.conftest import TEST_PASSWORD_METHOD

RIGHT = "right password 1"


@pytest.fixture
def accounts(tmp_path):
    a = Accounts(
        tmp_path / "a.sqlite",
        rate_limit=RateLimit(per_user=5, per_address=1000, window_s=86400, lock_s=60, max_lock_s=3600),
        password_method=TEST_PASSWORD_METHOD,
    )
    a.add_user("alice", RIGHT, role="admin")
    yield a
    a.close()


def attempt(accounts, password: str, address: str = "192.0.2.1"):
    """'ok', 'wrong' or 'locked'."""
    try:
        user = accounts.login("alice", password, address, session_s=60)
    except RateLimited:
        return "locked"
    return "ok" if user is not None else "wrong"


class HeldChecks:
    """check_password_hash held until the test lets it go: the attempts overlap for certain."""

    def __init__(self, monkeypatch, hold) -> None:
        self.real = accounts_module.check_password_hash
        self.hold = hold  # password -> bool: hold this check
        self.entered: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        monkeypatch.setattr(accounts_module, "check_password_hash", self)

    def __call__(self, stored: str, password: str) -> bool:
        with self.lock:
            self.entered.append(password)
        if self.hold(password):
            assert self.release.wait(10)
        return self.real(stored, password)

    def wait_entered(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.entered) < n:
            assert time.monotonic() < deadline
            time.sleep(0.005)


def test_simultaneous_wrong_passwords_check_at_most_five(accounts, monkeypatch):
    checks = HeldChecks(monkeypatch, hold=lambda password: True)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(attempt(accounts, f"wrong password {i}")))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    # wait until every attempt is either in its (held) password check or refused
    try:
        deadline = time.monotonic() + 10
        while len(checks.entered) + len(results) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # an attempt past the reservation would have entered by now
    finally:
        checks.release.set()
        for t in threads:
            t.join(10)
    assert len(checks.entered) == 5  # the old code checked all 8
    assert sorted(results) == ["locked"] * 3 + ["wrong"] * 5
    assert attempt(accounts, RIGHT) == "locked"


@pytest.mark.parametrize(
    "wrong_count, wrong_expected, right_expected",
    [
        # 7 wrong ones arrive while the right password is checked: 4 more fit under the limit, the
        # rest are refused, and so is the right one (the old code let it in, and its success wiped
        # the count); the account stays locked
        (7, ["wrong"] * 4 + ["locked"] * 3, "locked"),
        (3, ["wrong"] * 3, "ok"),  # 4 attempts in all: under the limit, the right one gets in
    ],
)
def test_a_right_password_during_a_burst(accounts, monkeypatch, wrong_count, wrong_expected, right_expected):
    checks = HeldChecks(monkeypatch, hold=lambda password: password == RIGHT)
    result: list[str] = []
    right = threading.Thread(target=lambda: result.append(attempt(accounts, RIGHT)))
    right.start()
    try:
        checks.wait_entered(1)  # the right password is being checked...
        wrong = [attempt(accounts, "wrong password") for _ in range(wrong_count)]
    finally:
        checks.release.set()
        right.join(10)
    assert wrong == wrong_expected
    assert result == [right_expected]
    if right_expected == "locked":
        assert attempt(accounts, RIGHT) == "locked"
    else:  # a success clears the count, as in sequence
        assert [attempt(accounts, "wrong password") for _ in range(4)] == ["wrong"] * 4
        assert attempt(accounts, RIGHT) == "ok"
def test_right_passwords_do_not_count_against_the_address(tmp_path):
    """The reservation of a login that succeeds is taken back: only failures count against an
    address (a first version of the reservation locked a shared address after 20 logins)."""
    a = Accounts(
        tmp_path / "a.sqlite",
        rate_limit=RateLimit(per_user=5, per_address=3, window_s=86400, lock_s=60, max_lock_s=3600),
        password_method=TEST_PASSWORD_METHOD,
    )
    try:
        a.add_user("alice", RIGHT, role="admin")
        assert [attempt(a, RIGHT) for _ in range(10)] == ["ok"] * 10
        assert [attempt(a, "wrong password") for _ in range(2)] == ["wrong"] * 2
        assert attempt(a, RIGHT) == "ok"  # the account's count is cleared, the address's is not
        assert attempt(a, "wrong password") == "wrong"  # the address's third failure: locked
        assert attempt(a, RIGHT) == "locked"
        assert attempt(a, RIGHT, address="192.0.2.2") == "ok"
    finally:
        a.close()
