"""Community market parameters (genesis [app], changeable by vote): defaults and checks."""

from __future__ import annotations

from typing import Any

from chain.messages import MAX_PRICE as MAX_ORDER_PRICE
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
    # what the market settles on (docs/market.md, "The grid operator's data"): the meters' signed
    # readings, the grid operator's validated data, or readings first and re-settlement on the
    # grid operator's data when it arrives
    "settlement_source": "meter",
    # key ids (members or validators) that may sign the grid operator's data (`gridops` txs)
    "gridops_operators": [],
    # the grid operator's data is accepted until this long after an interval's end (40 days);
    # under the "gridops" source an interval waits that long for it. The state keeps the
    # settlements (and the data) of that long, a cost paid in every block
    "gridops_window_s": 40 * 86_400,
    # which grid fee and levies rates a trade is settled at: those in force when its interval's
    # gate closed ("clearing": what the buyer's bid cleared against, docs/billing.md) or when it
    # is settled ("settlement"). Absent means "settlement", how every ledger written before this
    # switch settled, so they re-execute unchanged; new genesis files say "clearing".
    "fee_rates_at": "settlement",
    # how often a meter may correct its reading of one interval (each correction re-settles two
    # intervals and adjusts every trade of both, the counterparties' too). None: no limit, how
    # every ledger written before this switch ran; new genesis files say 3.
    "max_reading_corrections": None,
    # how many orders a meter may place for one delivery interval (its first, every replacement
    # and every cancellation: each is a transaction every node stores for good). None: no limit,
    # how every ledger written before this switch ran; new genesis files say 12
    # (docs/market.md, "Order revisions").
    "max_orders_per_interval": None,
}
FEE_RATES_AT = ("clearing", "settlement")

METER, GRIDOPS, METER_THEN_GRIDOPS = "meter", "gridops", "meter_then_gridops"
SETTLEMENT_SOURCES = (METER, GRIDOPS, METER_THEN_GRIDOPS)

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
    "gridops_window_s",
)


def gridops_operators(params: dict[str, Any]) -> list[str]:
    """The key ids in ``gridops_operators``: a list, or one string of comma-separated ids (what a
    `set_param` vote from the command line can carry); ValueError if it is neither."""
    value = params.get("gridops_operators", DEFAULTS["gridops_operators"])
    ids = [k.strip() for k in value.split(",") if k.strip()] if isinstance(value, str) else value
    if not isinstance(ids, list) or not all(
        isinstance(k, str) and len(k) == 32 and all(c in "0123456789abcdef" for c in k) for k in ids
    ):
        raise ValueError(
            "gridops_operators must be key ids (32 lowercase hex digits), a list or comma-separated"
        )
    return ids


