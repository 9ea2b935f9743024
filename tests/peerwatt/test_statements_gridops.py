"""The simulated June of test_statements_month.py in a community that settles on its meters first and
re-settles on the grid operator's data (settlement_source = "meter_then_gridops"): statements are
issued on July 1 (all provisional: the grid operator's data is not in), the data for the whole month
arrives on July 3 with two corrections, exactly those two intervals are re-settled, and the
correction notes add up with the statements to the ledger's balances, to the micro-unit and cent.
The household that joined on the 12th and the one that left on the 20th are billed on the grid
operator's data for exactly their days, though the file covers the whole month for both."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from chain.store import Store
from market.billing import round_cents
from peerwatt.gridops import assign_meters, bodies, parse_csv, sign_bodies
from peerwatt.statements import issue_corrections, ledger_view, render_pdf, verify_document
from tests.peerwatt.test_statements_month import DAY, JOIN, JULY, JUNE, LEAVE, Month, build_month, day, issue

HEADER = "metering_point,interval_start,import_wh,export_wh,quality\n"
ARRIVES = JULY + 2 * DAY + 3600  # the grid operator's validated data for June, on July 3


def point(m: int) -> str:
    return f"AT00300000000000000000000000{m:05d}"


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("gridops-month"), "meter_then_gridops")


def june_file(month: Month, store: Store) -> tuple[str, dict[tuple[int, int], tuple[int, int]]]:
    """The grid operator's CSV for every meter and every day of June (also before the newcomer's
    enrolment and after the leaver's revocation): the meters' own deliveries, except that meter 0
    exported 500 Wh less on June 7 and meter 3 imported 2500 Wh less on June 15."""
    view = ledger_view(store)
    changed = {(0, day(7)): (0, -500), (3, day(15)): (-2500, 0)}
    lines = []
    deliveries = {}
    for m, party in enumerate([*month.c.meters, None]):
        meter = party.id if party else next(k for k, i in view.meters.items() if i.owner == month.newcomer.id)
        readings = view.readings[meter]
        for x in range(JUNE, JULY, DAY):
            if x not in readings or x - DAY not in readings:
                continue  # the simulated meter has no counters then: the operator's file has no row
            imp = readings[x][0] - readings[x - DAY][0] + changed.get((m, x), (0, 0))[0]
            exp = readings[x][1] - readings[x - DAY][1] + changed.get((m, x), (0, 0))[1]
            deliveries[(m, x)] = (imp, exp)
            when = datetime.fromtimestamp(x, UTC).isoformat()
            lines.append(f"{point(m)},{when},{imp},{exp},measured")
    return HEADER + "\n".join(lines) + "\n", deliveries


def test_grid_operator_data_resettles_two_days_and_the_notes_close_the_books(
    month: Month, tmp_path: Path
) -> None:
    c = month.c
    billing = tmp_path / "billing"
    store = Store.open(month.node, readonly=True)
    try:
        statements = {d["member"]: d for d in issue(store, month, billing)}
        text, deliveries = june_file(month, store)
        view = ledger_view(store)
    finally:
        store.close()
    # issued before the grid operator's data: every settled line may still change
    for doc in statements.values():
        assert doc["provisional"] == doc["net"]
        assert all(m["gridops_intervals"] == 0 for m in doc["meters"])
    pdf = PdfReader(io.BytesIO(render_pdf(statements[c.members[0].id])))
    printed = " ".join(" ".join(page.extract_text() for page in pdf.pages).split())
    assert "the grid operator's validated data for 0 intervals" in printed
    assert "the grid operator's validated data is due" in printed

    meters = {
        point(m): meter for m, meter in enumerate([*[p.id for p in c.meters], _newcomer_meter(month, view)])
    }
    by_meter = assign_meters(parse_csv(text, "june.csv", DAY), meters, set(view.meters), "june.csv")
    envs = sign_bodies(c.validators[0].key, c.community, bodies(by_meter, {}), 1000, ARRIVES)
    block = c.run_block(envs, ARRIVES)
    assert [r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"] == [
        "ok"
    ] * 5  # the leaver's too
    adjustments = [r for r in block.results if r["kind"] == "adjustment"]
    assert {a["interval"] for a in adjustments} == {day(7), day(15)}
    assert all(a["reason"] == "gridops_data" and a["source"] == "gridops" for a in adjustments)
    moved: dict[str, int] = {}
    for b in block.results:
        if b["kind"] == "balance":
            assert b["interval"] in (day(7), day(15))
            moved[b["account"]] = moved.get(b["account"], 0) + b["delta"]

    store = Store.open(month.node, readonly=True)
    try:
        notes = issue_corrections(store, billing, "2026-06", issued_at="2026-07-03")
        view = ledger_view(store)
        for doc in [*notes, *statements.values()]:  # each at its own height, before or after the data
            assert verify_document(store, doc) == []
    finally:
        store.close()
    assert moved[month.c.members[3].id] > 0  # meter 3 pays for less energy bought on June 15
    # since the statements: this block, and what settled or was corrected late on June 30
    moved = {}
    for b in view.balances:
        if b["height"] > month.issue_height and JUNE <= b["interval"] < JULY:
            moved[b["account"]] = moved.get(b["account"], 0) + b["delta"]
    # a note for exactly the members whose figures changed, each the correction of its statement
    assert {n["member"] for n in notes} == {a for a, d in moved.items() if d and a in view.members}
    for note in notes:
        original = statements[note["member"]]
        assert note["references"] == original["number"]
        assert note["total"] == moved[note["member"]]
        assert [code for code, delta in note["deltas"].items() if delta] != []
    # the statements and their notes add up to the ledger's balances, to the micro-unit and the cent
    ledger_balance: dict[str, int] = {}
    for b in view.balances:
        if JUNE <= b["interval"] < JULY:
            ledger_balance[b["account"]] = ledger_balance.get(b["account"], 0) + b["delta"]
    latest = {member: doc for member, doc in statements.items()}
    for note in notes:
        latest[note["member"]] = note["corrected"]
    for member, doc in latest.items():
        billed = statements[member]["total"] + sum(n["total"] for n in notes if n["member"] == member)
        assert billed == doc["total"] == ledger_balance.get(member, 0), member
        shown = statements[member]["shown"]["total"] + sum(
            n["shown_total"] for n in notes if n["member"] == member
        )
        assert shown == round_cents(ledger_balance.get(member, 0)), member
    # metered energy now from the grid operator, inside each meter's membership only
    newcomer = latest[month.newcomer.id]
    (meter,) = newcomer["meters"]
    days = [x for x in range(JUNE, JULY, DAY) if meter["billed_from"] <= x and x + DAY <= meter["billed_to"]]
    assert meter["billed_from"] == JOIN and len(days) == 19  # June 12 to 30
    assert meter["gridops_intervals"] == 19
    assert newcomer["energy"]["import_wh"] == sum(deliveries[(4, x)][0] for x in days)
    leaver = latest[c.members[2].id]
    (meter,) = leaver["meters"]
    assert meter["billed_to"] == LEAVE and meter["gridops_intervals"] == 19  # June 1 to 19
    assert leaver["energy"]["import_wh"] == sum(deliveries[(2, x)][0] for x in range(JUNE, day(20), DAY))
    assert all(
        s["status"] != "settled"
        for s in view.settlements
        if s["buyer"] == meter["meter"] and s["interval"] >= day(20)
    )
    assert leaver["final"]


def _newcomer_meter(month: Month, view) -> str:
    return next(k for k, i in view.meters.items() if i.owner == month.newcomer.id)
