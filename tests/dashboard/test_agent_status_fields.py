"""The agent's status fields since 163cc4f and 99c384e on the household page: ``revoked`` as a state
of its own (not the generic not-enrolled advice), ``no_order`` as a plain line, ``broker_problem``
as a warning with what to do, and the totals' settled, pending and unsettled figures. Found in a
QA pass: the page showed none of them. The agent's words are untrusted (an agent publishes what
it likes under its topic): bounded, and escaped and isolated as the module's other words."""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path

import pytest

from dashboard.agent_status import AgentStatusBoard
from tests.dashboard.conftest import login, make_app
from tests.dashboard.ledger_fixture import INTERVAL_S, START

NOW = 1_000_000
TAKEN_OVER = (
    "another client is using this account's client id (agent-3affb7): the MQTT broker at "
    "broker.example:8883 dropped this client's connection within 10 s of accepting it 3 times in a "
    "row, as it does when two clients with one client id push each other off. A copy of this agent "
    "(a copied folder with the same certificate or account) running elsewhere? Stop the other one. "
    "Each lost connection is no longer logged while it lasts"
)


@pytest.fixture
def page(built, tmp_path):
    """(publish(**status fields), panel(), api()) for Sunny Villa's agent."""
    community = built.community.community
    board = AgentStatusBoard(community, clock=lambda: NOW)
    meter = built.meters[0]
    app = make_app(built, tmp_path / "instance", AGENT_STATUS=board)
    c = app.test_client()
    assert login(c, "villa").status_code == 302

    def publish(raw: bytes | None = None, **changes) -> None:
        status = {
            "state": "online",
            "meter": meter,
            "meter_ok": True,
            "fault": None,
            "last_reading": {"interval": START + 3600},
            "outbox": 0,
            "awaiting_confirmation": 0,
            "meter_read_errors": 0,
            "alarms": [],
            "enrolled": True,
            "revoked": None,
            "no_order": None,
            "broker_problem": None,
            "time": NOW,
            **changes,
        }
        board.handle(
            f"peerwatt/{community}/status/{meter}", raw if raw is not None else json.dumps(status).encode()
        )

    def panel() -> str:
        response = c.get(f"/household/{meter}")
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        return html.split('id="agent"', 1)[1].split("</section>", 1)[0]

    def api() -> dict:
        response = c.get(f"/api/v1/households/{meter}")
        assert response.status_code == 200
        return response.get_json()["agent"]

    return publish, panel, api


def _plain(html: str) -> str:
    """The panel's text as read: entities unescaped, the isolating <bdi> tags taken out."""
    return html_lib.unescape(re.sub(r"</?bdi[^>]*>", "", html))


def test_revoked_is_its_own_state_not_the_not_enrolled_advice(page):
    publish, panel, api = page
    why = (
        "meter 3affb7 is no longer enrolled, its key revoked (revoked): the household left the community "
        "or its meter was replaced; the ledger takes no order or reading of it any more"
    )
    publish(enrolled=False, revoked=why, no_order=f"no order for interval {START}: {why}")
    shown = _plain(panel())
    assert 'id="agent-state">online, meter revoked' in shown
    assert "agent-enrolment-warning" not in shown and "votes it in" not in shown
    assert why in shown
    assert "sudo systemctl disable --now peerwatt-agent" in shown and "Replacing the meter" in shown
    assert "agent-no-order" not in shown  # the revocation says why: no second line of it
    a = api()
    assert a["state"] == "revoked" and a["revoked"] == why
    assert a["enrolment_warning"] is None and a["warning"].startswith(
        "Your agent says your meter's key was revoked"
    )


def test_no_order_is_a_plain_line(page):
    publish, panel, api = page
    why = (
        "forecast surplus 21 Wh, of which sell_share 0.8 is 16 Wh to offer: below min_order_wh = 20 "
        "(agent.toml [market])"
    )
    interval = START + 40 * INTERVAL_S
    publish(no_order=f"no order for interval {interval}: {why}")
    shown = _plain(panel())
    line = shown.split('id="agent-no-order">', 1)[1].split("</dd>", 1)[0]
    assert line.startswith("no offer or bid for the interval of 2025-06-02 10:00") and why in line
    assert "agent-warning" not in shown and 'id="agent-state">online' in shown  # its own rule: no fault
    a = api()
    assert a["no_order"] == why and a["no_order_interval"] == interval and a["state"] == "online"
    # words that do not name an interval are shown as they are
    publish(no_order="no forecast yet")
    assert "no offer or bid: no forecast yet" in _plain(panel())
    assert api()["no_order_interval"] is None


