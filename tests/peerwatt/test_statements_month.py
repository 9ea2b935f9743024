"""A simulated June on a real market ledger (one validator, daily intervals to keep it fast): a
household joins on the 12th, another leaves on the 20th, a reading is corrected after the
statements were issued. Statements are issued, re-derived from the chain and compared figure by
figure, rendered to PDF and read back, numbered gap-free and never re-issued."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from chain.canonical import dumps_checked, loads_strict
from chain.genesis import genesis_from_dict
from chain.keys import generate_private_key
from chain.store import Store
from market.app import MarketApp
from market.billing import round_cents
from peerwatt.statements import (
    BillingError,
    IssuedStore,
    issue_corrections,
    issue_period,
    ledger_view,
    load_config,
    verify_document,
    verify_file,
    write_files,
)
from tests.support.cli import peerwatt
from tests.support.localnet import LocalCommunity, Party, make_community

DAY = 86_400
JUNE = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
JULY = JUNE + 30 * DAY
JOIN = JUNE + 11 * DAY - 1800  # enrolled 30 minutes before the 12th begins
LEAVE = JUNE + 19 * DAY + 600  # revoked 10 minutes into the 20th
PARAMS = {
    "interval_s": DAY,
    "gate_s": 3600,
    "horizon_s": 3 * DAY,
    "settle_after_intervals": 1,
    "correction_window_intervals": 2,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
    "grid_fee_per_kwh": 20_000,
    "levies_per_kwh": 5_000,
}


RETAIL_BY_VOTE = 330_000


def day(x: int) -> int:
    """Interval start of June ``x`` (1-based)."""
    return JUNE + (x - 1) * DAY


@dataclass
class Month:
    c: LocalCommunity
    node: Path
    newcomer: Party  # member 4
    counters: dict[int, dict[int, tuple[int, int]]]  # meter -> interval -> (import, export) at its end
    issue_height: int  # the block right after June ends (statements are issued from it)
    revoked_reading_rejected: bool = False
    members: list[str] = field(default_factory=list)


def usage(meter: int, interval: int) -> tuple[int, int]:
    """(import, export) Wh of a meter in a daily interval: sellers 0, 1 export; the others import."""
    k = (interval - JUNE) // DAY + 40
    if meter in (0, 1):
        return 1_000 + 37 * (k % 5) + meter, 2_600 + 113 * (k % 7) - 400 * (k % 4 == 0) + 7 * meter
    return 3_100 + 91 * (k % 6) + 13 * meter, 17 * (k % 3)


def build_month(
    base: Path, settlement_source: str = "meter", lost: tuple[tuple[int, int], ...] = ()
) -> Month:
    """The month; a ``settlement_source`` other than "meter" names validator 0 the community's
    gridops operator (tests/peerwatt/test_statements_gridops.py); the readings ``lost`` (meter,
    interval) never reach the ledger."""
    c = make_community(
        validators=1, members=4, meters_per_member=1, app="market", app_params=PARAMS, time=JUNE - 2 * DAY
    )
    if settlement_source != "meter":
        d = c.genesis.doc
        c.genesis = genesis_from_dict(
            {
                "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
                "chain": {"sequencer": d["chain"]["sequencer"]},
                "app": {
                    **PARAMS,
                    "settlement_source": settlement_source,
                    "gridops_operators": [c.validators[0].id],
                },
                "validators": list(d["validators"].values()),
                "members": list(d["members"].values()),
                "meters": list(d["meters"].values()),
            }
        )
    c.open_ledgers(base, MarketApp)
    newcomer = Party(generate_private_key(), "member-4")
    new_meter = Party(generate_private_key(), "meter-4-0")
    meters = [*c.meters, new_meter]
    v0, m = c.validators[0], c.members
    blocks: dict[int, list] = {}
    counters: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in range(5)}
    totals = {i: [5_000_000 + i * 1_000_000, 7_000_000 + i * 1_000_000] for i in range(5)}

    def active(meter: int, at: int) -> bool:
        if meter == 4:
            return at > JOIN
        if meter == 2:
            return at < LEAVE
        return True

    def add(t: int, make) -> None:
        blocks.setdefault(t, []).append(make)

    def reading(meter: int, interval: int):
        imp, exp = counters[meter][interval]
        serial = "SN-NEW-4" if meter == 4 else c.genesis.doc["meters"][meters[meter].id]["serial"]
        body = {"interval": interval, "import_wh": imp, "export_wh": exp, "serial": serial, "profile": "sim"}
        return lambda t: meters[meter].sign(c.community, "reading", body, created=t)

    def order(meter: int, side: str, wh: int, price: int, interval: int):
        body = {"side": side, "interval": interval, "energy_wh": wh, "limit_price": price}
        return lambda t: meters[meter].sign(c.community, "order", body, created=t)

    # counters at the end of every daily interval from May 30 to July 2
    for x in range(JUNE - 2 * DAY, JULY + 3 * DAY, DAY):
        for i in range(5):
            imp, exp = usage(i, x)
            totals[i][0] += imp
            totals[i][1] += exp
            counters[i][x] = (totals[i][0], totals[i][1])

    for x in range(JUNE - DAY, JULY, DAY):
        if JUNE <= x < JULY:  # trading in June only
            t = x - 7200
            for i, side, wh, price in (
                (0, "sell", 2_800, 90_000),
                (1, "sell", 1_500, 120_000),
                (2, "buy", 1_800, 200_000),
                (3, "buy", 1_400, 150_000),
                (4, "buy", 1_200, 180_000),
            ):
                if active(i, t) and (i != 4 or x > JOIN + 3600):
                    add(t, order(i, side, wh, price, x))
            blocks.setdefault(x - 3600, [])  # gate closure
        t = x + DAY + 5  # readings at the end of interval x
        for i in range(5):
            if i == 4 and x < JOIN - DAY:
                continue
            if i == 2 and not active(2, t) and x > JUNE + 20 * DAY:
                continue
            if (i, x) in lost:
                continue
            add(t, reading(i, x))
        if x == JUNE - DAY:
            for i in range(4):
                add(x + 10, reading(i, x - DAY))  # the counters at the start of May 31

    def propose(party: Party, action: str, args: dict):
        def make(t: int):
            body = {"action": action, "args": args, "deadline": t + 7 * DAY}
            return party.sign(c.community, "propose", body, created=t)

        return make

    proposals: dict[str, str] = {}

    def vote(party: Party, key: str):
        return lambda t: party.sign(
            c.community, "vote", {"proposal": proposals[key], "vote": "yes"}, created=t
        )

    add(day(10) + 100, propose(m[0], "add_member", {"key": newcomer.sec1_hex, "name": "newcomer"}))
    add(day(10) + 200, vote(m[1], "add_member"))
    add(day(10) + 200, vote(m[2], "add_member"))
    add(
        JOIN,
        propose(
            v0,
            "enroll_meter",
            {"key": new_meter.sec1_hex, "serial": "SN-NEW-4", "owner": newcomer.id, "capacity_w": 10_000},
        ),
    )
    add(JOIN + 100, reading(4, day(10)))  # a reading from before its enrolment
    add(LEAVE, propose(v0, "revoke_meter", {"meter": meters[2].id}))
    add(LEAVE + 1200, propose(m[0], "remove_member", {"member": m[2].id}))
    add(LEAVE + 1300, vote(m[1], "remove_member"))
    add(LEAVE + 1300, vote(m[3], "remove_member"))
    # the retail tariff raised by vote on the 25th: reports and statements use the tariff in force
    add(day(25) + 100, propose(m[0], "set_param", {"name": "retail_price", "value": RETAIL_BY_VOTE}))
    add(day(25) + 200, vote(m[1], "set_param"))
    add(day(25) + 200, vote(m[3], "set_param"))

    issue_height = None
    ledger = c.ledgers[0]
    for t in sorted(blocks):
        txs = []
        for make in blocks[t]:
            env = make(t)
            if env.type == "propose":
                proposals[env.body["action"]] = env.tx_hash.hex()
            txs.append(env)
        c.run_block(txs, t)
        if issue_height is None and t >= JULY:
            issue_height = ledger.height
    # a corrected reading after the statements: meter 0 exported less on June 30
    imp, exp = counters[0][day(30)]
    body = {
        "interval": day(30),
        "import_wh": imp,
        "export_wh": exp - 1_900,
        "serial": "SN000000",
        "profile": "sim",
    }
    t = ledger.head["time"] + 60
    c.run_block([meters[0].sign(c.community, "reading", body, created=t)], t)
    assert issue_height is not None
    return Month(c, base / "validator-0", newcomer, counters, issue_height)


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


@pytest.fixture
def store(month: Month):
    s = Store.open(month.node, readonly=True)
    yield s
    s.close()


def issue(store: Store, month: Month, billing: Path) -> list[dict]:
    return issue_period(store, billing, "2026-06", issued_at="2026-07-01", height=month.issue_height)


def by_member(docs: list[dict]) -> dict[str, dict]:
    return {d["member"]: d for d in docs}


def metered(month: Month, meter: int, first: int, last: int) -> tuple[int, int]:
    """Import/export of June ``first``..``last`` (inclusive days) from the simulated counters."""
    start, end = month.counters[meter][day(first) - DAY], month.counters[meter][day(last)]
    return end[0] - start[0], end[1] - start[1]


def test_statements_add_up_to_the_ledger_balances(month: Month, store: Store, tmp_path: Path) -> None:
    docs = issue(store, month, tmp_path / "billing")
    view = ledger_view(store, month.issue_height)
    balances: dict[str, int] = {}
    for b in view.balances:
        balances[b["account"]] = balances.get(b["account"], 0) + b["delta"]
    members = by_member(docs)
    assert set(members) == {p.id for p in month.c.members} | {month.newcomer.id}
    for member, doc in members.items():
        assert doc["net"] == sum(line["amount"] for line in doc["lines"])
        assert doc["balance"]["period"] == doc["net"] == doc["total"]  # VAT not charged by default
        assert doc["balance"]["before"] == 0
        assert doc["net"] == balances.get(member, 0), member  # to the micro-unit
        assert doc["shown"]["total"] == round_cents(balances.get(member, 0)), member  # and the cent shown
        assert doc["notes"] == []
        shown = doc["shown"]
        assert sum(shown["lines"].values()) == shown["net"] == shown["total"]
        assert sum(shown["sold_to"]) == shown["lines"]["p2p_earnings"]
        assert sum(shown["bought_from"]) == shown["lines"]["p2p_cost"]
        s = shown["savings"]
        assert s["baseline_cost"] - s["actual_cost"] == s["savings"]
    # what the members are charged plus the community's fee and levy accounts is zero
    assert sum(d["net"] for d in docs) + balances["grid_fees"] + balances["levies"] == 0
    lines = [line for d in docs for line in d["lines"]]
    assert (
        -sum(line["amount"] for line in lines if line["code"] == "grid_fees@20000") == balances["grid_fees"]
    )
    assert -sum(line["amount"] for line in lines if line["code"] == "levies@5000") == balances["levies"]
    # June 29 is final, June 30 still provisional at July 1 00:00
    seller = members[month.c.members[0].id]
    assert seller["provisional"] != 0
    assert seller["energy"]["pending_sold_wh"] == 0


def test_joining_on_the_12th_is_billed_for_its_days(month: Month, store: Store, tmp_path: Path) -> None:
    doc = by_member(issue(store, month, tmp_path / "billing"))[month.newcomer.id]
    (meter,) = doc["meters"]
    assert (meter["billed_from"], meter["billed_to"]) == (JOIN, JULY)
    # June 12 to 30; the June 11 interval (its readings of the 10th and 11th exist) is not counted
    imp, exp = metered(month, 4, 12, 30)
    assert (doc["energy"]["import_wh"], doc["energy"]["export_wh"]) == (imp, exp)
    view = ledger_view(store, month.issue_height)
    assert {day(10), day(11)} <= set(view.readings[meter["meter"]])
    # it bought from the 13th on (its first order after enrolment), and never more than it imported
    assert 0 < doc["energy"]["p2p_bought_wh"] <= imp
    trades = [t for t in view.trades if t["buyer"] == meter["meter"]]
    assert min(t["interval"] for t in trades) == day(13)
    assert not doc["final"]


def test_leaving_on_the_20th_closes_the_balance(month: Month, store: Store, tmp_path: Path) -> None:
    leaver = month.c.members[2].id
    doc = by_member(issue(store, month, tmp_path / "billing"))[leaver]
    (meter,) = doc["meters"]
    assert (meter["billed_from"], meter["billed_to"]) == (JUNE - 2 * DAY, LEAVE) or meter[
        "billed_from"
    ] == JUNE
    assert meter["billed_from"] == JUNE and meter["billed_to"] == LEAVE
    imp, exp = metered(month, 2, 1, 19)
    assert (doc["energy"]["import_wh"], doc["energy"]["export_wh"]) == (imp, exp)
    # its trade for the 20th was cleared before it left but is never settled: no reading after revocation
    assert doc["energy"]["unsettled_bought_wh"] == 1_800
    view = ledger_view(store)
    for s in view.settlements:
        if s["buyer"] == meter["meter"] and s["interval"] >= day(20):
            assert (s["status"], s["flag"], s["value"]) == ("unsettled", "missing_reading", 0)
    assert all(b["interval"] < day(20) for b in view.balances if b["account"] == leaver)
    # final statement: the ledger's whole balance of the member, and nothing after
    assert doc["final"]
    assert (
        doc["balance"]["after"]
        == doc["total"]
        == sum(b["delta"] for b in view.balances if b["account"] == leaver)
    )
    assert leaver in view.removed_members


def test_a_reading_after_revocation_is_refused(month: Month, store: Store) -> None:
    """The leaver's agent still reports June 20 after the revocation: refused, never settled."""
    leaver_meter = month.c.meters[2].id
    rows = store.conn.execute(
        "SELECT height, idx FROM txs WHERE signer = ? AND type = 'reading' AND height > ("
        "SELECT min(height) FROM blocks WHERE time >= ?)",
        (leaver_meter, LEAVE),
    ).fetchall()
    assert rows
    for height, idx in rows:
        (outcome,) = [r for r in store.results(height) if r["kind"] == "tx" and r["index"] == idx]
        assert (outcome["status"], outcome["reason"]) == ("rejected", "revoked")
    assert day(20) not in ledger_view(store).readings[leaver_meter]


