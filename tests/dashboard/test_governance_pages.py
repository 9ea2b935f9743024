"""Found in a QA pass: /explorer/governance and /api/v1/governance read and sent every proposal
the ledger ever had: one member filing 32 short-lived proposals per block (the most
max_open_proposals lets it have open) made 32,000 expired proposals, 24 MB and 2 s per request,
for anyone, no login needed. Both are paged now, as the blocks are: open proposals first, then
the others newest first, at most ``limit`` (25 by default, at most 200) per page, with a cursor
(``next_before``) to the next page.

The ledger: 3 rounds of 32 proposals that expire at the next block, then 3 that stay open, one of
them with a vote."""

from __future__ import annotations

import re

import pytest

from market.app import MarketApp
from tests.dashboard.conftest import login, synced_app
from tests.support.localnet import make_community
from tests.support.market_ledger import PARAMS, T0

ROUNDS, PER_ROUND, OPEN = 3, 32, 3
TOTAL = ROUNDS * PER_ROUND + OPEN


@pytest.fixture(scope="module")
def gov(tmp_path_factory):
    base = tmp_path_factory.mktemp("gov-pages")
    c = make_community(
        validators=1,
        members=3,
        app="market",
        app_params=PARAMS,
        time=T0,
        chain_options={"max_open_proposals": 32},
    )
    c.open_ledgers(base, MarketApp)
    spam, victim = c.members[2], c.members[0].id
    t = T0 + 10
    for _ in range(ROUNDS):
        c.run_block(
            [
                spam.sign(
                    c.community,
                    "propose",
                    {
                        "action": "remove_member",
                        "args": {"member": victim},
                        "deadline": t + 30,
                        "note": f"spam {k}",
                    },
                    created=t,
                )
                for k in range(PER_ROUND)
            ],
            t,
        )
        t += 60
        c.run_block([], t)  # the round expires
        t += 60
    kept = [
        c.members[0].sign(
            c.community,
            "propose",
            {
                "action": "set_param",
                "args": {"name": "levies_per_kwh", "value": 5_000 + k},
                "deadline": t + 86400,
            },
            created=t,
        )
        for k in range(OPEN)
    ]
    c.run_block(kept, t)
    t += 60
    vote = c.members[1].sign(
        c.community, "vote", {"proposal": kept[0].tx_hash.hex(), "vote": "no"}, created=t
    )
    c.run_block([vote], t)
    for ledger in c.ledgers:
        ledger.close()
    app = synced_app(base / "validator-0", base / "inst")
    s = app.extensions["peerwatt"]
    s.accounts.add_user("house", "house-pass-1234", role="household", meters=[c.meters[1].id])
    return app, c, [p.tx_hash.hex() for p in kept]


def _all_pages(client, limit: int | None = None) -> list[list[dict]]:
    pages, before = [], None
    while True:
        query = {k: v for k, v in (("before", before), ("limit", limit)) if v is not None}
        response = client.get("/api/v1/governance", query_string=query)
        assert response.status_code == 200, response.get_json()
        data = response.get_json()
        pages.append(data["proposals"])
        before = data["next_before"]
        if before is None:
            return pages
        assert len(pages) <= TOTAL, "the cursor does not advance"


def test_the_api_is_paged_open_proposals_first(gov):
    app, _, kept = gov
    first = app.test_client().get("/api/v1/governance").get_json()
    assert len(first["proposals"]) == 25 and first["next_before"]
    assert [p["outcome"] for p in first["proposals"][:OPEN]] == ["open"] * OPEN
    assert [p["id"] for p in first["proposals"][:OPEN]] == list(reversed(kept))  # newest first
    assert all(p["outcome"] == "expired" for p in first["proposals"][OPEN:])
    assert first["open"] == OPEN
    (voted,) = [p for p in first["proposals"] if p["id"] == kept[0]]
    assert (voted["yes"], voted["no"]) == (1, 1)  # the proposer's yes, the vote's no


@pytest.mark.parametrize("limit", [None, 7, 200])
def test_paging_lists_every_proposal_once_in_order(gov, limit):
    app, _, kept = gov
    pages = _all_pages(app.test_client(), limit)
    per_page = limit or 25
    assert all(len(page) <= per_page for page in pages)
    seen = [p for page in pages for p in page]
    assert len(seen) == TOTAL and len({p["id"] for p in seen}) == TOTAL
    assert [p["outcome"] == "open" for p in seen] == [True] * OPEN + [False] * (TOTAL - OPEN)
    closed = [(p["height"], p["id"]) for p in seen[OPEN:]]
    assert [h for h, _ in closed] == sorted((h for h, _ in closed), reverse=True)


def test_a_logged_in_household_sees_who_voted_on_its_page(gov):
    app, c, kept = gov
    client = app.test_client()
    assert login(client, "house", "house-pass-1234").status_code == 302
    first = client.get("/api/v1/governance").get_json()["proposals"]
    (voted,) = [p for p in first if p["id"] == kept[0]]
    assert [v["vote"] for v in voted["votes"]] == ["no"] and voted["proposer"] == c.members[0].id
    assert voted["proposer_yes"] is True
    assert app.test_client().get("/api/v1/governance").get_json()["proposals"][0]["proposer"] is None


def test_the_page_is_paged_like_the_blocks(gov):
    app, _, kept = gov
    client = app.test_client()
    html = client.get("/explorer/governance").get_data(as_text=True)
    rows = re.findall(r"<tr><td data-label=\"Proposed\">", html)
    assert len(rows) == 25
    link = re.search(r'<a id="older-proposals" href="([^"]+)"', html)
    assert link, "no link to the next page"
    seen = 25
    while link:
        html = client.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)
        seen += len(re.findall(r"<tr><td data-label=\"Proposed\">", html))
        link = re.search(r'<a id="older-proposals" href="([^"]+)"', html)
    assert seen == TOTAL
    assert "spam 0" in html  # the oldest proposal is on the last page


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=\u0661",
        "before=x",
        "before=open-1",
        "before=closed-9007199254740992-0",
        "before=closed-1-" + "9" * 30,
        "before=" + "a" * 5000,
        "before=open-1-2%0D%0A",
    ],
)
def test_bad_cursors_and_limits_are_a_400(gov, query):
    app, _, _ = gov
    for path in ("/api/v1/governance", "/explorer/governance"):
        response = app.test_client().get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.status_code)
    assert "error" in app.test_client().get(f"/api/v1/governance?{query}").get_json()


def test_a_page_is_bounded(gov):
    """A page's size does not grow with the ledger's proposals: the first page of 99 proposals
    is about as large as 25 of them."""
    app, _, _ = gov
    one = len(app.test_client().get("/api/v1/governance?limit=1").data)
    page = len(app.test_client().get("/api/v1/governance").data)
    assert page < 40 * one