def test_broker_problem_is_a_warning_with_what_to_do(page):
    publish, panel, api = page
    publish(broker_problem=TAKEN_OVER, broker_taken_over=True)
    shown = _plain(panel())
    box = shown.split('id="agent-broker-warning"', 1)[1].split("</div>", 1)[0]
    assert "another client is using this account's client id" in box
    assert "Stop the other one" in box and "another agent with this account" in box
    assert 'id="agent-state">online' in shown
    a = api()
    assert a["broker_problem"] == TAKEN_OVER and "copy" in a["broker_what_to_do"]
    publish(
        broker_problem="lost the connection to the MQTT broker at broker.example:8883 (timed out); "
        "reconnecting"
    )
    box = _plain(panel()).split('id="agent-broker-warning"', 1)[1].split("</div>", 1)[0]
    assert "timed out" in box and "reconnects by itself" in box
    publish()
    assert "agent-broker-warning" not in panel() and api()["broker_problem"] is None


@pytest.mark.parametrize("flag", [None, False, "true", 1])
def test_only_the_agents_flag_makes_a_take_over(page, flag):
    """The copy-of-this-agent advice follows the agent's ``broker_taken_over`` (true only when the
    broker said "Session taken over"), not the words: without the flag (an older agent, or the
    timing-only guess) or with anything but true, the words get the general advice."""
    publish, panel, api = page
    publish(broker_problem=TAKEN_OVER, **({} if flag is None else {"broker_taken_over": flag}))
    box = _plain(panel()).split('id="agent-broker-warning"', 1)[1].split("</div>", 1)[0]
    assert "another client is using this account's client id" in box  # its own words, shown
    assert "reconnects by itself" in box and "copy" not in api()["broker_what_to_do"]


def test_totals_settled_pending_and_unsettled(page):
    publish, panel, api = page
    totals = {
        "sold_wh": 1200,
        "bought_wh": 32,
        "earnings": 90_000,
        "sold_pending_wh": 150,
        "bought_pending_wh": 72,
        "sold_unsettled_wh": 0,
        "bought_unsettled_wh": 40,
        "unsettled_flags": ["missing_reading"],
    }
    publish(totals=totals)
    shown = _plain(panel())
    line = shown.split('id="agent-totals">', 1)[1].split("</dd>", 1)[0]
    assert "settled: sold 1.20 kWh, bought 32 Wh" in line
    assert "traded, not settled yet: sold 150 Wh, bought 72 Wh" in line
    assert "left unsettled by the ledger (missing_reading): bought 40 Wh" in line
    a = api()
    assert a["totals"]["bought_pending_wh"] == 72 and a["totals"]["unsettled_flags"] == ["missing_reading"]
    # figures that are not figures are left out, never a 500
    publish(totals={"sold_wh": "lots", "bought_wh": -5, "sold_pending_wh": 10**400, "unsettled_flags": "x"})
    assert "agent-totals" in panel()
    a = api()["totals"]
    assert a["sold_wh"] is None and a["bought_wh"] is None and a["sold_pending_wh"] is None
    assert a["unsettled_flags"] == []
    publish(totals=[1, 2])
    assert api()["totals"] is None and "agent-totals" not in panel()


