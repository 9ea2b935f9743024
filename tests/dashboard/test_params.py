"""Hostile request parameters get a 400 with a one-line reason, never a 500: integers beyond
SQLite's range, page cursors carrying huge numbers, 30-digit heights and trade ids, dates at the
ends of the calendar, Unicode digits, CR/LF in the login's ``next``, negative limits."""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest

from dashboard import params
from tests.dashboard.conftest import PASSWORDS, csrf_token

BIG = str(2**70)
DIGITS30 = "9" * 30


def cursor(value: int, trade_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, trade_id]).encode()).decode().rstrip("=")


def admin_paths(meter: str) -> list[str]:
    """Requests that answered 500 before the parameters were bounded (issue 13, item 6)."""
    paths = [
        f"/api/v1/trades?interval={BIG}",
        f"/trades?interval={BIG}",
        f"/api/v1/trades.csv?interval={BIG}",
        f"/api/v1/trades?after={cursor(2**70, 1)}",
        f"/api/v1/trades?before={cursor(-(2**64), 1)}",
        f"/trades?after={cursor(1, 2**70)}",
        f"/explorer/blocks/{DIGITS30}",
        f"/api/v1/blocks/{DIGITS30}",
        f"/explorer?before={BIG}",
        f"/api/v1/blocks?before={BIG}",
        f"/trade/{DIGITS30}:{'a' * 24}:{'b' * 24}",
        f"/api/v1/receipts/{DIGITS30}:{'a' * 24}:{'b' * 24}",
        f"/trade/\u00b2:{'a' * 24}:{'b' * 24}",
        f"/api/v1/receipts/\u00b2:{'a' * 24}:{'b' * 24}",
    ]
    for day in ("0001-01-01", "9999-12-31"):
        paths += [
            f"/api/v1/trades?from={day}",
            f"/api/v1/trades?to={day}",
            f"/trades?to={day}",
            f"/api/v1/trades.csv?from={day}",
            f"/api/v1/trades.csv?to={day}",
            f"/household/{meter}?date={day}",
            f"/api/v1/households/{meter}?view=day&date={day}",
            f"/api/v1/households/{meter}?view=month&date={day}",
            f"/api/v1/households/{meter}?view=year&date={day}",
            f"/api/v1/households/{meter}/history?view=month&date={day}",
            f"/api/v1/households/{meter}/orders?date={day}",
        ]
    return paths


def test_hostile_parameters_are_400_with_a_reason(as_admin, built):
    for path in admin_paths(built.meters[0]):
        response = as_admin.get(path)
        assert response.status_code == 400, (path, response.status_code)
        if path.startswith("/api/"):
            reason = response.get_json()["error"]
        else:
            reason = response.get_data(as_text=True).split('role="alert">')[1].split("<")[0]
        assert reason and "\n" not in reason, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/blocks?limit=-2",
        "/api/v1/blocks?limit=0",
        "/api/v1/blocks?limit=201",
        "/api/v1/blocks?before=-1",
        "/api/v1/blocks?limit=\u0661\u0662",  # Arabic-Indic digits: int() takes them, we do not
        "/api/v1/overview?days=0",
        "/api/v1/overview?days=" + BIG,
        "/api/v1/overview?days=%207",
        "/api/v1/blocks/-1",
    ],
)
def test_public_parameters_out_of_bounds_are_400(client, path):
    response = client.get(path)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]


def test_blocks_limit_is_bounded_not_unlimited(client):
    assert client.get("/api/v1/blocks?limit=-2").status_code == 400
    assert len(client.get("/api/v1/blocks?limit=3").get_json()["blocks"]) == 3


@pytest.mark.parametrize(
    "target",
    [
        "/trades\r\nSet-Cookie: x=1",
        "/trades\nLocation: https://evil.example/",
        "/\r",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "trades",
        "/" + "a" * 3000,
    ],
)
def test_login_next_only_goes_to_a_path_on_this_site(fresh_app, target):
    c = fresh_app.test_client()
    response = c.post(
        "/login",
        data={"username": "flat", "password": PASSWORDS["flat"], "csrf_token": csrf_token(c), "next": target},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_login_next_keeps_a_path_with_its_query(fresh_app):
    c = fresh_app.test_client()
    target = "/trades?from=2025-06-02&sort=energy"
    response = c.post(
        "/login",
        data={"username": "flat", "password": PASSWORDS["flat"], "csrf_token": csrf_token(c), "next": target},
    )
    assert response.headers["Location"] == target


# -- the helper itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0661", "1_000", " 1", "1 ", "+1", "0x10", "1e3", "", "-", "--1"]
)
def test_integers_are_ascii_digits_only(text):
    with pytest.raises(params.ParamError):
        params.parse_int("n", text, lo=-100, hi=10**6)


def test_integers_within_bounds():
    assert params.parse_int("n", "0", lo=0, hi=5) == 0
    assert params.parse_int("n", "-3", lo=-5, hi=5) == -3
    assert params.parse_int("n", "0005", lo=0, hi=5) == 5
    for text in ("6", "-6", "9" * 30, "9" * 5000):
        with pytest.raises(params.ParamError, match="within -5..5"):
            params.parse_int("n", text, lo=-5, hi=5)
    with pytest.raises(ValueError, match="SQLite"):
        params.parse_int("n", "1", lo=0, hi=2**63)  # beyond SQLite: a programming error


def test_dates_within_the_calendar():
    assert params.parse_date("d", "2025-06-02") == date(2025, 6, 2)
    for text in ("0001-01-01", "9999-12-31", "1999-12-31", "2101-01-01"):
        with pytest.raises(params.ParamError, match="between"):
            params.parse_date("d", text)
    for text in ("20250602", "2025-06-02T00:00", "2025-W23-1", "2025-02-30", "\u0662025-06-02", "x"):
        with pytest.raises(params.ParamError, match="YYYY-MM-DD"):
            params.parse_date("d", text)


def test_reasons_are_one_line():
    with pytest.raises(params.ParamError) as info:
        params.parse_int("limit", "1\r\n2" * 100, lo=1, hi=5)
    assert "\n" not in str(info.value) and "\r" not in str(info.value) and len(str(info.value)) < 200
