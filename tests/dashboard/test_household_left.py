"""A household that left the community (docs/quickstart.md, "Leaving"): its meter revoked and its
member removed by votes, its agent stopped as the docs say.

Found in a QA pass: logged in as the departed household, its page said "Your agent is offline ...
start it with `sudo systemctl restart peerwatt-agent`", the agent the quickstart had told it to
stop, and nothing said that the household had left. And a trade left unsettled because the
seller's meter was revoked before its reading was booked read "... until a late or corrected
reading settles it", which cannot happen: the ledger refuses a revoked meter's readings, and only
the grid operator's data can still settle it (docs/market.md)."""

from __future__ import annotations

import csv
import html as html_lib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from chain.engine import Ledger
from chain.genesis import Genesis
from dashboard.agent_status import AgentStatusBoard
from dashboard.timeutil import fmt_time, zone
from market.app import MarketApp
from tests.dashboard.conftest import login, synced_app
from tests.dashboard.ledger_fixture import APP_PARAMS, GATE_S, INTERVAL_S, START, TZ, _run_block
from tests.support.localnet import make_community

PASSWORD = "leaving-pass-1234"


@dataclass
class LeftLedger:
    data_dir: Path
    seller: str  # the household that left (its meter revoked, if revoke)
    buyer: str
    seller_member: str
    interval: int  # the traded interval, left unsettled
    revoked_height: int | None
    revoked_time: int | None
    removed_height: int | None
    removed_time: int | None


def build_left(
    base_dir: Path, *, revoke: bool = True, remove: bool = True, gridops: bool = False
) -> LeftLedger:
    """Two households trade in one interval; after its gate closed and before the seller's reading
    of it, the validators revoke the seller's meter (``revoke``) and the members remove the seller
    (``remove``); the seller's reading is then refused (revoked), so the trade stays unsettled
    (missing_reading). ``gridops``: the community settles on its meters, then on the grid
    operator's data (``meter_then_gridops``)."""
    c = make_community(
        community="leaving-lane",
        time=START - 3600,
        validators=3,
        members=2,
        app="market",
        app_params=dict(APP_PARAMS),
        capacity_w=10_000,
    )
    doc = c.genesis.doc
    doc["community"]["timezone"] = TZ
    for member, name in zip(c.members, ("Seller Sun", "Buyer Moon"), strict=True):
        doc["members"][member.id]["name"] = name
    if gridops:
        doc["app"]["settlement_source"] = "meter_then_gridops"
        doc["app"]["gridops_operators"] = [c.validators[0].id]
    c.genesis = Genesis(doc)
    serials = {kid: meter["serial"] for kid, meter in doc["meters"].items()}
    ledger = Ledger.create(Path(base_dir) / "validator-0", c.genesis, MarketApp())
    seller, buyer = c.meters
    interval = START + 4 * INTERVAL_S

    def reading(m, at: int, imp: int, exp: int, t: int):
        body = {"interval": at, "import_wh": imp, "export_wh": exp, "serial": serials[m.id], "profile": "sim"}
        return m.sign(c.community, "reading", body, created=t)

    t = interval - 2 * INTERVAL_S
    _run_block(
        ledger,
        c,
        [
            seller.sign(
                c.community,
                "order",
                {"side": "sell", "interval": interval, "energy_wh": 300, "limit_price": 100_000},
                created=t,
            ),
            buyer.sign(
                c.community,
                "order",
                {"side": "buy", "interval": interval, "energy_wh": 200, "limit_price": 200_000},
                created=t,
            ),
        ],
        t,
    )
    t = interval - GATE_S  # gate closure: the interval clears
    _run_block(
        ledger,
        c,
        [
            reading(seller, interval - INTERVAL_S, 1000, 5000, t),
            reading(buyer, interval - INTERVAL_S, 7000, 100, t),
        ],
        t,
    )
    t = interval + 60  # the votes: the household leaves while its last trade awaits its reading
    votes = []
    if revoke:
        proposal = c.validators[0].sign(
            c.community,
            "propose",
            {"action": "revoke_meter", "args": {"meter": seller.id}, "deadline": t + 3600},
            created=t,
        )
        votes += [proposal] + [
            v.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
            for v in c.validators[1:]
        ]
    if remove:
        proposal = c.members[1].sign(
            c.community,
            "propose",
            {"action": "remove_member", "args": {"member": c.members[0].id}, "deadline": t + 3600},
            created=t,
        )
        votes += [
            proposal,
            c.members[0].sign(
                c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t
            ),
        ]
    _run_block(ledger, c, votes, t)
    vote_height, vote_time = ledger.height, t
    chain = ledger.chain_state
    assert (seller.id in chain["revoked"]) == revoke
    assert (c.members[0].id not in chain["members"]) == remove
    t = interval + INTERVAL_S - GATE_S  # the seller's reading is refused: its key is revoked
    _run_block(
        ledger, c, [reading(buyer, interval, 7250, 100, t), reading(seller, interval, 1000, 5300, t)], t
    )
    for k in range(2, 6):  # past the settlement deadline (settle_after_intervals = 2)
        t = interval + k * INTERVAL_S
        _run_block(ledger, c, [], t)
    return LeftLedger(
        data_dir=Path(base_dir) / "validator-0",
        seller=seller.id,
        buyer=buyer.id,
        seller_member=c.members[0].id,
        interval=interval,
        revoked_height=vote_height if revoke else None,
        revoked_time=vote_time if revoke else None,
        removed_height=vote_height if remove else None,
        removed_time=vote_time if remove else None,
    )


