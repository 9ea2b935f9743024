"""Erasure of a departed member: a governance vote (``erase_member``), then
``peerwatt.node.erasure.erase_departed`` after the retention period. Nothing of the member's readings
remains in any node's database files; other members' data stays; the chain still verifies and
reports the erased transactions; the retention period is respected."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.engine import Ledger
from chain.kvapp import KeyValueApp
from chain.store import Store
from chain.verify import verify_store
from market.app import MarketApp
from peerwatt.node.erasure import erase_departed
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, SETTLED_AT, build_market, reading_values

pytestmark = pytest.mark.reliability

DECIDED_AT = SETTLED_AT + 10
AFTER_CORRECTION_WINDOW = SETTLED_AT + 40 * 900  # the market has pruned its state's readings


def vote_erasure(c: LocalCommunity, member_index: int, t: int) -> None:
    """Members 1..3 (a majority of 4) vote to erase ``member_index``."""
    target = c.members[member_index].id
    proposal = c.members[1].sign(
        c.community,
        "propose",
        {"action": "erase_member", "args": {"member": target}, "deadline": t + 86_400},
        created=t,
    )
    votes = [
        c.members[i].sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for i in (2, 3)
    ]
    block = c.run_block([proposal, *votes], t)
    assert {"kind": "gov", "outcome": "passed"}.items() <= next(
        r for r in block.results if r.get("outcome") == "passed"
    ).items()
    assert c.ledgers[0].chain_state["erased"] == {target: block.height}


def database_bytes(store_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(store_dir.glob("ledger.sqlite*")))


def payload(store_dir: Path, tx_hash: bytes) -> bytes | None:
    store = Store.open(store_dir, readonly=True)
    try:
        return store.payload(tx_hash)
    finally:
        store.close()


def digits(meter_index: int) -> list[bytes]:
    return [str(v).encode() for v in reading_values(meter_index)]


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    base = tmp_path_factory.mktemp("erasure")
    c = build_market(base, validators=3, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    dirs = [base / f"validator-{i}" for i in range(3)]
    for ledger in c.ledgers:
        ledger.close()
    before = [database_bytes(d) for d in dirs]
    reports = [erase_departed(d, now=AFTER_CORRECTION_WINDOW) for d in dirs]
    return c, dirs, before, reports


def test_member_payloads_erased_on_every_node(erased):
    c, dirs, _, reports = erased
    member, meter = c.members[0].id, c.meters[0].id
    for report in reports:
        assert report.erased_members == {member: [meter]}
        assert report.erased_payloads == 3  # its order and two readings
        assert not report.waiting
    for store_dir in dirs:
        store = Store.open(store_dir, readonly=True)
        try:
            signers = [s for (s,) in store.conn.execute("SELECT signer FROM txs")]
            kept = [
                s
                for (s,) in store.conn.execute(
                    "SELECT t.signer FROM txs t JOIN payloads p ON p.hash = t.hash"
                )
            ]
        finally:
            store.close()
        assert signers.count(meter) == 3 and meter not in kept  # index rows stay, payloads go
        assert len(kept) == len(signers) - 3


def test_no_reading_value_of_the_member_remains_in_the_files(erased):
    _, dirs, before, _ = erased
    for store_dir, old in zip(dirs, before, strict=True):
        assert all(value in old for value in digits(0))  # the search finds them before erasure
        now = database_bytes(store_dir)
        assert [v for v in digits(0) if v in now] == []
        for other in (1, 2, 3):
            assert all(value in now for value in digits(other))  # other households untouched
        assert (
            not (store_dir / "ledger.sqlite-wal").exists()
            or (store_dir / "ledger.sqlite-wal").stat().st_size == 0
        )


def test_store_reopens_after_erasure(erased):
    _, dirs, _, _ = erased
    ledger = Ledger.open(dirs[1], MarketApp())
    try:
        assert ledger.height == 6
    finally:
        ledger.close()


def test_verify_passes_and_reports_the_erased_transactions(erased):
    c, dirs, _, _ = erased
    for store_dir in dirs:
        store = Store.open(store_dir, readonly=True)
        try:
            report = verify_store(store, MarketApp())
        finally:
            store.close()
        assert report.blocks == 6
        assert len(report.erased_txs) == 3
        assert report.not_reexecuted_from == 1  # the meter's order is in block 1
        assert "3 erased payload(s)" in report.summary()


def test_retention_period_is_respected(tmp_path):
    t0 = 1_764_000_000
    c = make_community(validators=1, members=4, app="kv", app_params={"retention_s": 3600}, time=t0)
    c.open_ledgers(tmp_path, KeyValueApp)
    body = {"interval": t0, "import_wh": 424_242_421, "export_wh": 0, "serial": "S", "profile": "p"}
    reading = c.meters[0].sign(c.community, "reading", body, created=t0 + 5)
    c.run_block([reading], t0 + 5)
    vote_erasure(c, 0, t0 + 100)
    c.ledgers[0].close()
    store_dir = tmp_path / "validator-0"
    early = erase_departed(store_dir, now=t0 + 100 + 3599)
    assert early.erased_payloads == 0 and early.waiting == {c.members[0].id: t0 + 100 + 3600}
    assert payload(store_dir, reading.tx_hash) is not None
    due = erase_departed(store_dir, now=t0 + 100 + 3600)
    assert due.erased_payloads == 1 and due.erased_members == {c.members[0].id: [c.meters[0].id]}
    assert payload(store_dir, reading.tx_hash) is None  # (the kv app's state keeps its latest value)


def test_erase_command(tmp_path):
    from tests.support.cli import peerwatt

    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    for ledger in c.ledgers:
        ledger.close()
    data = str(tmp_path / "validator-0")
    res = peerwatt("node", "erase", "--data", data, "--now", str(AFTER_CORRECTION_WINDOW))
    assert res.returncode == 0 and res.stdout.startswith("erased 3 payload(s) of 1 member(s)"), res.stderr
    check = peerwatt("verify", "--data", data)
    assert check.returncode == 0 and "erased payload(s)" in check.stdout, check.stdout
    missing = peerwatt("node", "erase", "--data", str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "no ledger store" in missing.stderr


def test_erasure_within_the_correction_window_says_what_the_state_still_holds(tmp_path):
    """Right after the vote (retention 0) the market's state still holds the meter's readings of
    its correction window, in the node's snapshot: `node erase` says how many and from when the
    market can have pruned them, and a run after a block past that time leaves none in the files
    (the store still re-opens and verifies)."""
    from tests.support.cli import peerwatt

    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.ledgers[0].close()
    data = tmp_path / "validator-0"
    until = I1 + 33 * 900  # its last reading's interval + correction_window_intervals (32) + 1
    res = peerwatt("node", "erase", "--data", str(data), "--now", str(DECIDED_AT + 1))
    assert res.returncode == 0, res.stderr
    first, held = res.stdout.splitlines()
    assert first == "erased 3 payload(s) of 1 member(s)"
    assert "still holds 2 reading(s) of the erased meters" in held and f"(--now {until})" in held, held
    assert all(v in database_bytes(data) for v in digits(0))  # as it says: still in the files

    c.ledgers[0] = Ledger.open(data, MarketApp())
    c.run_block([], until)  # not yet pruned: the reading of I1 stays
    c.ledgers[0].close()
    report = erase_departed(data, now=until)
    assert report.erased_payloads == 0 and [(h.count, h.until) for h in report.held] == [(1, until)]

    c.ledgers[0] = Ledger.open(data, MarketApp())
    c.run_block([], until + 1)
    c.ledgers[0].close()
    report = erase_departed(data, now=until + 1)
    assert report.held == [] and "\n" not in report.summary()
    now = database_bytes(data)
    assert [v for v in digits(0) if v in now] == []
    assert all(v in now for v in digits(1))
    ledger = Ledger.open(data, MarketApp())
    try:
        assert ledger.height == 7
    finally:
        ledger.close()
    store = Store.open(data, readonly=True)
    try:
        assert verify_store(store, MarketApp()).erased_txs
    finally:
        store.close()


def test_dashboard_over_an_erased_ledger(tmp_path):
    from dashboard.app import create_app

    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    for ledger in c.ledgers:
        ledger.close()
    data = tmp_path / "validator-0"
    erase_departed(data, now=AFTER_CORRECTION_WINDOW)
    app = create_app(
        data, instance_dir=tmp_path / "dash", config={"TESTING": True, "PASSWORD_METHOD": "scrypt:1024:8:1"}
    )
    app.extensions["peerwatt"].indexer.sync()
    app.extensions["peerwatt"].accounts.add_user("admin", "a long admin password", role="admin")
    client = app.test_client()
    from tests.dashboard.conftest import csrf_token

    token = csrf_token(client)
    client.post(
        "/login", data={"username": "admin", "password": "a long admin password", "csrf_token": token}
    )
    store = Store.open(data, readonly=True)
    try:
        erased_at = [
            h
            for (h,) in store.conn.execute(
                "SELECT DISTINCT t.height FROM txs t LEFT JOIN payloads p ON p.hash = t.hash"
                " WHERE p.hash IS NULL"
            )
        ]
    finally:
        store.close()
    assert erased_at
    body = client.get(f"/api/v1/blocks/{erased_at[0]}").get_json()
    assert any(tx.get("erased") for tx in body["txs"]), body
    assert client.get(f"/explorer/blocks/{erased_at[0]}").status_code == 200
    assert client.get("/").status_code == 200


def test_erase_command_also_deletes_the_members_bank_details(tmp_path):
    """Bank details live off the ledger, in the operator's billing store: `peerwatt node erase`
    deletes the erased member's there too (and only theirs)."""
    from peerwatt.payments import bank_details, set_bank_details
    from tests.support.cli import peerwatt

    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    for ledger in c.ledgers:
        ledger.close()
    data = tmp_path / "validator-0"
    billing = data / "billing"
    billing.mkdir()
    for i, iban in ((0, "DE89370400440532013000"), (1, "AT611904300234573201")):
        set_bank_details(billing, c.members[i].id, name=f"member {i}", iban=iban, now="2026-06-01")
    res = peerwatt("node", "erase", "--data", str(data), "--now", str(AFTER_CORRECTION_WINDOW))
    assert res.returncode == 0, res.stderr
    assert "bank details" in res.stdout
    assert set(bank_details(billing)) == {c.members[1].id}
    raw = b"".join(p.read_bytes() for p in billing.glob("issued.sqlite*"))
    assert b"DE89370400440532013000" not in raw and b"AT611904300234573201" in raw


