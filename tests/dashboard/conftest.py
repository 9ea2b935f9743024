"""Dashboard test fixtures: one real market ledger per session (tests/dashboard/ledger_fixture.py)
and apps over it with their own instance folders and accounts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboard.app import create_app
from tests.dashboard.ledger_fixture import BuiltLedger, build

# The production KDF (scrypt n=2**15) costs ~0.1 s per hash; tests of everything but the KDF use a
# cheaper scrypt so the suite stays fast (test_accounts checks the production default).
TEST_PASSWORD_METHOD = "scrypt:1024:8:1"
PASSWORDS = {"admin": "admin-pass-1234", "villa": "villa-pass-1234", "flat": "flat-pass-1234"}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> BuiltLedger:
    """The session's ledger (about 5 s to build): six households, 3.6 days, three validators."""
    return build(tmp_path_factory.mktemp("ledger"))


def synced_app(data_dir: Path, instance: Path, **config):
    """A test dashboard over ``data_dir`` (fast password hashing, ``config`` on top), its index
    synced; add accounts with ``app.extensions["peerwatt"].accounts.add_user``."""
    app = create_app(
        data_dir,
        instance_dir=instance,
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD, **config},
    )
    app.extensions["peerwatt"].indexer.sync()
    return app


def make_app(built: BuiltLedger, instance: Path, **config):
    app = synced_app(built.data_dir, instance, **config)
    accounts = app.extensions["peerwatt"].accounts
    accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    accounts.add_user("villa", PASSWORDS["villa"], role="household", meters=[built.meters[0]])
    accounts.add_user("flat", PASSWORDS["flat"], role="household", meters=[built.meters[2]])
    return app


@pytest.fixture(scope="session")
def app(built, tmp_path_factory):
    """A dashboard shared by the read-only tests (users: admin, villa = Sunny Villa, flat = Flat 3B)."""
    return make_app(built, tmp_path_factory.mktemp("instance"))


@pytest.fixture
def fresh_app(built, tmp_path):
    """A dashboard of its own (for tests that change accounts, sessions or rate limits)."""
    return make_app(built, tmp_path / "instance")


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return CSRF_RE.search(page).group(1)


def login(client, name: str, password: str | None = None):
    """Log in through the real form (with its CSRF token); returns the response."""
    token = csrf_token(client)
    return client.post(
        "/login", data={"username": name, "password": password or PASSWORDS[name], "csrf_token": token}
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def as_admin(app):
    c = app.test_client()
    assert login(c, "admin").status_code == 302
    return c


@pytest.fixture
def as_villa(app):
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    return c


@pytest.fixture
def as_flat(app):
    c = app.test_client()
    assert login(c, "flat").status_code == 302
    return c
