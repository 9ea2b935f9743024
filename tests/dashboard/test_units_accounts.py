"""Formatting (integers in, half-even, never floats), the community calendar, and accounts."""

from __future__ import annotations

from datetime import date

import pytest

from dashboard import units
from dashboard.accounts import PASSWORD_METHOD, AccountError, Accounts, RateLimit, RateLimited
from dashboard.timeutil import buckets, period, zone


def test_money_price_energy_formatting():
    assert units.money(1_234_567) == "\u20ac1.23"
    assert units.money(1_235_000) == "\u20ac1.24" and units.money(1_225_000) == "\u20ac1.22"  # half-even
    assert units.money(-6_000) == "\u2212\u20ac0.01" and units.money(-5_000) == "\u20ac0.00"
    assert units.money(1_000_000_000_000) == "\u20ac1,000,000.00"
    assert units.price(125_000) == "12.5 ct/kWh" and units.price(123_456) == "12.35 ct/kWh"
    assert units.price(None) == "\u2013" and units.price_short(140_000) == "14.0 ct"
    assert units.energy(850) == "850 Wh" and units.energy(12_345) == "12.34 kWh"
    assert units.energy(1_234_567) == "1,234.6 kWh"
    assert units.percent(1, 3) == "33.3 %" and units.percent(1, 0) == "\u2013"
    with pytest.raises(ValueError):
        units.fixed(1, 7, 1)


def test_calendar_periods_in_the_community_zone():
    tz = zone("Europe/Berlin")
    spring = period("day", date(2025, 3, 30), tz)
    assert len(buckets(spring, 900, tz)) == 92
    month = period("month", date(2025, 2, 10), tz)
    assert month.label == "February 2025" and len(buckets(month, 900, tz)) == 28
    assert month.prev_anchor == date(2025, 1, 1) and month.next_anchor == date(2025, 3, 1)
    year = period("year", date(2025, 7, 1), tz)
    assert (year.end - year.start) == 365 * 86400
    with pytest.raises(ValueError):
        period("week", date(2025, 1, 1), tz)


def test_accounts_production_kdf_and_rules(tmp_path):
    accounts = Accounts(tmp_path / "a.sqlite", rate_limit=RateLimit(2, 100, 900))
    accounts.add_user("alice", "long enough pw", role="household", meters=["m1"])
    stored = accounts.conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert PASSWORD_METHOD == "scrypt:32768:8:1" and stored.startswith(PASSWORD_METHOD + "$")
    for bad, message in [
        (("bob", "short"), "at least 10"),
        (("bob", "aaaaaaaaaaaa"), "too simple"),
        (("bad name!", "long enough pw"), "not allowed"),
        (("ALICE", "long enough pw"), "exists"),
    ]:
        with pytest.raises(AccountError, match=message):
            accounts.add_user(*bad, role="household", meters=["m1"])
    with pytest.raises(AccountError, match="at least one meter"):
        accounts.add_user("carol", "long enough pw", role="household")
    user = accounts.login("alice", "long enough pw", "1.2.3.4", session_s=60)
    assert user is not None and user.meters == {"m1"} and not user.is_admin
    assert accounts.session_user(user.session_token) == user
    assert accounts.login("alice", "wrong wrong", "1.2.3.4", session_s=60) is None
    assert accounts.login("alice", "wrong wrong", "1.2.3.4", session_s=60) is None
    with pytest.raises(RateLimited):
        accounts.login("alice", "long enough pw", "1.2.3.4", session_s=60)
    accounts.logout(user.session_token)
    assert accounts.session_user(user.session_token) is None
