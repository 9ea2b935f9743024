"""A failed login for an unknown user name costs what one for a real account costs (QA: the first
one cost double, 0.258 s against 0.11 s, because the hash checked in place of the missing
account's was made on first use). It is made when the accounts are opened, so no login makes it.
No wall-clock asserts: the test checks that no login calls the KDF to make a hash."""

from __future__ import annotations

import dashboard.accounts as accounts_module
from tests.dashboard.conftest import make_app

METHOD = "scrypt:1024:8:3"  # used by no other test: nothing cached from them


def no_new_hashes(*args, **kwargs):
    raise AssertionError("a login made a password hash (the unknown-user path costs double)")


def test_the_unknown_user_hash_is_made_when_the_app_is_created(built, tmp_path, monkeypatch):
    if hasattr(accounts_module._dummy_hash, "cache_clear"):
        accounts_module._dummy_hash.cache_clear()
    app = make_app(built, tmp_path / "instance", PASSWORD_METHOD=METHOD)
    monkeypatch.setattr(accounts_module, "generate_password_hash", no_new_hashes)
    accounts = app.extensions["peerwatt"].accounts
    assert accounts.login("nobody", "wrong password", "192.0.2.1", session_s=60) is None
    assert accounts.login("admin", "wrong password", "192.0.2.1", session_s=60) is None


def test_the_unknown_user_hash_is_made_when_accounts_are_opened(tmp_path, monkeypatch):
    if hasattr(accounts_module._dummy_hash, "cache_clear"):
        accounts_module._dummy_hash.cache_clear()
    accounts = accounts_module.Accounts(tmp_path / "a.sqlite", password_method=METHOD)
    monkeypatch.setattr(accounts_module, "generate_password_hash", no_new_hashes)
    try:
        assert accounts.login("nobody", "wrong password", "192.0.2.1", session_s=60) is None
    finally:
        accounts.close()