def enable_gridops(c, t: int) -> int:
    """The members vote validator 0 the grid operator's importer and settlement on its data; the
    time after the votes' blocks."""
    for name, value in (
        ("gridops_operators", c.validators[0].id),
        ("settlement_source", "meter_then_gridops"),
    ):
        proposal = c.members[1].sign(
            c.community,
            "propose",
            {"action": "set_param", "args": {"name": name, "value": value}, "deadline": t + 86_400},
            created=t,
        )
        yes = [
            c.members[i].sign(
                c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t
            )
            for i in (2, 3)
        ]
        c.run_block([proposal, *yes], t)
        t += 1
    return t


def test_the_grid_operators_data_about_an_erased_meter_is_erased_too(tmp_path):
    """A gridops transaction is signed by the importing operator, not by the meter, yet it holds
    the meter's 15-minute energy: it is erased with the meter's own messages, verify accepts its
    missing payload (the result names the meter), and another meter's data stays."""
    c = build_market(tmp_path, validators=3, members=4)
    t = enable_gridops(c, SETTLED_AT + 1)

    def data_of(meter: int):
        body = {
            "meter": c.meters[meter].id,
            "metering_point": f"AT0030000000000000000000000{meter:06d}",
            "rows": [
                {"interval": I1 - 900, "import_wh": 123_457 + meter, "export_wh": 0, "quality": "measured"}
            ],
        }
        return c.validators[0].sign(c.community, "gridops", body, created=t)

    mine, theirs = data_of(0), data_of(1)
    block = c.run_block([mine, theirs], t)
    assert [r["status"] for r in block.results if r["kind"] == "tx"] == ["ok", "ok"]
    vote_erasure(c, 0, DECIDED_AT + 10)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    for ledger in c.ledgers:
        ledger.close()
    store_dir = tmp_path / "validator-1"
    erase_departed(store_dir, now=AFTER_CORRECTION_WINDOW)
    assert payload(store_dir, mine.tx_hash) is None
    assert payload(store_dir, theirs.tx_hash) is not None
    # the signed envelope is gone from the files (its values stay in the market's state for
    # gridops_window_s, as readings do for the correction window: docs/privacy.md)
    assert mine.sig.encode() not in database_bytes(store_dir)
    store = Store.open(store_dir, readonly=True)
    try:
        report = verify_store(store, MarketApp())
    finally:
        store.close()
    assert mine.tx_hash.hex() in report.erased_txs and theirs.tx_hash.hex() not in report.erased_txs