def test_statements_verify_figure_by_figure(month: Month, store: Store, tmp_path: Path) -> None:
    docs = issue(store, month, tmp_path / "billing")
    files = write_files(docs, tmp_path / "out")
    for doc in docs:
        assert verify_document(store, doc) == []
        for suffix in (".json", ".pdf"):
            got, problems = verify_file(store, tmp_path / "out" / f"{doc['number']}{suffix}")
            assert problems == [] and got == doc
    # a changed figure is named
    forged = loads_strict(dumps_checked(docs[0]))
    forged["lines"][0]["amount"] += 10_000
    problems = verify_document(store, forged)
    assert problems and problems[0].startswith("lines[0].amount: the document says")
    assert any(p.name.endswith(".csv") for p in files)


def test_pdf_text(month: Month, store: Store, tmp_path: Path) -> None:
    docs = by_member(issue(store, month, tmp_path / "billing"))
    write_files(list(docs.values()), tmp_path / "out")
    leaver = docs[month.c.members[2].id]
    text = " ".join(
        " ".join(
            p.extract_text() for p in PdfReader(tmp_path / "out" / f"{leaver['number']}.pdf").pages
        ).split()
    )
    assert f"Statement {leaver['number']}" in text
    assert "Member: member-2" in text
    assert f"computed from ledger height {month.issue_height}".lower() in text.lower()
    assert leaver["ledger"]["block_hash"] in text
    bought = leaver["energy"]["p2p_bought_wh"]
    assert f"Energy bought from neighbours {bought // 1000}.{bought % 1000:03d} kWh avg" in text
    assert f"Grid fee on energy bought {bought // 1000}.{bought % 1000:03d} kWh 2.00 ct/kWh" in text
    assert f"Levies on energy bought {bought // 1000}.{bought % 1000:03d} kWh 0.50 ct/kWh" in text
    assert "bought from member-0" in text
    assert "To pay: EUR" in text and "Final statement" in text
    assert "VAT not charged." in text
    assert "billed from 2026-06-01 00:00 to 2026-06-20 00:10" in text


