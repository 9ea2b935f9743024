"""Found in a QA pass: in ``names`` mode two members named "Bob", "Bob<U+200B>" and "Вob" (a
Cyrillic VE) looked the same to other households, in the trades, the per-neighbour summary, the
CSV, governance and the block pages, and households never see key ids. Names that are the same
after normalisation (NFKC, case folded, default-ignorable characters and marks removed, spaces
collapsed, letters of other scripts that look Latin read as Latin) now get a distinguishing
suffix, the start of their key id; so does a name mixing scripts, and one that reads like a
community account's. Zero-width characters are shown as ``\\u200b`` like the other controls."""

from __future__ import annotations

import csv
import io
import unicodedata

import pytest

from dashboard.directory import COMMUNITY_ACCOUNTS, Directory
from dashboard.text import isolate, isolate_text, visible_controls
from tests.dashboard.conftest import login, synced_app
from tests.dashboard.ledger_fixture import build_unsettled

LOOKALIKES = ("Bob", "Bob", "Bob\u200b", "\u0412ob", "B\u043eb", "BOB", "\uff22ob", "Bo\u0301b ", "B\u00adob")


def skeleton(text: str) -> str:
    """dashboard.directory.skeleton (imported here: the old code had none)."""
    from dashboard.directory import skeleton as implemented

    return implemented(text)


def _id(n: int) -> str:
    return f"{n:02x}" * 16


def _directory(
    names: dict[str, str], meters_of: dict[str, list[str]] | None = None, validators=None
) -> Directory:
    """members {id: name}, each with one meter (id "m" + member id[1:]) unless ``meters_of``."""
    members = {m: {"name": n} for m, n in names.items()}
    meters = {}
    for member in names:
        for meter in (meters_of or {}).get(member, ["e" + member[1:]]):
            meters[meter] = {"owner": member}
    return Directory(meters, members, validators or {})


def _plain(text: str) -> str:
    """What a reader sees, roughly: NFKC, case folded, invisible characters and marks dropped."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(
        ch for ch in text if unicodedata.category(ch) not in ("Cf", "Mn") and ch not in "\u00ad"
    ).strip()


def test_lookalike_members_get_distinct_labels():
    names = {_id(i + 1): n for i, n in enumerate(LOOKALIKES)} | {_id(40): "Carol", _id(41): "Dave"}
    d = _directory(names)
    labels = {m: d.account_label(m) for m in names}
    for member, name in names.items():
        if name in ("Carol", "Dave"):
            assert labels[member] == name  # no lookalike: as written
        else:
            assert labels[member] == f"{name} ({member[:6]})", labels[member]
            assert d.label("e" + member[1:]) == labels[member]  # its meter reads the same
    seen = [_plain(label).replace("\u0432", "b").replace("\u043e", "o") for label in labels.values()]
    assert len(set(seen)) == len(seen), seen
    assert len({skeleton(label) for label in labels.values()}) == len(labels)


def test_skeleton_reads_lookalikes_as_one():
    assert len({skeleton(n) for n in LOOKALIKES}) == 1
    assert skeleton("\u03a1\u0430\u0443\u0440\u0430l") == skeleton(
        "Paypal"
    )  # Greek RHO, Cyrillic a, u, er, a
    assert skeleton("Bob") != skeleton("Rob") and skeleton("Иван") != skeleton("Ivan")


def test_a_member_named_like_a_community_account_gets_a_suffix():
    d = _directory({_id(1): "Grid Fees (community account)", _id(2): "Levies\u200b (community account)"})
    assert d.account_label("grid_fees") == COMMUNITY_ACCOUNTS["grid_fees"]
    assert d.account_label(_id(1)) == f"Grid Fees (community account) ({_id(1)[:6]})"
    assert d.account_label(_id(2)).endswith(f"({_id(2)[:6]})")


def test_a_name_that_mixes_scripts_gets_a_suffix_alone():
    """A mixed-script name (Latin and Cyrillic letters in one name) is marked even when no other
    name looks like it yet: the confusable table cannot know every lookalike. One script, or
    Japanese (Han, Hiragana, Katakana), is written as is."""
    d = _directory({_id(1): "\u0412ob", _id(2): "Иван", _id(3): "山田たろう", _id(4): "Zoë Lefèvre"})
    assert d.account_label(_id(1)) == f"\u0412ob ({_id(1)[:6]})"
    assert d.account_label(_id(2)) == "Иван"
    assert d.account_label(_id(3)) == "山田たろう"
    assert d.account_label(_id(4)) == "Zoë Lefèvre"


def test_a_suffix_cannot_be_forged():
    """A member names itself as another's suffixed label would read: the suffixes grow until
    every label differs."""
    victim, twin = _id(0x8E), _id(0x11)
    forged = f"Bob ({victim[:6]})"
    d = _directory({victim: "Bob", twin: "Bob", _id(3): forged})
    labels = [d.account_label(m) for m in (victim, twin, _id(3))]
    assert len({skeleton(label) for label in labels}) == 3, labels
    assert d.account_label(victim) != forged


def test_one_household_one_label_and_its_meters():
    """A member with two meters: each meter's label is the member's name and the meter's, and the
    member's suffix at the end."""
    bob1, bob2 = _id(1), _id(2)
    d = _directory({bob1: "Bob", bob2: "BOB"}, {bob1: ["a" * 32, "b" * 32], bob2: ["c" * 32]})
    d.meters["a" * 32]["name"], d.meters["b" * 32]["name"] = "roof", "garage"
    d = Directory(d.meters, d.members, {})
    assert d.label("a" * 32) == f"Bob (roof) ({bob1[:6]})"
    assert d.label("b" * 32) == f"Bob (garage) ({bob1[:6]})"
    assert d.account_label(bob1) == f"Bob ({bob1[:6]})"
    assert d.label("c" * 32) == d.account_label(bob2) == f"BOB ({bob2[:6]})"


