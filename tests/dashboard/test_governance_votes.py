"""The governance page lists the yes that proposing counts as (found in a QA pass: logged in, a
proposal read "passed 1 yes, 0 no" above a Votes column of "–": the proposer's counted yes was not
listed)."""

from __future__ import annotations

import html as html_lib
import re


def listed_yes(proposal: dict) -> int:
    """The yes the page lists: the proposer's (by proposing) and the yes votes the ledger took."""
    votes = sum(1 for v in proposal["votes"] if v["vote"] == "yes" and v["status"] == "ok")
    return votes + proposal["proposer_yes"]


def test_every_counted_yes_is_listed(as_admin, as_flat, client):
    for viewer in (as_admin, as_flat):
        proposals = viewer.get("/api/v1/governance").get_json()["proposals"]
        counted = [p for p in proposals if p["outcome"] in ("open", "passed", "rejected")]
        assert {p["outcome"] for p in counted} == {"open", "passed"}
        for p in counted:
            assert p["proposer_yes"] is True and listed_yes(p) == p["yes"], p
    # visitors see no votes, nor who proposed, as before
    for p in client.get("/api/v1/governance").get_json()["proposals"]:
        assert p["votes"] == [] and p["proposer"] is None and p["proposer_yes"] is False


def test_the_page_names_the_proposers_yes(as_admin):
    page = as_admin.get("/explorer/governance").get_data(as_text=True)
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)[1:]
    checked = 0
    for row in rows:
        cells = re.findall(r'<td data-label="(\w+)">(.*?)</td>', row, re.S)
        text = {
            label: re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", "", cell)))
            for label, cell in cells
        }
        if "1 yes, 0 no" in text["Outcome"] or "4 yes, 0 no" in text["Outcome"]:
            assert text["Votes"] != "–", text
            proposer = re.fullmatch(r"block \d+\s*by (.+)", text["Proposed"].strip()).group(1)
            assert text["Votes"].startswith(f"{proposer}: yes (by proposing)"), text
            checked += 1
    assert checked == 3  # the passed proposal and the two open ones


def test_a_proposers_yes_that_did_not_count_is_not_listed():
    """A member may propose a validators' action (enroll_meter) but not vote on it: its proposal
    counts no yes, and none is listed."""
    from dashboard.explorer import _proposers_yes

    open_one = {"proposer": "m1", "status": "ok", "outcome": "open", "yes": 0, "no": 0, "votes": []}
    _proposers_yes(open_one, voters={"v1": {}, "v2": {}})
    assert open_one["proposer_yes"] is False
    _proposers_yes(open_one, voters={"m1": {}, "m2": {}})
    assert open_one["proposer_yes"] is True
    vote = {"voter": "v1", "vote": "yes", "status": "ok", "reason": None, "height": 5}
    decided = {"proposer": "m1", "status": "ok", "outcome": "passed", "yes": 1, "no": 0, "votes": [vote]}
    _proposers_yes(decided, voters={"m1": {}})  # the count says it did not count: 1 yes, sent by v1
    assert decided["proposer_yes"] is False
    counted = dict(decided, yes=2)
    _proposers_yes(counted, voters={})  # and here it did: 2 yes, one of them sent
    assert counted["proposer_yes"] is True
    refused = {"proposer": "m1", "status": "rejected", "outcome": None, "yes": None, "no": None, "votes": []}
    _proposers_yes(refused, voters={"m1": {}})
    assert refused["proposer_yes"] is False
