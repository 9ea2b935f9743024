"""Found in a QA pass: the ``time`` an agent puts in its retained status (any enrolled agent can
publish anything on its own topic) took its household page down, and a date far ahead kept an
agent "online" for good. A time that is not a time is ignored; a date ahead of the arrival counts
at most MAX_SKEW_S (chain/messages.py) ahead."""

from __future__ import annotations

import json

from chain.messages import MAX_SKEW_S
from dashboard.agent_status import DEFAULT_HEARTBEAT_S, STALE_HEARTBEATS, AgentStatusBoard
from peerwatt.bus import Topics
from tests.dashboard.conftest import login, make_app

NOW = 1_000_000.0
STALE_AFTER_S = STALE_HEARTBEATS * DEFAULT_HEARTBEAT_S


def test_a_time_too_large_for_a_float_is_no_500(built, tmp_path):
    """10**400 (JSON reads it as an int) raised OverflowError in the age's subtraction."""
    board = AgentStatusBoard(built.community.community)
    app = make_app(built, tmp_path / "i", AGENT_STATUS=board, TESTING=False)
    meter = built.meters[0]
    board.handle(Topics.status(built.community.community, meter), b'{"time": 1' + b"0" * 400 + b"}")
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    assert c.get(f"/household/{meter}").status_code == 200
    api = c.get(f"/api/v1/households/{meter}")
    assert api.status_code == 200
    assert api.get_json()["agent"]["state"] == "online"  # judged by its arrival


def _board(community: str, now: list[float]) -> AgentStatusBoard:
    return AgentStatusBoard(community, clock=lambda: now[0])


def test_a_status_dated_a_year_ahead_turns_stale(built):
    """Judged by its own date, a status dated a year ahead stayed fresh for a year after the agent
    had stopped. Now it counts MAX_SKEW_S ahead of its arrival at most."""
    now = [NOW]
    community, meter = built.community.community, built.meters[0]
    board = _board(community, now)
    board.handle(Topics.status(community, meter), json.dumps({"time": int(NOW) + 365 * 86400}).encode())
    assert board.health(meter)["state"] == "online"
    now[0] += MAX_SKEW_S + STALE_AFTER_S - 1
    assert board.health(meter)["state"] == "online"
    now[0] += 2
    assert board.health(meter)["state"] == "stale"


def test_a_status_dated_a_little_ahead_is_judged_by_its_date(built):
    """Within the skew the ledger allows, the agent's date still counts (unchanged)."""
    now = [NOW]
    community, meter = built.community.community, built.meters[0]
    board = _board(community, now)
    board.handle(Topics.status(community, meter), json.dumps({"time": int(NOW) + 100}).encode())
    now[0] += 100 + STALE_AFTER_S - 1
    assert board.health(meter)["state"] == "online"
    now[0] += 2
    assert board.health(meter)["state"] == "stale"
