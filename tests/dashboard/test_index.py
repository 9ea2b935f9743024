"""The derived index against the ledger: same trades and settlements, readings as differences of
signed counters, incremental = full build, rebuilt when deleted or when the ledger changes."""

from __future__ import annotations

from dashboard.indexdb import IndexDB
from dashboard.indexer import Indexer
from dashboard.ledger import LedgerReader
from tests.dashboard.reference import final_trades, ledger_results

TRADE_SQL = (
    "SELECT interval || ':' || trade_key, seller, buyer, energy_wh, price, value, grid_fee, levies, status,"
    " settled_wh, s_value, s_grid_fee, s_levies, flag FROM trades ORDER BY id"
)


def index_trades(conn) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in conn.execute(TRADE_SQL)}


def reference_trades(built) -> dict[str, tuple]:
    return {
        k: (
            t["seller"],
            t["buyer"],
            t["energy_wh"],
            t["price"],
            t["value"],
            t["grid_fee"],
            t["levies"],
            t["status"],
            t["settled_wh"],
            t["s_value"],
            t["s_grid_fee"],
            t["s_levies"],
            t["flag"],
        )
        for k, t in final_trades(built.data_dir).items()
    }


def test_index_holds_every_trade_with_its_final_settlement(app, built):
    conn = app.extensions["peerwatt"].index.conn
    assert index_trades(conn) == reference_trades(built)
    statuses = [r[7] for r in reference_trades(built).values()]
    assert {"settled", "cleared"} <= set(statuses)
    adjusted = conn.execute("SELECT count(*) FROM trades WHERE adjusted > 0").fetchone()[0]
    assert adjusted == len(ledger_results(built.data_dir, "adjustment")) == 3


def test_late_reading_trades_are_settled_after_adjustment(app, built):
    meter, interval = built.late_reading
    conn = app.extensions["peerwatt"].index.conn
    rows = conn.execute(
        "SELECT status, flag, adjusted FROM trades WHERE buyer = ? AND interval IN (?, ?)",
        (meter, interval, interval + 900),
    ).fetchall()
    assert rows and all(r == ("settled", None, 1) for r in rows)
    reasons = {r[0] for r in conn.execute("SELECT reason FROM adjustments")}
    assert reasons == {"late_reading", "corrected_reading"}


def test_readings_are_differences_of_signed_counters(app, built):
    conn = app.extensions["peerwatt"].index.conn
    for meter, counters in built.counters.items():
        for interval, (imp, exp) in counters.items():
            previous = counters.get(interval - 900)
            row = conn.execute(
                "SELECT import_wh, export_wh, d_import_wh, d_export_wh FROM readings"
                " WHERE meter = ? AND interval = ?",
                (meter, interval),
            ).fetchone()
            expected_delta = (None, None) if previous is None else (imp - previous[0], exp - previous[1])
            assert row == (imp, exp, *expected_delta), (meter, interval)


def test_incremental_build_equals_full_build_and_rebuild_after_delete(built, tmp_path):
    ledger = LedgerReader(built.data_dir)
    db = IndexDB(tmp_path / "index.sqlite")
    indexer = Indexer(ledger, db, batch_blocks=37)
    first = indexer.sync(max_blocks=100)
    assert first.blocks == 100 and first.rebuilt
    while indexer.sync(max_blocks=61).blocks:
        pass
    assert indexer.indexed_height() == ledger.head().height
    assert index_trades(db.conn) == reference_trades(built)
    db.close()
    for path in tmp_path.glob("index.sqlite*"):
        path.unlink()
    db = IndexDB(tmp_path / "index.sqlite")
    report = Indexer(ledger, db).sync()
    assert report.rebuilt and report.blocks == ledger.head().height
    assert index_trades(db.conn) == reference_trades(built)


