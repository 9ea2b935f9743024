"""A node's intake turns away a burst of readings of one interval beyond max_reading_corrections.

Found in a QA pass: intake turned away a burst of orders beyond max_orders_per_interval before it
reached a block (market.app pending_budget), but not a burst of readings of one interval. A
hostile enrolled meter sent 3,000 distinct readings of one interval in about a second: blocks
booked them all, 4 ok and 2,996 rejected ``too_many_corrections``, ~3.4 MB of store per burst on
every node, and every later interval allowed another burst. A node now counts the readings of a
meter's interval waiting for a block: the first reading plus the corrections still allowed get in,
the rest is refused at once with the reason a block would have booked.
"""

from __future__ import annotations

from market.app import MarketApp
from peerwatt.bus import Topics
from tests.support.memory_net import T0, Net

LIMIT = 3  # what every genesis peerwatt writes says
INTERVAL = T0 - 900  # ended just before the nets' clock (T0 + 10)


def _net(tmp_path, **params) -> Net:
    params = {"interval_s": 900, "gate_s": 300, **params}
    return Net(tmp_path, app_factory=MarketApp, app="market", app_params=params)


def _reading(net: Net, meter_index: int, import_wh: int, interval: int = INTERVAL):
    meter = net.c.meters[meter_index]
    serial = net.c.genesis.doc["meters"][meter.id]["serial"]
    body = {"interval": interval, "import_wh": import_wh, "export_wh": 0, "serial": serial, "profile": "p"}
    return meter.sign(net.c.community, "reading", body, created=int(net.clock.now()))


def _publish(net: Net, env) -> None:
    net.publisher.publish(Topics.readings(net.c.community, env.signer), env.to_bytes())


def _booked(net: Net, meter_index: int, node: int = 0) -> list[str]:
    """The outcome ("ok" or the reason) of each of the meter's readings booked on ``node``."""
    store = net.nodes[node].ledger.store
    meter = net.c.meters[meter_index].id
    rows = store.conn.execute(
        "SELECT height, idx FROM txs WHERE type = 'reading' AND signer = ? ORDER BY height, idx", (meter,)
    ).fetchall()
    out = []
    for height, idx in rows:
        tx = next(r for r in store.results(height) if r["kind"] == "tx" and r["index"] == idx)
        out.append(tx.get("reason", tx["status"]))
    return out


def test_a_burst_of_readings_of_one_interval_is_turned_away_before_it_reaches_a_block(tmp_path):
    """300 distinct readings of one interval sent before a block: the first and its 3 corrections
    are booked (all ok), the other 296 are refused at intake, on every node; the meter's next
    burst of the same interval gets nothing in. Another meter's reading of it is untouched."""
    net = _net(tmp_path, max_reading_corrections=LIMIT)
    for k in range(300):
        _publish(net, _reading(net, 0, 1000 + k))
    _publish(net, _reading(net, 1, 500))
    net.settle()
    for node in range(len(net.nodes)):
        assert _booked(net, 0, node) == ["ok"] * (LIMIT + 1), node  # before: 300, 296 rejected
    assert _booked(net, 1) == ["ok"]
    assert net.nodes[0].status()["rejected"].get("too_many_corrections", 0) >= 300 - (LIMIT + 1)
    assert net.nodes[0].ledger.state["app"]["corrections"] == {net.c.meters[0].id: {str(INTERVAL): LIMIT}}
    for k in range(50):  # its corrections are used up: none reaches a block any more
        _publish(net, _reading(net, 0, 5000 + k))
    net.settle()
    assert _booked(net, 0) == ["ok"] * (LIMIT + 1)
    assert net.nodes[0]._pending_per_budget == {}  # all booked or gone, the counts back to 0


def test_an_honest_reading_and_its_corrections_still_go_through(tmp_path):
    """An honest meter's reading, then a correction in a later block, then one sent together with
    another in the same burst: all within the limit, all booked and taken."""
    net = _net(tmp_path, max_reading_corrections=LIMIT)
    _publish(net, _reading(net, 0, 1000))
    net.settle()
    assert _booked(net, 0) == ["ok"]
    _publish(net, _reading(net, 0, 1010))  # a legitimate correction
    net.settle()
    _publish(net, _reading(net, 0, 1020))
    _publish(net, _reading(net, 0, 1030))
    net.settle()
    assert _booked(net, 0) == ["ok"] * 4
    app = net.nodes[0].ledger.state["app"]
    assert app["readings"][net.c.meters[0].id][str(INTERVAL)][0] == 1030
    assert app["corrections"] == {net.c.meters[0].id: {str(INTERVAL): 3}}
    assert net.nodes[0].status()["rejected"].get("too_many_corrections", 0) == 0


def test_the_budget_is_what_the_ledger_still_takes(tmp_path):
    """The count per meter and interval: the first reading when none is recorded plus the
    corrections left; each interval and meter its own; no budget without the parameter."""
    net = _net(tmp_path, max_reading_corrections=LIMIT)
    ledger, now = net.nodes[0].ledger, int(net.clock.now())
    meter = net.c.meters[0].id
    first = _reading(net, 0, 1000)
    assert ledger.pending_budget(first, now) == (
        ("readings", meter, str(INTERVAL)),
        LIMIT + 1,
        "too_many_corrections",
    )
    _publish(net, first)
    net.settle()
    assert ledger.pending_budget(_reading(net, 0, 1001), now)[1] == LIMIT  # recorded, 0 corrections
    _publish(net, _reading(net, 0, 1002))
    net.settle()
    assert ledger.pending_budget(_reading(net, 0, 1003), now)[1] == LIMIT - 1
    earlier = _reading(net, 0, 900, interval=INTERVAL - 900)
    assert ledger.pending_budget(earlier, now)[1] == LIMIT + 1
    assert ledger.pending_budget(_reading(net, 1, 7), now)[1] == LIMIT + 1

    unbounded = _net(tmp_path / "unbounded")
    assert unbounded.nodes[0].ledger.pending_budget(_reading(unbounded, 0, 1000), now) is None
