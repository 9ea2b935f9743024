"""Community market parameters (genesis [app], changeable by vote): defaults and checks."""

from __future__ import annotations

from typing import Any

from market.clearing import COMMUNITY, MECHANISMS

DEFAULTS: dict[str, Any] = {
    "interval_s": 900,
    "gate_s": 300,
    "horizon_s": 86_400,
    "settle_after_intervals": 2,
    # late and corrected readings are accepted for this many intervals (8 h); the state keeps
    # readings and settlements that long, so it is a cost paid in every block
    "correction_window_intervals": 32,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
    "grid_fee_per_kwh": 0,
    "levies_per_kwh": 0,
    "mechanism": "uniform",
    "community_price": 150_000,
    # how long a departed member's payloads are kept after the erasure vote (s); peerwatt/node/erasure.py
    "retention_s": 0,
}

INT_PARAMS = (
    "interval_s",
    "gate_s",
    "horizon_s",
    "settle_after_intervals",
    "correction_window_intervals",
    "feed_in_price",
    "retail_price",
    "grid_fee_per_kwh",
    "levies_per_kwh",
    "community_price",
    "retention_s",
)


def with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with defaults filled in for those not set."""
    return {**DEFAULTS, **params}


def check_params(params: dict[str, Any]) -> None:
    """Raise ValueError with a one-line reason if the market cannot run with ``params``."""
    p = with_defaults(params)
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown market parameter(s): {', '.join(sorted(unknown))}")
    for name in INT_PARAMS:
        if type(p[name]) is not int or p[name] < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    if p["interval_s"] <= 0 or 86_400 % p["interval_s"]:
        raise ValueError("interval_s must divide a day (e.g. 900)")
    if p["gate_s"] >= p["horizon_s"]:
        raise ValueError("gate_s must be shorter than horizon_s")
    if p["settle_after_intervals"] < 1:
        raise ValueError("settle_after_intervals must be at least 1")
    if not 0 < p["feed_in_price"] <= p["retail_price"]:
        raise ValueError("feed_in_price must be positive and at most retail_price")
    if p["mechanism"] not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}")
    if p["mechanism"] == COMMUNITY and not p["feed_in_price"] <= p["community_price"] <= p["retail_price"]:
        raise ValueError("community_price must lie between feed_in_price and retail_price")
