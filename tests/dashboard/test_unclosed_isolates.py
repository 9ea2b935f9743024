"""Found in a QA pass: a name ending in an unclosed RIGHT-TO-LEFT ISOLATE (U+2067) reordered the
sentence after it, where docs/dashboard.md promises a name "reorders only itself, never the text
after it": ``isolate_inline`` wrapped it as FSI name RLI PDI, and that PDI closed the name's RLI,
leaving our FSI open to the end of the sentence ("(FSI שרה RLI PDI): no money moved ..."). The
name's own isolates and embeddings are now closed inside it, and a PDI of its own that would
close ours is shown escaped: in the HTML, the JSON API and the CSV's delivery_note alike."""

from __future__ import annotations

import csv
import io
import re

import pytest

from dashboard.text import isolate_inline, isolate_text
from tests.dashboard.conftest import login, synced_app
from tests.dashboard.ledger_fixture import build_unsettled

OPENERS = {
    "\u2066": "I",
    "\u2067": "I",
    "\u2068": "I",
    "\u202a": "E",
    "\u202b": "E",
    "\u202d": "E",
    "\u202e": "E",
}
HOSTILE = [
    "\u05e9\u05e8\u05d4\u2067",  # the reproduction: a Hebrew name ending in an RLI
    "Carol\u2067",
    "Mallory\u2066\u2067\u2068",
    "Eve\u202e",
    "Eve\u202b\u2067x",
    "A\u2069B",  # a PDI of its own: it would close our FSI
    "A\u2067B\u2069\u2069C",
    "\u2069\u202c",
]


def open_at_end(text: str) -> list[str]:
    """The isolates ("I") and embeddings ("E") still open after ``text``, by the Unicode bidi
    algorithm's matching (X5a-X7): a PDI closes the last open isolate and what was opened in it,
    or nothing when none is open; a PDF closes an embedding only if no isolate was opened after it."""
    stack: list[str] = []
    for ch in text:
        if ch in OPENERS:
            stack.append(OPENERS[ch])
        elif ch == "\u2069" and "I" in stack:
            while stack.pop() != "I":
                pass
        elif ch == "\u202c" and stack and stack[-1] == "E":
            stack.pop()
    return stack


def closed_before(text: str, after: str) -> bool:
    """Whether nothing is open where ``after`` starts (its last occurrence)."""
    return open_at_end(text[: text.rindex(after)]) == []


@pytest.mark.parametrize("name", HOSTILE)
def test_isolate_inline_closes_the_name(name):
    sentence = f"the seller's meter ({isolate_inline(name)}): no money moved"
    assert closed_before(sentence, "): no money moved"), repr(sentence)
    assert open_at_end(sentence) == []


@pytest.mark.parametrize("name", HOSTILE)
def test_isolate_text_closes_the_name(name):
    title = f"{isolate_text(name)} · Oak Street · peerwatt"
    assert closed_before(title, " · Oak Street"), repr(title)


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("wrap", [isolate_inline, isolate_text])
def test_the_name_stays_inside_its_isolate(name, wrap):
    """Our FSI is open from the first character of the name to our closing PDI: a PDI of the
    name's own (``A<PDI>B``) would close it and put ``B`` outside, among the sentence."""
    wrapped = wrap(name)
    assert wrapped[0] == "\u2068" and wrapped[-1] == "\u2069"
    for end in range(1, len(wrapped)):
        assert open_at_end(wrapped[:end])[:1] == ["I"], (repr(wrapped), end)
    assert open_at_end(wrapped) == []


def test_plain_names_stay_as_they_are():
    assert isolate_inline("Seller Sun") == "Seller Sun"
    assert isolate_inline("\u05e9\u05e8\u05d4") == "\u2068\u05e9\u05e8\u05d4\u2069"  # closed already


@pytest.fixture(scope="module")
def rli_seller(tmp_path_factory):
    base = tmp_path_factory.mktemp("rli")
    built = build_unsettled(base, names=("\u05e9\u05e8\u05d4\u2067", "Buyer Moon"))
    app = synced_app(built.data_dir, base / "inst", NEIGHBOUR_NAMES="names")
    s = app.extensions["peerwatt"]
    s.accounts.add_user("buyer", "buyer-pass-1234", role="household", meters=[built.buyer])
    client = app.test_client()
    assert login(client, "buyer", "buyer-pass-1234").status_code == 302
    return client


def test_the_delivery_note_reads_in_order_everywhere(rli_seller):
    tail = "): no money moved"
    (trade,) = rli_seller.get("/api/v1/trades").get_json()["trades"]
    note = trade["delivery_note"]
    assert "\u05e9\u05e8\u05d4" in note and closed_before(note, tail), repr(note)
    (row,) = csv.DictReader(io.StringIO(rli_seller.get("/api/v1/trades.csv").get_data(as_text=True)))
    assert closed_before(row["delivery_note"], tail), repr(row["delivery_note"])
    html = rli_seller.get("/trades").get_data(as_text=True)
    cell = re.search(r'badge bad">unsettled</span>(.*?)</td>', html, re.S).group(1)
    assert closed_before(cell, tail.replace("'", "&#39;")), repr(cell)
