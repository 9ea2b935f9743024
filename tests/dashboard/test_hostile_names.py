"""Names, notes and proposal args that members chose, shown safely (found in a QA pass): a name
ending in an unclosed RIGHT-TO-LEFT OVERRIDE flipped the text after it (``/explorer/governance``
read "sey :Á exe.png"), NUL and other C0 controls rendered as boxes, and proposal args shown
with ``tojson`` read ``"serial": "\\u0027\\"\\u003e..."`` rather than the serial voted on.

Every member-chosen string in HTML is isolated (``<bdi>``, or FSI…PDI where no element may stand:
the title, a select's options), C0/C1 controls are shown escaped (``\\u0000``), and args are
readable JSON (autoescaped)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from dashboard.text import for_terminal
from tests.dashboard.conftest import PASSWORDS, login, make_app
from tests.dashboard.hostile_ledger import (
    COMMUNITY_NAME,
    NAMES,
    NEW_MEMBER_NAME,
    NOTE,
    VALIDATOR_NAME,
    build_hostile,
)

FSI, PDI = "\u2068", "\u2069"
CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
STRONG_OR_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u0590-\u08ff]")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_hostile(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def hostile_app(hostile, tmp_path_factory):
    app = make_app(hostile, tmp_path_factory.mktemp("hostile-instance"))
    accounts = app.extensions["peerwatt"].accounts
    accounts.add_user("mallory", PASSWORDS["villa"], role="household", meters=[hostile.meters[0]])
    return app


def _clients(app):
    admin, mallory, visitor = app.test_client(), app.test_client(), app.test_client()
    assert login(admin, "admin").status_code == 302
    assert login(mallory, "mallory", PASSWORDS["villa"]).status_code == 302
    return {"admin": admin, "mallory": mallory, "visitor": visitor}


def _pages(client, hostile) -> dict[str, str]:
    trade = client.get(f"/api/v1/trades?household={hostile.meters[0]}&limit=5").get_json()
    paths = ["/", "/explorer", "/explorer/governance", "/explorer/blocks/3", "/explorer/blocks/4"]
    if trade is not None and "trades" in trade:
        paths += [
            f"/household/{hostile.meters[0]}",
            f"/household/{hostile.meters[0]}?date=2025-06-02",
            "/trades",
            f"/trade/{trade['trades'][0]['id']}",
            "/household",
        ]
    out = {}
    for path in paths:
        response = client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        out[path] = response.get_data(as_text=True)
    return out


class _Isolation(HTMLParser):
    """Every text run that holds a bidi control or right-to-left letters is inside a <bdi>, or
    wrapped in FSI…PDI (the title and options cannot hold elements)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open_bdi = 0
        self.bare: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "bdi":
            self.open_bdi += 1
        for _, value in attrs:
            if value and STRONG_OR_BIDI.search(value):
                self.bare.append(f"attribute {value!r}")

    def handle_endtag(self, tag):
        if tag == "bdi":
            self.open_bdi -= 1

    def handle_data(self, data):
        if self.open_bdi or not STRONG_OR_BIDI.search(data):
            return
        outside = re.sub(f"{FSI}[^{FSI}{PDI}]*{PDI}", "", data)
        if STRONG_OR_BIDI.search(outside):
            self.bare.append(data.strip()[:80])


def test_member_chosen_text_is_isolated_and_controls_are_shown_escaped(hostile_app, hostile):
    seen_names = set()
    for who, client in _clients(hostile_app).items():
        for path, page in _pages(client, hostile).items():
            assert not CONTROLS.search(page), (who, path, CONTROLS.search(page).group())
            checker = _Isolation()
            checker.feed(page)
            assert checker.bare == [], (who, path, checker.bare)
            text = html.unescape(page)
            seen_names |= {n for n in NAMES if n.replace("\u202e", "\\u202e") in text}
            seen_names |= {NAMES[2]} if "Nul\\u0000Bel" in text else set()
    assert "Nul\\u0000Bel\\u0007Esc\\u001b" in html.unescape(
        _clients(hostile_app)["admin"].get("/household").get_data(as_text=True)
    )
    assert len(seen_names) >= 4, seen_names


def test_a_vote_after_an_overriding_name_reads_as_sent(hostile_app):
    """The QA's case: "Mallory<RLO>: yes" on the governance page; the name is isolated, so the
    ": yes" after it is not reversed, and its override is shown (\\u202e) rather than obeyed
    (it would still reverse the rest of a name like "Oak<RLO>Street"). A Hebrew name stays."""
    page = _clients(hostile_app)["admin"].get("/explorer/governance").get_data(as_text=True)
    assert "<bdi>Mallory\\u202e</bdi>: <bdi>yes</bdi>" in page
    assert "\u202e" not in page  # the override is shown, not obeyed: it cannot reverse the name
    assert "<bdi>\u05e9\u05e8\u05d4 \u05db\u05d4\u05df</bdi>: <bdi>yes</bdi>" in page


def test_proposal_args_are_readable_text(hostile_app):
    """Args were shown with tojson: the serial read "\\u0027\\"\\u003e\\u003cx\\u003e". Now they are
    JSON as written, HTML-escaped by the template; bidi and C0 controls in them are escaped
    (\\u202e), so they cannot flip the page."""
    for client in _clients(hostile_app).values():
        page = client.get("/explorer/governance").get_data(as_text=True)
        assert "\\u0027" not in page and "\\u003c" not in page and "\\u003e" not in page
        assert '"serial": "\'\\"><x>"' in html.unescape(page), "the serial as voted on"
        assert "<x>" not in page  # escaped, never markup
        block = client.get("/explorer/blocks/3").get_data(as_text=True)
        assert '"serial": "\'\\"><x>"' in html.unescape(block)
        assert "\\u003c" not in block
    admin = _clients(hostile_app)["admin"].get("/explorer/governance").get_data(as_text=True)
    assert f'"name": "{NEW_MEMBER_NAME[:-1]}\\u202e"' in html.unescape(admin)
    assert html.escape(NOTE.replace("\x00", "\\u0000").replace("\u202e", "\\u202e"), quote=False) in admin


def test_the_terminal_gets_no_bidi_or_control_characters():
    """The dashboard's start line names the community: a name with an override or a BEL would
    flip or ring the operator's terminal. dashboard.text.for_terminal escapes them."""
    for name in (COMMUNITY_NAME, VALIDATOR_NAME, *NAMES):
        shown = for_terminal(name)
        assert not CONTROLS.search(shown) and not re.search("[\u202a-\u202e\u2066-\u2069]", shown), shown
    assert for_terminal(COMMUNITY_NAME) == "Oak\\u202eStreet\\u0007"
    assert for_terminal("Oak Street") == "Oak Street"