@pytest.fixture(scope="module")
def left(tmp_path_factory) -> LeftLedger:
    return build_left(tmp_path_factory.mktemp("left"))


def _app(built: LeftLedger, instance: Path, **config):
    app = synced_app(built.data_dir, instance, **config)
    accounts = app.extensions["peerwatt"].accounts
    accounts.add_user("seller", PASSWORD, role="household", meters=[built.seller])
    accounts.add_user("buyer", PASSWORD, role="household", meters=[built.buyer])
    return app


def _client(app, name: str):
    c = app.test_client()
    assert login(c, name, PASSWORD).status_code == 302
    return c


def _text(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200
    return html_lib.unescape(response.get_data(as_text=True))


def _when(ts: int) -> str:
    return fmt_time(ts, zone(TZ))


def test_the_page_of_a_household_that_left_says_so_not_restart_your_agent(left, tmp_path):
    """The agent's last will 'offline' (it was stopped, as the quickstart says): no offline warning,
    no restart advice; the page says the meter left at block N on its date, and the history stays."""
    board = AgentStatusBoard("leaving-lane", clock=lambda: left.revoked_time + 7200)
    board.handle(f"peerwatt/leaving-lane/status/{left.seller}", b"offline")
    app = _app(left, tmp_path / "instance", AGENT_STATUS=board)
    c = _client(app, "seller")
    page = _text(c, f"/household/{left.seller}")
    words = f"this meter left the community at block {left.revoked_height} on {_when(left.revoked_time)}"
    assert words in page.lower()
    assert "its agent is no longer needed" in page
    assert "Your agent is offline" not in page and "systemctl restart" not in page
    panel = page.split('id="agent"', 1)[1].split("</section>", 1)[0]
    assert 'id="agent-state">left the community' in panel
    assert "agent-warning" not in panel
    # the membership ended too, and the page says when
    assert f"block {left.removed_height}" in page and "membership" in page
    # its history stays viewable: the trade of its last interval, and its way back
    assert 'id="household-trades"' in page and "unsettled" in page
    api = c.get(f"/api/v1/households/{left.seller}").get_json()
    assert api["left"]["meter_revoked"] == {"height": left.revoked_height, "time": left.revoked_time}
    assert api["left"]["member_removed"] == {"height": left.removed_height, "time": left.removed_time}
    assert "no longer needed" in api["left"]["note"] and "systemctl restart" not in api["left"]["note"]
    agent = api["agent"]
    assert agent["state"] == "left" and agent["warning"] is None and agent["what_to_do"] is None


def test_a_left_household_without_a_broker_still_reads_that_it_left(left, tmp_path):
    app = _app(left, tmp_path / "instance")
    c = _client(app, "seller")
    page = _text(c, f"/household/{left.seller}")
    assert f"block {left.revoked_height}" in page and "its agent is no longer needed" in page
    assert c.get(f"/api/v1/households/{left.seller}").get_json()["agent"]["state"] == "left"
    # the other household did not leave: nothing of the kind on its page
    other = _client(app, "buyer")
    assert "left the community" not in _text(other, f"/household/{left.buyer}")
    assert other.get(f"/api/v1/households/{left.buyer}").get_json()["left"] is None


def test_an_agent_still_running_after_the_revocation_is_told_it_may_stop(left, tmp_path):
    board = AgentStatusBoard("leaving-lane", clock=lambda: left.revoked_time + 60)
    status = {
        "state": "online",
        "meter_ok": True,
        "enrolled": False,
        "time": left.revoked_time + 60,
        "revoked": f"meter {left.seller} is no longer enrolled, its key revoked (revoked): ...",
    }
    board.handle(f"peerwatt/leaving-lane/status/{left.seller}", json.dumps(status).encode())
    app = _app(left, tmp_path / "instance", AGENT_STATUS=board)
    c = _client(app, "seller")
    page = _text(c, f"/household/{left.seller}")
    assert "its agent is no longer needed" in page
    assert "sudo systemctl disable --now peerwatt-agent" in page
    assert "votes it in" not in page  # not the generic not-enrolled advice
    assert c.get(f"/api/v1/households/{left.seller}").get_json()["agent"]["enrolment_warning"] is None


def test_a_member_removed_with_its_meter_still_enrolled_is_told_the_meter_still_trades(tmp_path):
    built = build_left(tmp_path / "ledger", revoke=False, remove=True)
    board = AgentStatusBoard("leaving-lane", clock=lambda: built.removed_time + 7200)
    board.handle(f"peerwatt/leaving-lane/status/{built.seller}", b"offline")
    app = _app(built, tmp_path / "instance", AGENT_STATUS=board)
    c = _client(app, "seller")
    page = _text(c, f"/household/{built.seller}")
    assert f"membership ended at block {built.removed_height}" in page
    assert "still enrolled" in page
    api = c.get(f"/api/v1/households/{built.seller}").get_json()
    assert (
        api["left"]["meter_revoked"] is None
        and api["left"]["member_removed"]["height"] == built.removed_height
    )
    assert api["agent"]["state"] == "offline"  # its meter still trades: its agent is still needed


def _notes(client, path: str) -> list[str]:
    return [
        row["delivery_note"] for row in client.get(path).get_json()["trades"] if row["status"] == "unsettled"
    ]


def test_an_unsettled_trade_of_a_revoked_meter_does_not_promise_a_late_reading(left, tmp_path):
    app = _app(left, tmp_path / "instance")
    buyer = _client(app, "buyer")
    (note,) = _notes(buyer, f"/api/v1/trades?household={left.buyer}")
    assert "the seller's meter (" in note and "a meter reading is missing" in note
    assert "late or corrected reading" not in note
    assert f"revoked at block {left.revoked_height}" in note
    assert "refuses its readings" in note and "stays unsettled" in note
    page = _text(buyer, f"/household/{left.buyer}")
    assert f"revoked at block {left.revoked_height}" in page and "late or corrected reading" not in page
    rows = list(
        csv.DictReader(
            io.StringIO(buyer.get(f"/api/v1/trades.csv?household={left.buyer}").get_data(as_text=True))
        )
    )
    assert rows and all(
        f"revoked at block {left.revoked_height}" in r["delivery_note"]
        for r in rows
        if r["status"] == "unsettled"
    )
    seller = _client(app, "seller")
    (own,) = _notes(seller, f"/api/v1/trades?household={left.seller}")
    assert own.startswith("unsettled: a meter reading is missing from your meter")
    assert f"your meter was revoked at block {left.revoked_height}" in own


def test_where_the_grid_operators_data_settles_the_note_says_only_it_can(tmp_path):
    built = build_left(tmp_path / "ledger", gridops=True)
    app = _app(built, tmp_path / "instance")
    (note,) = _notes(_client(app, "buyer"), f"/api/v1/trades?household={built.buyer}")
    assert "late or corrected reading" not in note
    assert f"revoked at block {built.revoked_height}" in note
    assert "only the grid operator's data" in note


def test_a_late_reading_of_a_meter_still_enrolled_is_still_promised(tmp_path):
    """Control: a trade unsettled while both meters are enrolled keeps its old note."""
    from tests.dashboard.ledger_fixture import build_unsettled

    built = build_unsettled(tmp_path / "ledger")
    app = synced_app(built.data_dir, tmp_path / "instance")
    app.extensions["peerwatt"].accounts.add_user("buyer", PASSWORD, role="household", meters=[built.buyer])
    (note,) = _notes(_client(app, "buyer"), f"/api/v1/trades?household={built.buyer}")
    assert "until a late or corrected reading settles it" in note and "revoked" not in note


def test_a_trade_left_without_the_grid_operator_s_data_promises_no_late_reading():
    """`missing_gridops` is flagged once the interval's gridops_window_s has passed without the
    grid operator's data, and data older than that window is refused (`gridops_too_old`,
    docs/market.md): nothing can settle the trade any more, so the note must not promise a late
    reading (it did, like a revoked meter's did before)."""
    from dashboard.trades import unsettled_note

    row = {"flagged_meter": "b" * 32, "side": "buy", "seller": "a" * 32, "buyer": "b" * 32,
           "seller_name": "Seller", "buyer_name": "Buyer", "flag": "missing_gridops",
           "source": "gridops"}  # fmt: skip
    note = unsettled_note(row, {})
    assert note.startswith("unsettled: the grid operator's data for your meter never arrived"), note
    assert "late or corrected reading" not in note and "gridops_window_s" in note, note
    assert "stays unsettled" in note, note
