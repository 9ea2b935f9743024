"""Independent reference figures for the dashboard's tests, read straight from the ledger's
results table (no dashboard code; chain.store's reader, which decompresses its rows): trades with
their final settled amounts, and readings."""

from __future__ import annotations

import json
from pathlib import Path

from chain.store import Store


def ledger_results(data_dir: Path, kind: str) -> list[tuple[int, int, dict]]:
    store = Store.open(data_dir, readonly=True)  # the store's reader: its rows may be compressed
    try:
        return [(h, i, json.loads(d)) for h, i, d in store.results_of_kinds([kind])]
    finally:
        store.close()


def final_trades(data_dir: Path) -> dict[str, dict]:
    """{public id: trade} with status, settled_wh/value/grid_fee/levies after every adjustment."""
    trades = {}
    for h, i, r in ledger_results(data_dir, "trade"):
        key = f"{r['interval']}:{r['sell_order'][:24]}:{r['buy_order'][:24]}"
        trades[key] = dict(
            r,
            height=h,
            idx=i,
            status="cleared",
            settled_wh=None,
            s_value=None,
            s_grid_fee=None,
            s_levies=None,
            flag=None,
        )
    for _, _, r in ledger_results(data_dir, "settlement"):
        t = trades[f"{r['interval']}:{r['trade']}"]
        t.update(
            status=r["status"],
            settled_wh=r["settled_wh"],
            s_value=r["value"],
            s_grid_fee=r["grid_fee"],
            s_levies=r["levies"],
            flag=r["flag"],
        )
    for _, _, r in ledger_results(data_dir, "adjustment"):
        t = trades[f"{r['interval']}:{r['trade']}"]
        t["settled_wh"] += r["delta_wh"]
        t["s_value"] += r["delta_value"]
        t["s_grid_fee"] += r["delta_grid_fee"]
        t["s_levies"] += r["delta_levies"]
        t["status"], t["flag"] = r["status"], r["flag"]
    return trades