def test_numbers_are_gap_free_and_never_reissued(month: Month, store: Store, tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    docs = issue(store, month, billing)
    assert [d["number"] for d in docs] == [f"oak-street-2026-06-{i:04d}" for i in range(1, len(docs) + 1)]
    with pytest.raises(BillingError, match="were issued on 2026-07-01 .* never issued again"):
        issue(store, month, billing)
    conn = sqlite3.connect(billing / "issued.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        conn.execute("UPDATE documents SET doc = x'00' WHERE number = ?", (docs[0]["number"],))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM documents")
    conn.close()


def test_correction_note_references_the_original(month: Month, store: Store, tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    docs = by_member(issue(store, month, billing))
    notes = issue_corrections(store, billing, "2026-06", issued_at="2026-07-02")
    seller = docs[month.c.members[0].id]
    by_note = by_member(notes)
    note = by_note[seller["member"]]
    assert note["kind"] == "debit_note" and note["references"] == seller["number"]
    assert [n["number"] for n in notes] == [
        f"oak-street-2026-06-{len(docs) + i:04d}" for i in range(1, len(notes) + 1)
    ]
    assert note["total"] < 0  # it exported less on the 30th, so earned less
    for n in notes:
        assert verify_document(store, n) == []
        original = docs[n["member"]]
        view = ledger_view(store)
        ledger = sum(b["delta"] for b in view.balances if b["account"] == n["member"])
        assert original["total"] + n["total"] == ledger
    # the original is unchanged in the store, and a second run finds nothing new
    kept = IssuedStore(billing)
    assert kept.get(seller["number"]) == seller
    kept.close()
    assert issue_corrections(store, billing, "2026-06", issued_at="2026-07-03") == []


def test_cli_issue_refuse_and_verify(month: Month, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--out", str(out)]
    args += ["--billing", str(tmp_path / "billing"), "--issued-on", "2026-07-01"]
    first = peerwatt(*args, "--height", str(month.issue_height))
    assert first.returncode == 0, first.stderr
    assert "issued 5 statements: oak-street-2026-06-0001 to oak-street-2026-06-0005" in first.stdout
    again = peerwatt(*args)
    assert again.returncode == 2
    assert again.stderr.startswith("error: statements for 2026-06 were issued on 2026-07-01")
    ok = peerwatt("statements", "verify", "--data", str(month.node), str(out / "oak-street-2026-06-0003.pdf"))
    assert ok.returncode == 0, ok.stderr
    assert (
        "matches the ledger at height" in ok.stdout
        and "not checked, not on the ledger: VAT not charged" in ok.stdout
    )
    early = peerwatt("statements", "--data", str(month.node), "--period", "2026-08", "--out", str(out))
    assert early.returncode == 2 and "2026-08 has not ended on the ledger" in early.stderr


def test_vat_from_billing_toml(month: Month, store: Store, tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_text(
        'currency = "EUR"\n[vat]\ncharged = true\nrate_percent = "20"\nnote = "VAT no. ATU12345678"\n'
    )
    docs = issue(store, month, billing)
    write_files(docs, tmp_path / "out")
    for doc in docs:
        assert doc["vat"] == {
            "charged": True,
            "rate_bp": 2000,
            "note": "VAT no. ATU12345678",
            "amount": doc["vat"]["amount"],
        }
        assert doc["total"] == doc["net"] + doc["vat"]["amount"]
        _, problems = verify_file(store, tmp_path / "out" / f"{doc['number']}.pdf")
        assert problems == []
    text = " ".join(PdfReader(tmp_path / "out" / f"{docs[0]['number']}.pdf").pages[0].extract_text().split())
    assert "VAT 20.00 %" in text and "VAT no. ATU12345678" in text
    (billing / "billing.toml").write_text('[vat]\ncharged = false\nnote = ""\n')
    with pytest.raises(BillingError, match="vat.note must state why"):
        load_config(billing)


def test_the_report_counts_a_meter_enrolled_by_vote(month: Month, store: Store) -> None:
    """Found in a QA pass: `peerwatt report` read only the genesis's meters, so a household that
    joined by vote had no row and its import was missing from the community's totals."""
    from peerwatt.reports import build_report

    joined = ledger_view(store).meters
    newcomer = next(m for m in joined.values() if m.owner == month.newcomer.id)
    tables = build_report(store, start=day(12), end=JULY)
    households = tables["households"].set_index("meter")
    assert newcomer.meter in households.index
    imp, exp = metered(month, 4, 12, 30)
    row = households.loc[newcomer.meter]
    assert (row["import_wh"], row["export_wh"]) == (imp, exp)
    assert tables["kpis"].iloc[0]["metered_import_wh"] == households["import_wh"].sum()
    # the vote names no meter: the household is named by its owner, as on the dashboard (a QA
    # walk-through found the name column empty for every household admitted with `agent setup`)
    assert row["name"] == "newcomer"


def test_the_report_uses_the_tariffs_in_force(month: Month, store: Store) -> None:
    """Found in a QA pass: `peerwatt report` priced every household's grid-only baseline and
    residual supply at the genesis's retail tariff, after a vote had raised it (statements and
    the dashboard use the tariff in force)."""
    from market.money import value_micro
    from peerwatt.reports import build_report

    assert ledger_view(store).params["retail_price"] == RETAIL_BY_VOTE
    households = build_report(store, start=day(1), end=JULY)["households"]
    assert set(households["retail_price_per_kwh"]) == {RETAIL_BY_VOTE}
    row = households.iloc[0]
    assert row["baseline_import_cost"] == value_micro(int(row["import_wh"]), RETAIL_BY_VOTE)


def test_a_run_that_cannot_write_its_files_issues_nothing(month: Month, tmp_path: Path) -> None:
    """Found in a QA pass: with an --out that could not be written, the statements were kept as
    issued and never issued again, so the month's PDFs existed nowhere (docs/billing.md: a run
    that fails issues nothing)."""
    (tmp_path / "afile").write_text("")
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--issued-on", "2026-07-01"]
    args += ["--billing", str(tmp_path / "billing"), "--height", str(month.issue_height)]
    failed = peerwatt(*args, "--out", str(tmp_path / "afile" / "2026-06"))
    assert failed.returncode == 2 and "cannot write the statements" in failed.stderr
    retry = peerwatt(*args, "--out", str(tmp_path / "out"))
    assert retry.returncode == 0, retry.stderr
    assert "issued 5 statements: oak-street-2026-06-0001 to oak-street-2026-06-0005" in retry.stdout
    assert len(list((tmp_path / "out").glob("oak-street-2026-06-000?.pdf"))) == 5


def test_a_report_of_a_past_period_keeps_its_tariffs(month: Month, store: Store) -> None:
    """Found in a QA pass of 4be04d4: a report of June took a retail tariff voted in July, so a
    past month's savings changed with every later vote (June's statements keep June's)."""
    from peerwatt.reports import build_report

    june = build_report(store, start=day(1), end=day(20))["households"]  # before the vote on the 25th
    assert set(june["retail_price_per_kwh"]) == {PARAMS["retail_price"]}


def test_a_refused_run_leaves_no_register_behind(month: Month, tmp_path: Path) -> None:
    """A month that has not ended on the ledger is refused before the billing folder's register
    is made (the month-end run opens it for all its parts, since 8b5b83d)."""
    billing = tmp_path / "billing"
    args = ["statements", "--data", str(month.node), "--period", "2026-07", "--billing", str(billing)]
    r = peerwatt(*args, "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "2026-07 has not ended on the ledger" in r.stderr
    assert not (billing / "issued.sqlite").exists()


def test_cli_warns_of_intervals_a_statement_leaves_out(tmp_path: Path) -> None:
    """A reading lost on the way (meter 3's of June 15) leaves June 15 and 16 unbilled: the
    statement names them (format 2), and issuing them says so on stderr, one line per meter."""
    month = build_month(tmp_path / "month", lost=((3, day(15)),))
    out = tmp_path / "out"
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--out", str(out)]
    res = peerwatt(*args, "--billing", str(tmp_path / "billing"), "--height", str(month.issue_height))
    assert res.returncode == 0, res.stderr
    docs = [loads_strict(p.read_bytes()) for p in sorted(out.glob("*.json"))]
    (doc,) = [d for d in docs if any(m["intervals_left_out"] for m in d["meters"])]
    meter = month.c.meters[3].id
    assert doc["flags"] == [f"{meter[:8]}:missing_reading@{day(15)}..{day(16)}"]
    assert res.stderr.splitlines() == [
        f"warning: {doc['number']} ({doc['member_name']}): 2 interval(s) of meter "
        f"{doc['meters'][0]['name']} not billed, without their data or with readings that cannot "
        "be true (see its flags)"
    ]
    page = " ".join(PdfReader(out / f"{doc['number']}.pdf").pages[0].extract_text().split())
    assert "2 interval(s) not billed" in page
    assert f"{meter[:8]} missing_reading, intervals 2026-06-15 00:00 to 2026-06-16 00:00" in page
    ok = peerwatt("statements", "verify", "--data", str(month.node), str(out / f"{doc['number']}.pdf"))
    assert ok.returncode == 0, ok.stderr