def test_index_is_rebuilt_when_the_ledger_under_it_changes(built, tmp_path):
    ledger = LedgerReader(built.data_dir)
    db = IndexDB(tmp_path / "index.sqlite")
    indexer = Indexer(ledger, db)
    indexer.sync()
    assert indexer.sync().blocks == 0  # nothing new
    db.writer.execute("UPDATE meta SET value = ? WHERE key = 'block_hash'", ("00" * 32,))
    db.writer.execute("DELETE FROM trades WHERE id % 2 = 0")
    report = indexer.sync()
    assert report.rebuilt and index_trades(db.conn) == reference_trades(built)
    db.writer.execute("UPDATE meta SET value = 'another genesis' WHERE key = 'genesis'")
    assert indexer.sync().rebuilt


def test_dashboard_never_writes_the_ledger(app, built, as_admin):
    before = {p.name: p.stat().st_mtime_ns for p in built.data_dir.iterdir()}
    for path in ("/", "/explorer", "/trades", f"/household/{built.meters[0]}", "/api/v1/trades.csv"):
        as_admin.get(path)
    store = app.extensions["peerwatt"].ledger.store()
    assert store.readonly
    assert {p.name: p.stat().st_mtime_ns for p in built.data_dir.iterdir()} == before


def test_state_is_the_snapshot_advanced_to_the_head(app, built):
    from chain.engine import Ledger
    from market.app import MarketApp

    ledger = app.extensions["peerwatt"].ledger
    snapshot_height = ledger.conn.execute("SELECT height FROM local_snapshot").fetchone()[0]
    assert snapshot_height < ledger.head().height  # the node saves its state only every few blocks
    engine = Ledger.open(built.data_dir, MarketApp(), readonly=True)
    try:
        assert ledger.state() == engine.state and ledger.state_height() == engine.height
    finally:
        engine.store.close()
    book = app.test_client().get("/api/v1/overview").get_json()["book"]
    assert [b["interval"] for b in book] == sorted(int(i) for i in engine.state["app"]["book"])
    assert book[0]["interval"] > built.last_block_time


def test_trade_sides_mirror_each_trades_settlement(app):
    conn = app.extensions["peerwatt"].index.conn
    mismatched = conn.execute(
        "SELECT count(*) FROM trade_sides s JOIN trades t ON t.id = s.trade WHERE"
        " s.meter NOT IN (t.seller, t.buyer)"
        " OR s.side != CASE WHEN s.meter = t.seller THEN 'sell' ELSE 'buy' END"
        " OR s.status != t.status OR s.settled_wh IS NOT t.settled_wh OR s.s_value IS NOT t.s_value"
        " OR s.s_grid_fee IS NOT t.s_grid_fee OR s.s_levies IS NOT t.s_levies OR s.interval != t.interval"
    ).fetchone()[0]
    assert mismatched == 0
    assert (
        conn.execute("SELECT count(*) FROM trade_sides").fetchone()[0]
        == 2 * conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    )


def test_readings_that_cannot_be_true_are_not_counted_as_metered_energy():
    from dashboard.indexer import metered_delta

    enrolled = {"capacity_w": 11_000, "serial": "S1"}
    assert metered_delta((100, 5_000, "S1"), (900, 6_000, "S1"), enrolled, 900) == (800, 1_000)
    # 11 kW cannot move 99,999,999 Wh in 15 minutes; a serial that is not the enrolled one
    assert metered_delta((100, 5_000, "S1"), (100, 99_999_999, "S1"), enrolled, 900) == (None, None)
    assert metered_delta((100, 5_000, "S2"), (900, 6_000, "S2"), enrolled, 900) == (None, None)
    assert metered_delta((900, 6_000, "S1"), (100, 5_000, "S1"), enrolled, 900) == (None, None)
    assert metered_delta(None, (900, 6_000, "S1"), enrolled, 900) == (None, None)


