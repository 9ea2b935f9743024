"""`peerwatt simulate`'s summary: what the market did (the P2P share of demand) is shown as such,
and self-sufficiency as what could have been met locally (found in a QA pass: "share of demand met
locally" was the self-sufficiency, the same for every mechanism, and the market's own share was
not in the summary)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd
from rich.console import Console

from peerwatt.commands.simulate import _summary_table


def rendered(kpis: dict) -> str:
    result = SimpleNamespace(
        tables={
            "kpis": pd.DataFrame([kpis]),
            "households": pd.DataFrame({"name": ["a", "b"], "savings": [1_000_000, 2_000_000]}),
            "trades": pd.DataFrame(),
        },
        verify=SimpleNamespace(summary=lambda: "ok: 10 blocks"),
        memory=[],
        workers=0,
    )
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(_summary_table(result, "t"))
    return console.export_text()


def row(text: str, label: str) -> str:
    (line,) = [line for line in text.splitlines() if f"│ {label} " in line]
    return line.split("│")[2].strip()


def test_the_market_share_and_the_local_potential_are_two_labelled_rows():
    text = rendered(
        {
            "p2p_settled_wh": 30_400,
            "p2p_share_of_consumption": 0.304,
            "self_sufficiency": 0.392,
            "self_consumption": 0.5,
            "trades": 3,
            "settled_trades": 3,
            "unsettled_trades": 0,
        }
    )
    assert row(text, "share of demand met by P2P trades") == "30.4%"
    assert row(text, "share of demand that could have been met locally") == "39.2%"
    assert row(text, "share of exports sold P2P (self-consumption)") == "50.0%"
    assert "share of demand met locally" not in text


def test_without_demand_the_shares_are_not_available():
    text = rendered(
        {
            "p2p_settled_wh": 0,
            "p2p_share_of_consumption": None,
            "self_sufficiency": None,
            "self_consumption": None,
            "trades": 0,
            "settled_trades": 0,
            "unsettled_trades": 0,
        }
    )
    assert row(text, "share of demand met by P2P trades") == "n/a"
    assert row(text, "share of demand that could have been met locally") == "n/a"