def test_a_mixed_script_name_leaves_the_name_it_copies_alone():
    """ "Bоb" (a Cyrillic o) is suffixed for mixing scripts, and then no longer looks like "Bob",
    which stays as written."""
    d = _directory({_id(1): "Bob", _id(2): "B\u043eb"})
    assert d.account_label(_id(1)) == "Bob"
    assert d.account_label(_id(2)) == f"B\u043eb ({_id(2)[:6]})"


def test_validators_and_members_share_the_names():
    d = _directory({_id(1): "Node One"}, validators={_id(9): {"name": "node one"}})
    assert d.account_label(_id(1)) != d.account_label(_id(9))
    assert skeleton(d.account_label(_id(1))) != skeleton(d.account_label(_id(9)))


def test_pseudonyms_keep_the_own_name_suffixed():
    d = _directory({_id(1): "Bob", _id(2): "Bob"})
    view = d.seen_by({"e" + _id(1)[1:]})
    assert view.label("e" + _id(1)[1:]) == f"Bob ({_id(1)[:6]})"
    assert view.label("e" + _id(2)[1:]).startswith("Neighbour ")


@pytest.mark.parametrize("char", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"])
def test_zero_width_characters_are_shown(char):
    escaped = f"\\u{ord(char):04x}"
    assert visible_controls(f"Bob{char}") == f"Bob{escaped}"
    assert escaped in str(isolate(f"Bob{char}")) and escaped in isolate_text(f"Bob{char}")


@pytest.fixture(scope="module")
def two_bobs(tmp_path_factory):
    """Two members, "Bob" (the seller) and "Bob<U+200B>" (the buyer), one unsettled trade."""
    base = tmp_path_factory.mktemp("two-bobs")
    built = build_unsettled(base, names=("Bob", "Bob\u200b"))
    app = synced_app(built.data_dir, base / "inst", NEIGHBOUR_NAMES="names")
    s = app.extensions["peerwatt"]
    s.accounts.add_user("buyer", "buyer-pass-1234", role="household", meters=[built.buyer])
    s.accounts.add_user("admin", "admin-pass-1234", role="admin")
    return app, built


def test_the_buyer_reads_the_seller_apart_from_itself(two_bobs):
    app, built = two_bobs
    members = app.extensions["peerwatt"].ledger.members()
    seller_member = app.extensions["peerwatt"].ledger.meters()[built.seller]["owner"]
    buyer_member = app.extensions["peerwatt"].ledger.meters()[built.buyer]["owner"]
    assert members[seller_member]["name"] == "Bob"
    c = app.test_client()
    assert login(c, "buyer", "buyer-pass-1234").status_code == 302
    (trade,) = c.get("/api/v1/trades").get_json()["trades"]
    assert trade["seller_name"] == f"Bob ({seller_member[:6]})"
    assert trade["buyer_name"] == f"Bob\u200b ({buyer_member[:6]})"
    assert f"(Bob ({seller_member[:6]}))" in trade["delivery_note"]
    (row,) = csv.DictReader(io.StringIO(c.get("/api/v1/trades.csv").get_data(as_text=True)))
    assert row["seller"] == f"Bob ({seller_member[:6]})"
    html = c.get("/trades").get_data(as_text=True)
    assert f"<bdi>Bob ({seller_member[:6]})</bdi>" in html
    assert f"Bob\\u200b ({buyer_member[:6]})" in html  # its own name, the zero-width space shown
    admin = app.test_client()
    assert login(admin, "admin", "admin-pass-1234").status_code == 302
    listed = {h["name"] for h in admin.get("/api/v1/households").get_json()["households"]}
    assert listed == {f"Bob ({seller_member[:6]})", f"Bob\u200b ({buyer_member[:6]})"}