def with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with defaults filled in for those not set."""
    return {**DEFAULTS, **params}


# The largest price per kWh (micro-units) in a ledger with the bounds (genesis
# chain.max_open_proposals): 1,000 currency units per kWh, over 3,000 times today's retail
# prices, and small enough that a year of a household's money stays within the ledger's integers
# (±(2**53 - 1)). Without it a vote could set a retail price of 2**53 - 1 (found in a QA pass).
MAX_PRICE_PER_KWH = 10**9
PRICE_PARAMS = ("feed_in_price", "retail_price", "grid_fee_per_kwh", "levies_per_kwh", "community_price")
# With rules 4 the prices an order's limit must lie between are at most what an order can carry
# (chain.messages.MAX_PRICE: 100 currency units per kWh): above it, a feed-in price of 120 left no
# limit an order could be signed with (found in a QA pass). Fees and levies keep MAX_PRICE_PER_KWH.
LIMIT_PRICE_PARAMS = ("feed_in_price", "retail_price", "community_price")


def max_price_per_kwh(name: str, rules: int) -> int:
    """The largest value of price parameter ``name`` in a ledger with the bounds and ``rules``."""
    return MAX_ORDER_PRICE if rules >= 4 and name in LIMIT_PRICE_PARAMS else MAX_PRICE_PER_KWH


# Upper bounds in a ledger with rules 2 (genesis chain.rules; docs/market.md, "Parameter
# bounds"): each of these is kept in, or makes, the state every block carries, so a vote could
# otherwise make every node hold readings, orders or settlements without end (found in a QA pass:
# horizon_s, correction_window_intervals, settle_after_intervals and retention_s of 2**53 - 1 were
# taken). Each is far beyond what a community needs.
MAX_HORIZON_S = 7 * 86_400  # orders at most a week ahead (1 day by default)
MAX_KEPT_S = 62 * 86_400  # the correction window, the settlement delay and the grid operator's window
MAX_RETENTION_S = 10 * 366 * 86_400  # a departed member's payloads: ten years of record keeping
MAX_READING_CORRECTIONS = 100
MAX_ORDERS_PER_INTERVAL = 1_000


def check_params(params: dict[str, Any], bounded: bool = False, rules: int = 1) -> None:
    """Raise ValueError with a one-line reason if the market cannot run with ``params``;
    ``bounded`` (a ledger with the bounds, see chain.governance) also caps the prices, and with
    ``rules`` 2 the horizon, the kept windows, the retention and the two per-meter limits."""
    p = with_defaults(params)
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown market parameter(s): {', '.join(sorted(unknown))}")
    for name in INT_PARAMS:
        if type(p[name]) is not int or p[name] < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    for name in PRICE_PARAMS if bounded else ():
        most = max_price_per_kwh(name, rules)
        if p[name] > most:
            raise ValueError(f"{name} must be at most {most} micro-units per kWh")
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
    if p["settlement_source"] not in SETTLEMENT_SOURCES:
        raise ValueError(f"settlement_source must be one of {', '.join(SETTLEMENT_SOURCES)}")
    operators = gridops_operators(p)
    if p["settlement_source"] != METER and not operators:
        raise ValueError(
            f"settlement_source {p['settlement_source']!r} needs gridops_operators (who signs the data)"
        )
    if p["fee_rates_at"] not in FEE_RATES_AT:
        raise ValueError(f"fee_rates_at must be one of {', '.join(FEE_RATES_AT)}")
    limit = p["max_reading_corrections"]
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError("max_reading_corrections must be a non-negative integer")
    limit = p["max_orders_per_interval"]
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError("max_orders_per_interval must be a positive integer")
    if p["gridops_window_s"] < p["interval_s"]:
        raise ValueError("gridops_window_s must be at least one interval")
    if bounded and rules >= 2:
        _check_upper_bounds(p)
    least = p["settle_after_intervals"] + 2
    if rules >= 4 and p["correction_window_intervals"] < least:
        # a reading is taken until correction_window_intervals after its interval's start; an
        # interval's settlement needs its own reading and the one before it until it is due
        # (settle_after_intervals after its end): found in a QA pass, a window of 0 refused every
        # reading and 1 took one for 60 s, so no trade ever settled
        raise ValueError(
            f"correction_window_intervals must be at least settle_after_intervals + 2 ({least}), "
            "so the readings a settlement needs are taken until it is due"
        )


def _check_upper_bounds(p: dict[str, Any]) -> None:
    days = 86_400
    for name, value_s in (
        ("correction_window_intervals", p["correction_window_intervals"] * p["interval_s"]),
        ("settle_after_intervals", p["settle_after_intervals"] * p["interval_s"]),
        ("gridops_window_s", p["gridops_window_s"]),
    ):
        if value_s > MAX_KEPT_S:
            raise ValueError(
                f"{name} must span at most {MAX_KEPT_S // days} days (it spans {value_s // days})"
            )
    if p["horizon_s"] > MAX_HORIZON_S:
        raise ValueError(f"horizon_s must be at most {MAX_HORIZON_S} ({MAX_HORIZON_S // days} days)")
    if p["retention_s"] > MAX_RETENTION_S:
        raise ValueError(f"retention_s must be at most {MAX_RETENTION_S} (ten years)")
    for name, most in (
        ("max_reading_corrections", MAX_READING_CORRECTIONS),
        ("max_orders_per_interval", MAX_ORDERS_PER_INTERVAL),
    ):
        if p[name] is not None and p[name] > most:
            raise ValueError(f"{name} must be at most {most}")