def test_a_store_restored_under_a_running_dashboard_is_read(tmp_path):
    """Found in a QA pass: after the node's data folder was restored from another validator's
    copy (the old store moved aside), a running dashboard kept reading the moved file: stuck at
    its old height with no warning until restarted."""
    import shutil

    from chain.store import StoreError
    from tests.support.market_ledger import SETTLED_AT, build_market

    c = build_market(tmp_path / "ledgers", validators=1)
    source = tmp_path / "ledgers" / "validator-0"
    node = tmp_path / "node"
    c.ledgers[0].store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(source, node)
    reader = LedgerReader(node)
    before = reader.head().height
    c.run_block([], SETTLED_AT + 900)
    c.ledgers[0].close()
    (node / "ledger.sqlite").rename(tmp_path / "moved-aside.sqlite")
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        if (source / name).exists():
            shutil.copy2(source / name, node / name)
    assert reader.head().height == before + 1
    other = build_market(tmp_path / "other", app_params={"feed_in_price": 81_000})
    for ledger in other.ledgers:
        ledger.close()
    (node / "ledger.sqlite").unlink()
    shutil.copy2(tmp_path / "other" / "validator-0" / "ledger.sqlite", node / "ledger.sqlite")
    try:
        reader.head()
    except StoreError as exc:
        assert "another ledger" in str(exc)
    else:
        raise AssertionError("a store of another genesis was read as this one")


def test_a_ledger_of_another_genesis_under_a_running_dashboard_is_a_503_logged_once(tmp_path, caplog):
    """Found in a QA pass: a node's data folder written again with another genesis (``peerwatt
    simulate --out S`` run twice) under a running dashboard made every request a 500 with a
    traceback, and the background indexer logged a traceback every 2 s. Its accounts, sessions,
    verify runs and the community it names belong to the ledger it was started on: every page
    and API answers 503 with the one-line reason, which is logged once (no traceback), the
    indexer stops without raising, and the right ledger put back is served again."""
    import logging
    import shutil

    from dashboard.app import create_app
    from tests.dashboard.conftest import PASSWORDS, TEST_PASSWORD_METHOD, login
    from tests.support.market_ledger import build_market

    c = build_market(tmp_path / "ledgers", validators=1)
    c.ledgers[0].store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.ledgers[0].close()
    node = tmp_path / "node"
    shutil.copytree(tmp_path / "ledgers" / "validator-0", node)
    shutil.copy2(node / "ledger.sqlite", tmp_path / "ours.sqlite")
    app = create_app(
        node,
        instance_dir=tmp_path / "instance",
        config={"PASSWORD_METHOD": TEST_PASSWORD_METHOD},  # TESTING off: errors are answers
    )
    services = app.extensions["peerwatt"]
    services.indexer.sync()
    services.accounts.add_user("admin", PASSWORDS["admin"], role="admin")
    visitor, admin = app.test_client(), app.test_client()
    assert login(admin, "admin").status_code == 302
    paths = ["/", "/api/v1/overview", "/explorer", "/api/v1/chain", "/explorer/governance", "/api/v1/me"]
    for path in paths + ["/trades", "/api/v1/trades"]:
        assert admin.get(path).status_code == 200, path

    other = build_market(tmp_path / "other", app_params={"feed_in_price": 81_000})
    for ledger in other.ledgers:
        ledger.close()
    (node / "ledger.sqlite").unlink()
    shutil.copy2(tmp_path / "other" / "validator-0" / "ledger.sqlite", node / "ledger.sqlite")
    caplog.set_level(logging.INFO)
    for client in (visitor, admin):
        for path in paths + ["/login", "/trades", "/api/v1/trades", "/household"]:
            response = client.get(path)
            assert response.status_code == 503, (path, response.status_code)
            api = path.startswith("/api/")
            text = response.get_json()["error"] if api else response.get_data(as_text=True)
            assert "now holds another ledger (another genesis)" in text, path
            assert "restart the dashboard on the right data folder" in text, path
    for _ in range(3):
        report = services.indexer.sync()  # the CLI's indexing thread: no exception, no traceback
        assert report.blocks == 0 and "another ledger" in report.stopped
    said = [r for r in caplog.records if "another ledger" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].exc_info is None and "\n" not in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

    (node / "ledger.sqlite").unlink()
    shutil.copy2(tmp_path / "ours.sqlite", node / "ledger.sqlite")
    for path in paths:
        assert admin.get(path).status_code == 200, path
    assert services.indexer.sync().stopped is None