def test_the_grid_operators_rows_held_in_the_state_are_reported_with_their_time(tmp_path):
    """The market's state keeps the grid operator's rows for gridops_window_s: after erasure,
    `node erase` reports them held until a time at which the market prunes them, not before."""
    c = build_market(tmp_path, validators=1, members=4)
    t = enable_gridops(c, SETTLED_AT + 1)
    body = {
        "meter": c.meters[0].id,
        "metering_point": "AT0030000000000000000000000000000",
        "rows": [{"interval": I1 - 900, "import_wh": 123_457, "export_wh": 0, "quality": "measured"}],
    }
    c.run_block([c.validators[0].sign(c.community, "gridops", body, created=t)], t)
    vote_erasure(c, 0, DECIDED_AT + 10)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    c.ledgers[0].close()
    data = tmp_path / "validator-0"
    report = erase_departed(data, now=AFTER_CORRECTION_WINDOW)
    until = I1 - 900 + 40 * 86_400 + 2 * 900  # its interval + gridops_window_s + 2 intervals
    assert [(h.what, h.count, h.until) for h in report.held] == [("grid operator row(s)", 1, until)]
    assert "still holds 1 grid operator row(s) of the erased meters" in report.summary()
    for when, held in ((until - 1, {str(I1 - 900)}), (until, set())):
        c.ledgers[0] = Ledger.open(data, MarketApp())
        c.run_block([], when)
        assert set(c.ledgers[0].state["app"]["gridops"].get(c.meters[0].id, {})) == held
        c.ledgers[0].close()
    assert erase_departed(data, now=until).held == []
