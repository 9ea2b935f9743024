"""`peerwatt clear FILE`: clear a JSON list of orders and print the trades as JSON.

Input: ``[{"id": "o1", "side": "sell", "energy_wh": 500, "limit_price": 110000}, ...]`` with an
optional ``"meter"`` (default: the id); an order's position is its index in the list. ``-``
reads standard input. Integers only (Wh, micro-units per kWh), each up to 2^53-1, and so is
every integer printed: orders whose trade's value, grid fee or levies, or whose cleared volume,
would exceed it are refused. Every bad input ends in one clear line (UserError), never a traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from chain.canonical import MAX_SAFE_INTEGER  # I-JSON / RFC 8785: integers on the wire within +-(2^53 - 1)
from market.clearing import COMMUNITY, MECHANISMS, ClearingResult, Order
from market.clearing import clear as clear_orders
from peerwatt.errors import UserError

REQUIRED_FIELDS = ("id", "side", "energy_wh", "limit_price")
OPTIONAL_FIELDS = ("meter",)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise UserError(f"orders file {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an orders file") from None
    except PermissionError:
        raise UserError(f"cannot read orders file {path}: permission denied") from None
    except UnicodeDecodeError:
        raise UserError(f"orders file {path} is not UTF-8 text") from None


def _parse_int_field(order: dict[str, Any], field: str, where: str, minimum: int) -> int:
    value = order[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(
            f"{where}: {field} must be an integer, got {json.dumps(value)} "
            "(energy in Wh, prices in micro-units per kWh)"
        )
    if not minimum <= value <= MAX_SAFE_INTEGER:
        raise UserError(f"{where}: {field} must be between {minimum} and 2^53-1, got {value}")
    return value


def parse_orders(text: str, source: str) -> list[Order]:
    """Parse the JSON text of an order list into Orders; UserError names the first problem."""
    try:
        data = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise UserError(f"{source} must hold a JSON list of orders, got {type(data).__name__}")
    orders: list[Order] = []
    seen: set[str] = set()
    for position, item in enumerate(data):
        where = f"order #{position}"
        if not isinstance(item, dict):
            raise UserError(f"{where} must be a JSON object, got {json.dumps(item)}")
        missing = [f for f in REQUIRED_FIELDS if f not in item]
        if missing:
            raise UserError(f"{where} is missing {', '.join(missing)}")
        unknown = sorted(set(item) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}")
        order_id, meter = item["id"], item.get("meter", item["id"])
        for field, value in (("id", order_id), ("meter", meter)):
            if not isinstance(value, str) or not value:
                raise UserError(f"{where}: {field} must be a non-empty string")
        where = f"order #{position} ({order_id})"
        if order_id in seen:
            raise UserError(f"{where}: duplicate id {order_id!r}")
        seen.add(order_id)
        if item["side"] not in ("sell", "buy"):
            raise UserError(f"{where}: side must be \"sell\" or \"buy\", got {json.dumps(item['side'])}")
        orders.append(
            Order(
                order_id=order_id,
                meter=meter,
                side=item["side"],
                energy_wh=_parse_int_field(item, "energy_wh", where, 0),
                limit_price=_parse_int_field(item, "limit_price", where, 0),
                position=position,
            )
        )
    return orders


def _parse_option_int(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        raise UserError(
            f"{name} must be a whole number of micro-units per kWh (0.12 EUR/kWh = 120000), "
            f"got {text!r}"
        ) from None
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise UserError(f"{name} must be between 0 and 2^53-1, got {value}")
    return value


def check_fits(result: ClearingResult) -> None:
    """UserError unless every integer the result prints is at most 2^53-1 (what canonical JSON
    and I-JSON allow): inputs each within it can multiply past it (a trade's value is its energy
    times its price / 1000). Names the first trade's two orders, or the total volume."""
    for t in result.trades:
        for field in ("value", "grid_fee", "levies"):
            amount = getattr(t, field)
            if amount > MAX_SAFE_INTEGER:
                raise UserError(
                    f"orders {t.sell_order} and {t.buy_order}: their trade of {t.energy_wh} Wh would have "
                    f"a {field} of {amount} µ, more than 2^53-1 (the largest integer the output may "
                    "hold); clear less energy, at lower prices or fees"
                )
    if result.volume_wh > MAX_SAFE_INTEGER:
        raise UserError(
            f"the cleared volume would be {result.volume_wh} Wh, more than 2^53-1, the largest integer "
            "the output may hold; clear fewer or smaller orders"
        )


def result_to_json(result: ClearingResult) -> dict[str, Any]:
    """The printed form of a clearing result."""
    return {
        "mechanism": result.mechanism,
        "price": result.price,
        "volume_wh": result.volume_wh,
        "trades": [asdict(t) for t in result.trades],
    }


@click.command()
@click.argument("file", metavar="FILE")
@click.option(
    "--mechanism",
    default="uniform",
    show_default=True,
    metavar="|".join(MECHANISMS),
    help="Clearing mechanism.",
)
@click.option("--price", "price_text", metavar="P",
              help="Community price in micro-units per kWh (required by --mechanism community).")
@click.option("--grid-fee", "grid_fee_text", metavar="F", default="0", show_default=True,
              help="Grid fee per kWh traded, micro-units, charged to the buyer.")
@click.option("--levies", "levies_text", metavar="L", default="0", show_default=True,
              help="Levies per kWh traded, micro-units, charged to the buyer.")
def clear(
    file: str, mechanism: str, price_text: str | None, grid_fee_text: str, levies_text: str
) -> None:
    """Clear the orders in FILE (a JSON list; - reads stdin) and print the result as JSON.

    Each order: {"id", "side": "sell"|"buy", "energy_wh", "limit_price"} and optionally
    "meter" (default: the id). Energy in Wh, prices in micro-units per kWh (0.12 EUR/kWh =
    120000), money in micro-units; the list index is the order's arrival position.
    """
    if mechanism not in MECHANISMS:
        raise UserError(f"unknown --mechanism {mechanism!r}; use one of {', '.join(MECHANISMS)}")
    community_price = _parse_option_int("--price", price_text)
    if mechanism == COMMUNITY and community_price is None:
        raise UserError("--mechanism community needs --price P (micro-units per kWh)")
    if mechanism != COMMUNITY and community_price is not None:
        raise UserError(f"--price applies only to --mechanism community, not {mechanism}")
    grid_fee = _parse_option_int("--grid-fee", grid_fee_text)
    levies = _parse_option_int("--levies", levies_text)
    source = "standard input" if file == "-" else file
    orders = parse_orders(_read_text(file), source)
    try:
        result = clear_orders(
            orders,
            mechanism,
            community_price=community_price,
            grid_fee_per_kwh=grid_fee or 0,
            levies_per_kwh=levies or 0,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_fits(result)
    click.echo(json.dumps(result_to_json(result), indent=2))
