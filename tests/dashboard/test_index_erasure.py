"""A dashboard that indexed a member's readings before `peerwatt node erase` forgets them once the
node has erased their payloads: the rows go from index.sqlite, and the values from every file of
the instance folder (the erasure changes no block hash, so nothing else would rebuild the index).
The other households' readings stay."""

from __future__ import annotations

from pathlib import Path

from chain.engine import Ledger
from market.app import MarketApp
from peerwatt.node.erasure import erase_departed
from tests.reliability.test_erasure import AFTER_CORRECTION_WINDOW, DECIDED_AT, vote_erasure
from tests.support.market_ledger import build_market, reading_values

CONFIG = {"TESTING": True, "PASSWORD_METHOD": "scrypt:1024:8:1"}


def traces(meter_index: int, serial: str) -> list[bytes]:
    """How a meter's counters (SQLite: 4-byte big-endian integers) and serial lie in a file."""
    return [v.to_bytes(4, "big") for v in reading_values(meter_index)] + [serial.encode()]


def instance_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def readings_of(app, meter: str) -> list[tuple]:
    return (
        app.extensions["peerwatt"]
        .index.conn.execute(
            "SELECT interval, import_wh, export_wh, serial FROM readings WHERE meter = ?", (meter,)
        )
        .fetchall()
    )


def test_an_index_built_before_erasure_forgets_the_erased_readings(tmp_path):
    from dashboard.app import create_app

    c = build_market(tmp_path, validators=1, members=4)
    for ledger in c.ledgers:
        ledger.close()
    data, instance = tmp_path / "validator-0", tmp_path / "dash"
    serials = [c.genesis.doc["meters"][m.id]["serial"] for m in c.meters]
    app = create_app(data, instance_dir=instance, config=CONFIG)
    assert app.extensions["peerwatt"].indexer.sync().readings > 0  # indexed before the vote
    assert len(readings_of(app, c.meters[0].id)) == 2
    before = instance_bytes(instance)
    assert all(t in before for t in traces(0, serials[0]))  # the search finds them in the index

    c.ledgers[0] = Ledger.open(data, MarketApp())
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    c.ledgers[0].close()
    assert erase_departed(data, now=AFTER_CORRECTION_WINDOW).erased_payloads == 3

    report = app.extensions["peerwatt"].indexer.sync()
    assert readings_of(app, c.meters[0].id) == []
    others = {i: readings_of(app, c.meters[i].id) for i in (1, 2, 3)}
    assert all(len(rows) == 2 for rows in others.values())
    now = instance_bytes(instance)
    assert [t for t in traces(0, serials[0]) if t in now] == []
    for i in (1, 2, 3):
        assert all(t in now for t in traces(i, serials[i]))  # other households untouched
    assert report.forgotten == 2 and not report.rebuilt

    # a restart of the dashboard finds nothing more to forget, and indexes nothing back
    app.extensions["peerwatt"].index.close()
    again = create_app(data, instance_dir=instance, config=CONFIG)
    assert again.extensions["peerwatt"].indexer.sync().forgotten == 0
    assert readings_of(again, c.meters[0].id) == []
    assert {i: readings_of(again, c.meters[i].id) for i in (1, 2, 3)} == others


def test_readings_before_the_erasure_run_stay_indexed(tmp_path):
    """The vote alone (retention not yet passed, or `node erase` not yet run) removes nothing:
    the index follows the node's store."""
    from dashboard.app import create_app

    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    for ledger in c.ledgers:
        ledger.close()
    app = create_app(tmp_path / "validator-0", instance_dir=tmp_path / "dash", config=CONFIG)
    for _ in range(2):
        app.extensions["peerwatt"].indexer.sync()
        assert len(readings_of(app, c.meters[0].id)) == 2
