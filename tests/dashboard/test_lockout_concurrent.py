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
    "failed_before, wrong_count, wrong_expected, wrong_after",
    [
        # 7 wrong ones arrive while the right password is checked: 4 more fit under the limit (the
        # right one's reservation is the 5th and locks), the rest are refused. The right one gets
        # in: the others alone made 4 failures. Its success keeps those 4 (the code before this
        # test deleted the account's count, wrong ones checked during it included): one more
        # wrong password locks
        (0, 7, ["wrong"] * 4 + ["locked"] * 3, ["wrong", "locked"]),
        # 3 arrive during the check: kept, 2 more wrong ones fit (the old code let 3 + 5 be checked)
        (0, 3, ["wrong"] * 3, ["wrong", "wrong", "locked"]),
        # QA: after 3 failures, a right password and one wrong one during its check: the right one
        # reached the limit with its own reservation, not the others (4): it gets in (the old
        # code answered 429 and left the account locked at 4 failures). The 3 before are
        # forgotten, the one during it is kept
        (3, 1, ["wrong"], ["wrong"] * 4 + ["locked"]),
    ],
)
def test_a_right_password_during_a_burst(
    accounts, monkeypatch, failed_before, wrong_count, wrong_expected, wrong_after
):
    assert [attempt(accounts, "wrong password") for _ in range(failed_before)] == ["wrong"] * failed_before
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
    assert result == ["ok"]
    # at most 5 wrong passwords checked in a row before the lock (the right one's forgets those
    # counted before it)
    after = [attempt(accounts, "wrong password") for _ in range(len(wrong_after))]
    assert after == wrong_after
    assert wrong.count("wrong") + after.count("wrong") == 5
    assert attempt(accounts, RIGHT) == "locked"


def test_a_right_password_is_refused_when_the_others_alone_locked(accounts, monkeypatch):
    """The lock another attempts' failures set without the right one's reservation stands: here
    the lock the 5 failures set expires while the right password is still being checked, and 5
    further ones lock again (a clock the test moves)."""
    clock = [1_750_000_000]
    accounts.clock = lambda: clock[0]
    checks = HeldChecks(monkeypatch, hold=lambda password: password == RIGHT)
    result: list[str] = []
    right = threading.Thread(target=lambda: result.append(attempt(accounts, RIGHT)))
    right.start()
    try:
        checks.wait_entered(1)
        first = [attempt(accounts, "wrong password") for _ in range(5)]
        clock[0] += 61  # the first lock (60 s) is over
        second = [attempt(accounts, "wrong password") for _ in range(2)]
    finally:
        checks.release.set()
        right.join(10)
    assert first == ["wrong"] * 4 + ["locked"]
    # the others: 4 + 1 = 5 failures, locked from the 6th attempt's time for 60 s
    assert second == ["wrong", "locked"]
    assert result == ["locked"]
    assert attempt(accounts, RIGHT) == "locked"
    clock[0] += 61
    assert attempt(accounts, RIGHT) == "ok"


def test_the_address_keeps_only_the_failures_of_others(tmp_path, monkeypatch):
    """A right password gives back its reservation on the address too, and the lock it made
    with it (here: 1 failure, the right one, 1 failure during its check: 2 failures of others,
    under the address's limit of 3)."""
    a = Accounts(
        tmp_path / "a.sqlite",
        rate_limit=RateLimit(per_user=1000, per_address=3, window_s=86400, lock_s=60, max_lock_s=3600),
        password_method=TEST_PASSWORD_METHOD,
    )
    try:
        a.add_user("alice", RIGHT, role="admin")
        assert attempt(a, "wrong password") == "wrong"
        checks = HeldChecks(monkeypatch, hold=lambda password: password == RIGHT)
        result: list[str] = []
        right = threading.Thread(target=lambda: result.append(attempt(a, RIGHT)))
        right.start()
        try:
            checks.wait_entered(1)
            during = attempt(a, "wrong password")
        finally:
            checks.release.set()
            right.join(10)
        assert (during, result) == ("wrong", ["ok"])
        assert attempt(a, "wrong password") == "wrong"  # the third failure of the address locks
        assert attempt(a, RIGHT) == "locked"
    finally:
        a.close()
