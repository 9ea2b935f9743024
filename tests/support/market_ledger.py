"""A small market-app ledger for tests: orders, gate closure, readings, settlement.

Readings carry distinctive counter values per meter (``reading_values``), so a test can search the
database files for them byte by byte.
"""

from __future__ import annotations

from pathlib import Path

from market.app import MarketApp
from tests.support.localnet import LocalCommunity, make_community

T0 = 1_764_000_000  # aligned to 900 s
I1 = T0 + 1800  # the traded interval
PARAMS = {
    "interval_s": 900,
    "gate_s": 300,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
    "grid_fee_per_kwh": 20_000,
    "levies_per_kwh": 5_000,
}
SETTLED_AT = I1 + 3 * 900  # settlement deadline of I1 (settle_after_intervals = 2)


def reading_values(meter_index: int) -> tuple[int, int, int, int]:
    """(start import, start export, end import, end export) in Wh: distinctive 9-digit numbers."""
    base = 737_001_000 + meter_index * 10_000_000
    return base + 11, base + 2213, base + 911, base + 3301


def order(c: LocalCommunity, meter: int, side: str, energy_wh: int, price: int, t: int, interval: int = I1):
    body = {"side": side, "interval": interval, "energy_wh": energy_wh, "limit_price": price}
    return c.meters[meter].sign(c.community, "order", body, created=t)


def reading(
    c: LocalCommunity,
    meter: int,
    interval: int,
    import_wh: int,
    export_wh: int,
    t: int,
    serial: str | None = None,
):
    body = {
        "interval": interval,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "serial": serial or c.genesis.doc["meters"][c.meters[meter].id]["serial"],
        "profile": "sim",
    }
    return c.meters[meter].sign(c.community, "reading", body, created=t)


def opening_orders(c: LocalCommunity, t: int) -> list:
    """Two sellers and two buyers for I1: asks 90k (1000 Wh), 120k (500 Wh); bids 200k (800 Wh),
    100k (600 Wh), so 1000 Wh clear at 95k."""
    return [
        order(c, 0, "sell", 1000, 90_000, t),
        order(c, 1, "sell", 500, 120_000, t),
        order(c, 2, "buy", 800, 200_000, t),
        order(c, 3, "buy", 600, 100_000, t),
    ]


def build_market(
    base_dir: Path, *, validators: int = 3, members: int = 4, app_params: dict | None = None
) -> LocalCommunity:
    """A community whose ledgers hold a full trade round: 4 blocks with orders, clearing, readings
    and settlement (meters 0, 1 sell; 2, 3 buy). The ledgers are left open."""
    c = make_community(
        validators=validators,
        members=members,
        meters_per_member=1,
        app="market",
        app_params={**PARAMS, **(app_params or {})},
        time=T0,
    )
    c.open_ledgers(base_dir, MarketApp)
    t = T0 + 10
    c.run_block(opening_orders(c, t), t)
    c.run_block([], I1 - 300)  # gate closure: clearing and trades
    t = I1 + 900 + 5
    readings = []
    for m in range(4):
        start_imp, start_exp, end_imp, end_exp = reading_values(m)
        readings.append(reading(c, m, I1 - 900, start_imp, start_exp, t))
        readings.append(reading(c, m, I1, end_imp, end_exp, t))
    c.run_block(readings, t)  # settlement of I1
    c.run_block([], SETTLED_AT)
    return c


def closed_market_data(base_dir: Path) -> Path:
    """A node's data folder holding build_market's trade round (one validator), closed: what a
    command run with ``--data`` reads."""
    c = build_market(base_dir, validators=1)
    for ledger in c.ledgers:
        ledger.close()
    return Path(base_dir) / "validator-0"
