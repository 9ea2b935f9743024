"""Every route of the app's ``url_map``, every path variable and every query or form parameter
its view reads, filled with hostile values (huge and negative integers, Unicode digits, empty,
very long text, CR/LF, dates at the ends of the calendar, forged cursors and ids), logged in
(admin, household) and not: never a 500, never an exception.

Deterministic (hypothesis derandomized) and bounded: a few dozen examples per route.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import date
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dashboard.conftest import PASSWORDS, login, make_app

# The parameters each view reads (query string; form fields for POST /login). A new route must
# be listed here, or test_every_route_is_covered fails.
QUERY = {
    "overview.page": ["days"],
    "overview.api": ["days"],
    "explorer.page": ["before"],
    "explorer.api_blocks": ["before", "limit"],
    "explorer.block_page": [],
    "explorer.api_block": [],
    "explorer.governance_page": ["before", "limit"],
    "explorer.api_chain": [],
    "explorer.api_governance": ["before", "limit"],
    "explorer.api_verify": [],
    "explorer.verify_start": [],
    "trades.page": [
        "from",
        "to",
        "household",
        "side",
        "interval",
        "at",
        "sort",
        "order",
        "limit",
        "after",
        "before",
    ],
    "trades.api": [
        "from",
        "to",
        "household",
        "side",
        "interval",
        "at",
        "sort",
        "order",
        "limit",
        "after",
        "before",
    ],
    "trades.csv": ["from", "to", "household", "side", "interval", "at", "sort", "order", "limit"],
    "household.mine": [],
    "household.page": ["view", "date"],
    "household.api_list": [],
    "household.api_summary": ["view", "date"],
    "household.api_history": ["view", "date"],
    "household.api_orders": ["date"],
    "household.receipt_page": [],
    "household.api_receipt": [],
    "household.api_verify": [],
    "statements.page": ["period"],
    "statements.api": ["period"],
    "auth.login": ["next"],
    "auth.logout": [],
    "auth.me": [],
}
FORM = {"auth.login": ["next", "username", "password"]}
# POSTs without parameters that start work or end the session: exercised elsewhere
# (test_receipts_explorer, test_permissions), not fuzzed here.
NOT_FUZZED = {("explorer.verify_start", "POST"), ("explorer.api_verify", "POST"), ("auth.logout", "POST")}


def cursor(*values: int) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


BIG = [2**53, 2**63, 2**64, 2**70, -(2**63) - 1, -(2**64), 10**30]
# In the ledger's range but after the year 9999 (UTC, or local time east of UTC): datetime cannot
# hold them (found in a QA pass: /trades?interval=253402300800 answered 500)
LATE = [253402300799, 253402300800, 253402318800, 10**15, 2**53 - 1]
SPECIAL = [
    "",
    " ",
    "0",
    "-1",
    "-0",
    "\u00b2",
    "\u0661\u0662",
    "\uff11",
    "1_000",
    "1e9",
    "0x10",
    "\r\n",
    "/trades\r\nSet-Cookie: a=b",
    "\x00",
    "%00",
    "a" * 5000,
    "9" * 30,
    "-" + "9" * 30,
    "0001-01-01",
    "9999-12-31",
    "2000-01-01",
    "2100-12-31",
    "2025-02-30",
    "2025-06-02",
    "2025-06-03T14:20",
    "2025-06-03 14:20:59",
    "2025-03-30T02:30",
    "2025-10-26T02:30",
    "0001-01-01T00:00",
    "9999-12-31T23:59",
    "2025-06-03T24:00",
    "2025-06-03T14:20+02:00",
    "20250602",
    "day",
    "month",
    "year",
    "sell",
    "buy",
    "asc",
    "desc",
    "energy",
    "//evil.example/",
    "https://evil.example/",
    "/\\evil.example",
    "javascript:alert(1)",
    "../../etc/passwd",
    "<script>",
    "\ud7ff\ue000\U0010ffff",
    "null",
    "[]",
    "{}",
    *(str(n) for n in BIG + LATE),
    *(cursor(n, 1) for n in BIG + LATE),
    *(cursor(1, n) for n in BIG + LATE),
    *(f"{n}:{'a' * 24}:{'b' * 24}" for n in LATE),
    cursor(1),
    cursor(1, 2, 3),
    base64.urlsafe_b64encode(b'["a", 1]').decode(),
    f"{2**70}:{'a' * 24}:{'b' * 24}",
    f"\u00b2:{'a' * 24}:{'b' * 24}",
    f"1:{'A' * 24}:{'b' * 24}",
    "1::",
    "0" * 32,
    "g" * 32,
]
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
hostile = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
    text,
)


@pytest.fixture(scope="module")
def fuzz_app(built, tmp_path_factory):
    """An app of its own: the fuzzed logins fill its lockout tables."""
    return make_app(built, tmp_path_factory.mktemp("fuzz-instance"))


@pytest.fixture(scope="module")
def clients(fuzz_app):
    out = {"anonymous": fuzz_app.test_client()}
    for name in ("admin", "villa"):
        c = fuzz_app.test_client()
        assert login(c, name).status_code == 302
        out[name] = c
    return out


@pytest.fixture(scope="module")
def known(clients, built):
    """Real values to mix in (a real meter, trade id, cursor and receipt reach deeper code)."""
    page = clients["admin"].get(f"/api/v1/trades?household={built.meters[0]}&limit=3").get_json()
    trade = page["trades"][0]["id"]
    receipt = clients["admin"].get(f"/api/v1/receipts/{trade}").get_json()
    tokens = {}
    for name, c in clients.items():
        html = c.get("/explorer").get_data(as_text=True)
        tokens[name] = html.split('name="csrf-token" content="')[1].split('"')[0]
    return {
        "meter": built.meters[0],
        "trade": trade,
        "cursor": page["next"],
        "receipt": receipt,
        "csrf": tokens,
    }


def routes(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, rule) of every route but the static files."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, rule.rule))
    return sorted(out)


def test_every_route_is_covered(fuzz_app):
    endpoints = {endpoint for endpoint, _, _ in routes(fuzz_app)}
    assert endpoints == set(QUERY), "list the parameters of new routes in QUERY"
    assert cases(fuzz_app) == _route_ids(), "the app has routes outside its blueprints"


def _paths(leaf_paths: list, value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            _paths(leaf_paths, v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _paths(leaf_paths, v, (*path, i))
    leaf_paths.append(path)
    return leaf_paths


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def receipt_body(draw, receipt: dict) -> str:
    """A real receipt with one part replaced by a hostile value, or hostile text."""
    kind = draw(st.sampled_from(["mutated", "json", "text", "none"]))
    if kind == "none":
        return ""
    if kind == "text":
        return draw(st.sampled_from(SPECIAL) | text)
    if kind == "json":
        return json.dumps(draw(json_value))
    body = copy.deepcopy(receipt)
    path = draw(st.sampled_from(_paths([], body)[:-1]))
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = draw(json_value | st.sampled_from(SPECIAL))
    return json.dumps(body)


def cases(app) -> list[tuple[str, str, str]]:
    return [r for r in routes(app) if (r[0], r[1]) not in NOT_FUZZED]


# The routes must be known when the module is collected, before the fixtures build the app: list
# them from a url_map of the same blueprints (test_every_route_is_covered checks it is the app's).
def _route_ids() -> list[tuple[str, str, str]]:
    from flask import Flask

    from dashboard.views import auth, explorer, household, overview, statements, trades

    app = Flask("routes")
    for blueprint in (auth.bp, overview.bp, trades.bp, household.bp, explorer.bp, statements.bp):
        app.register_blueprint(blueprint)
    return cases(app)


# The classes of issue 13 (item 6), sent to every parameter of every route one at a time.
SWEEP = [
    "",
    "-1",
    "\u00b2",
    "\u0661\u0662",
    "9" * 30,
    str(2**70),
    str(-(2**64)),
    "0001-01-01",
    "9999-12-31",
    "2025-03-30T02:30",
    "9999-12-31T23:59",
    "/x\r\nSet-Cookie: a=b",
    "a" * 5000,
    cursor(2**70, 1),
    cursor(1, -(2**64)),
    *(str(n) for n in LATE),
    *(cursor(n, 1) for n in LATE),
    *(f"{n}:{'a' * 24}:{'b' * 24}" for n in LATE),
    f"{'9' * 30}:{'a' * 24}:{'b' * 24}",
    f"\u00b2:{'a' * 24}:{'b' * 24}",
    "//evil.example/",
]
EXAMPLES = {"admin": 40, "villa": 15, "anonymous": 10}
PATH_VARS = ("meter", "height", "trade_id")


def _names(endpoint: str, method: str, rule: str) -> list[str]:
    names = [v for v in PATH_VARS if re.search(rf"<(\w+:)?{v}>", rule)]
    return names + (FORM[endpoint] if method == "POST" and endpoint in FORM else QUERY[endpoint])


def _send(client, token: str, endpoint: str, method: str, rule: str, values: dict, body: str = ""):
    """One request with these values in the path, the query string or the form; < 500 or fail."""
    values = dict(values)
    url = rule
    for var in PATH_VARS:
        value = quote(values.pop(var, ""), safe="")
        url = re.sub(rf"<(\w+:)?{var}>", lambda _, v=value: v, url)
    kwargs: dict = {"headers": {"X-CSRFToken": token} if method == "POST" else {}}
    if method == "POST" and endpoint in FORM:
        kwargs["data"] = values | {"csrf_token": token}
        client = _fresh(client)  # a login that succeeds must not change the shared clients
    else:
        kwargs["query_string"] = values
        if method == "POST":
            kwargs["data"] = body
            kwargs["content_type"] = "application/json"
    response = client.open(url, method=method, **kwargs)
    assert response.status_code < 500, (method, url, values, response.get_data(as_text=True)[:300])
    return response


def _fresh(client):
    """A client of the same app with the same session cookie (hence the same CSRF token)."""
    other = client.application.test_client()
    cookie = client.get_cookie("peerwatt_session")
    if cookie is not None:
        other.set_cookie("peerwatt_session", cookie.value)
    return other


def _real(known: dict) -> dict[str, str]:
    return {
        "username": "villa",
        "password": PASSWORDS["villa"],
        "meter": known["meter"],
        "household": known["meter"],
        "height": "5",
        "trade_id": known["trade"],
        "after": known["cursor"],
        "before": known["cursor"],
        "at": "2025-06-03T14:20",
    }


@pytest.mark.parametrize("who", sorted(EXAMPLES))
@pytest.mark.parametrize("endpoint,method,rule", _route_ids(), ids=lambda v: str(v))
def test_each_hostile_class_in_each_parameter(clients, known, endpoint, method, rule, who):
    """Every value of SWEEP in every parameter, the others real (path) or absent."""
    real = {k: v for k, v in _real(known).items() if k in PATH_VARS or k in FORM.get(endpoint, ())}
    names = _names(endpoint, method, rule)
    for name in names:
        for value in SWEEP:
            _send(clients[who], known["csrf"][who], endpoint, method, rule, real | {name: value})


@pytest.mark.parametrize("who", sorted(EXAMPLES))
@pytest.mark.parametrize("endpoint,method,rule", _route_ids(), ids=lambda v: str(v))
def test_no_route_answers_500(clients, known, endpoint, method, rule, who):
    """Random hostile values (hypothesis): one or two parameters hostile, the others absent or
    real, and for the receipt check a hostile body."""
    names = _names(endpoint, method, rule)
    real = _real(known)

    @settings(
        max_examples=EXAMPLES[who],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def check(data):
        bad = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=2)) if names else set()
        values = {}
        for name in names:
            if name in bad:
                values[name] = data.draw(hostile, label=name)
            elif name in real and (name in PATH_VARS or data.draw(st.booleans())):
                values[name] = real[name]
        body = data.draw(receipt_body(known["receipt"]), label="body") if method == "POST" else ""
        _send(clients[who], known["csrf"][who], endpoint, method, rule, values, body)

    check()


def test_url_for_options_in_the_query_string_are_not_carried_into_links(as_villa):
    """Found in a QA pass: /trades passed its whole query string to url_for, whose own options
    (_method, _external, _scheme, _anchor) then made a 500 or changed the CSV link's target."""
    assert as_villa.get("/trades?_method=POST").status_code == 200
    query = "_external=1&_scheme=https&_anchor=%0aalert(1)&side=sell"
    page = as_villa.get(f"/trades?{query}").get_data(as_text=True)
    link = page.split('id="csv-link"', 1)[1].split(">", 1)[0]
    assert 'href="/api/v1/trades.csv?side=sell"' in link, link