def test_totals_of_an_older_agent_are_not_called_settled(page):
    """An agent from before 163cc4f (households upgrade at different times) sends sold_wh,
    bought_wh and earnings counted as traded (settled where settled, else as traded), without the
    pending and unsettled figures: shown as that agent counts them, never as "settled", and no
    line of figures it did not send (found in a QA pass: "settled: sold 0 Wh, bought 104 Wh;
    traded, not settled yet: sold \u2013, bought \u2013; left unsettled ...: sold \u2013, bought \u2013")."""
    publish, panel, api = page

    def line() -> str:
        return _plain(panel()).split('id="agent-totals">', 1)[1].split("</dd>", 1)[0]

    publish(totals={"sold_wh": 0, "bought_wh": 104, "earnings": -30000})
    shown = line()
    assert "sold 0 Wh, bought 104 Wh, as an older agent counts them: traded, settled where settled" in shown
    assert not shown.startswith("settled") and "settled:" not in shown and "yet:" not in shown
    assert "ledger:" not in shown and "\u2013" not in shown
    a = api()
    assert a["totals"]["older_agent"] is True and a["totals"]["bought_wh"] == 104
    assert a["totals_words"].startswith("sold 0 Wh, bought 104 Wh, as an older agent counts them")
    # partial totals of an older agent: only the figures it sent
    publish(totals={"bought_wh": 104})
    shown = line()
    assert shown.startswith("bought 104 Wh, as an older agent counts them") and "sold" not in shown
    # a current agent's partial totals: no line, no "\u2013", for a figure it did not send
    publish(totals={"sold_wh": 32, "bought_pending_wh": 72, "sold_unsettled_wh": None})
    shown = line()
    assert api()["totals"]["older_agent"] is False
    assert shown.startswith("settled: sold 32 Wh; traded, not settled yet: bought 72 Wh")
    assert "left unsettled" not in shown and "\u2013" not in shown and "bought \u2013" not in shown
    publish(totals={"unsettled_flags": "abc", "sold_unsettled_wh": 5})
    shown = line()
    assert shown.startswith("left unsettled by the ledger: sold 5 Wh, no money moved")
    assert "settled:" not in shown and "\u2013" not in shown and "not settled yet" not in shown
    # nothing readable at all: said so, not a row of dashes
    publish(totals={})
    shown = line()
    assert "\u2013" not in shown and "settled" not in shown and "no figure" in shown


HOSTILE = "<script>alert(1)</script>\u202eevil\u0007" + "x" * 100_000


@pytest.mark.parametrize("field", ["revoked", "no_order", "broker_problem"])
def test_the_agents_words_are_bounded_escaped_and_isolated(page, field):
    from dashboard.agent_status import MAX_WORDS_CHARS

    publish, panel, api = page
    # within the status's size bound, words longer than a line are cut
    words = "<b>bold</b>\u202egnol" + "y" * 30_000
    publish(**{field: words})
    html = panel()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "\u202e" not in html and "\\u202e" in html  # shown, not obeyed
    value = api()[field]
    assert len(value) <= MAX_WORDS_CHARS + 4 and "…" in value[-4:]
    assert "y" * (MAX_WORDS_CHARS + 1) not in html
    # not a string: shown as the JSON it is, bounded too
    publish(**{field: {"a": ["<i>"] * 5000}})
    html = panel()
    assert "<i>" not in html
    assert api()[field] is None or len(api()[field]) <= MAX_WORDS_CHARS + 4
    # a status past its size bound is not taken at all (MAX_STATUS_BYTES)
    publish(raw=json.dumps({"state": "online", field: HOSTILE, "time": NOW}).encode())
    assert api()[field] is None or "alert" not in api()[field]


@pytest.mark.parametrize(
    "changes",
    [
        {"meter_ok": False, "fault": None},
        {"serial_mismatch": None},
        {"readings_withheld": None},
        {"state_error": None},
    ],
    ids=["fault", "serial_mismatch", "readings_withheld", "state_error"],
)
def test_the_agents_fault_words_are_bounded_like_its_other_words(page, changes):
    """The older warning fields were shown whole (``str(...)``): 30,000 characters of a fault in the
    warning, a dict as Python's repr. Now as the other words (``_words``): cut, JSON for non-text."""
    from dashboard.agent_status import MAX_WORDS_CHARS

    publish, panel, api = page
    field = [k for k in changes if k != "meter_ok"][0]
    publish(**{**changes, field: "<b>bold</b>" + "y" * 30_000})
    html, warning = panel(), api()["warning"]
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "y" * (MAX_WORDS_CHARS + 1) not in warning and "…" in warning
    publish(**{**changes, field: {"errno": 28, "why": "No space left"}})
    assert '{"errno": 28, "why": "No space left"}' in api()["warning"]


def test_what_to_do_names_troubleshooting_entries_that_exist():
    from dashboard.agent_status import WHAT_TO_DO_BROKER_TAKEN_OVER, WHAT_TO_DO_REVOKED

    doc = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    section = doc.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    entries = [e.lower() for e in re.findall(r"^- \*\*([^*]+)\*\*", section, re.M)]
    for text in (WHAT_TO_DO_REVOKED, WHAT_TO_DO_BROKER_TAKEN_OVER):
        assert 'docs/agent.md, "Troubleshooting"' in text
        for problem in text.rsplit("(", 1)[1].rstrip(").").split(", "):
            assert any(e.startswith(problem.lower()) for e in entries), (problem, entries)
