"""Which application a genesis names: "market" (the energy market) or "kv" (the engine's test app).

The one registry of ledger applications: the node, the CLI and the dashboard's verification all
load the app a genesis names here. It lives in market/ because it names the market app, and chain/
imports nothing of ours; the dashboard and peerwatt may import market.
"""

from __future__ import annotations

import importlib

from chain.app import Application

APPS = {
    "market": "market.app:MarketApp",
    "kv": "chain.kvapp:KeyValueApp",
}


def load_app(name: str) -> Application:
    """Instantiate the app a genesis names; ValueError for an unknown name."""
    target = APPS.get(name)
    if target is None:
        raise ValueError(f"unknown app {name!r} (known: {', '.join(sorted(APPS))})")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)()
