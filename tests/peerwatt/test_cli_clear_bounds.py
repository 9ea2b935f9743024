"""`peerwatt clear` refuses orders whose clearing would print an integer above 2^53-1, in one
line naming the orders and why: each input is within 2^53-1 (docs/market.md), but a trade's value
is its energy times its price. Found in a QA pass: it printed ``"value":
81129638414606663681390495662``, which the project's canonical JSON refuses."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from peerwatt.cli import cli
from peerwatt.errors import UserError

MAX = 2**53 - 1


def _clear(tmp_path: Path, orders: list[dict], *options: str):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(orders), encoding="utf-8")
    return CliRunner().invoke(cli, ["clear", str(path), *options])


def _order(order_id: str, side: str, energy_wh: int, limit_price: int) -> dict:
    return {"id": order_id, "side": side, "energy_wh": energy_wh, "limit_price": limit_price}


def test_a_trade_value_above_2_53_is_refused_naming_its_orders(tmp_path: Path) -> None:
    res = _clear(tmp_path, [_order("a", "sell", MAX, MAX), _order("b", "buy", MAX, MAX)])
    assert isinstance(res.exception, UserError), res.output
    message = str(res.exception)
    assert "\n" not in message and res.output == ""
    assert message.startswith("orders a and b: their trade of 9007199254740991 Wh would have a value of ")
    assert "81129638414606663681390495662 µ, more than 2^53-1" in message


def test_a_grid_fee_above_2_53_is_refused(tmp_path: Path) -> None:
    orders = [_order("s", "sell", MAX, 1_000), _order("b", "buy", MAX, 1_000)]
    res = _clear(tmp_path, orders, "--grid-fee", str(MAX))
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception).startswith(
        "orders s and b: their trade of 9007199254740991 Wh would have a grid_fee"
    )


def test_a_volume_above_2_53_is_refused(tmp_path: Path) -> None:
    orders = [_order(f"s{i}", "sell", MAX, 0) for i in range(2)] + [
        _order(f"b{i}", "buy", MAX, 0) for i in range(2)
    ]
    res = _clear(tmp_path, orders)
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception).startswith(f"the cleared volume would be {2 * MAX} Wh, more than 2^53-1")


def test_the_largest_trade_that_fits_is_printed(tmp_path: Path) -> None:
    price = 1_000  # µ/kWh: the value (energy * price / 1000) is 2^53-1 µ exactly
    res = _clear(tmp_path, [_order("a", "sell", MAX, price), _order("b", "buy", MAX, price)])
    assert res.exit_code == 0, res.output
    (trade,) = json.loads(res.output)["trades"]
    assert trade["value"] == MAX
