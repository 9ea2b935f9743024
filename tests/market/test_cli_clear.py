"""`peerwatt clear` run as the real command in a subprocess, plus its JSON parsing in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peerwatt.commands.clear import parse_orders
from peerwatt.errors import UserError

ORDERS = [
    {"id": "a1", "side": "sell", "energy_wh": 100, "limit_price": 100_000},
    {"id": "a2", "side": "sell", "energy_wh": 200, "limit_price": 120_000, "meter": "m-a2"},
    {"id": "b1", "side": "buy", "energy_wh": 150, "limit_price": 180_000},
    {"id": "b2", "side": "buy", "energy_wh": 100, "limit_price": 150_000},
]


def peerwatt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def orders_file(tmp_path: Path) -> Path:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(ORDERS), encoding="utf-8")
    return path


def test_clear_prints_the_result_as_json(orders_file: Path) -> None:
    run = peerwatt("clear", str(orders_file), "--grid-fee", "30000", "--levies", "5000")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "mechanism": "uniform",
        "price": 135_000,
        "volume_wh": 250,
        "trades": [
            {
                "seller": "a1",
                "buyer": "b1",
                "sell_order": "a1",
                "buy_order": "b1",
                "energy_wh": 100,
                "price": 135_000,
                "value": 13_500,
                "grid_fee": 3_000,
                "levies": 500,
            },
            {
                "seller": "m-a2",
                "buyer": "b1",
                "sell_order": "a2",
                "buy_order": "b1",
                "energy_wh": 50,
                "price": 135_000,
                "value": 6_750,
                "grid_fee": 1_500,
                "levies": 250,
            },
            {
                "seller": "m-a2",
                "buyer": "b2",
                "sell_order": "a2",
                "buy_order": "b2",
                "energy_wh": 100,
                "price": 135_000,
                "value": 13_500,
                "grid_fee": 3_000,
                "levies": 500,
            },
        ],
    }


def test_clear_reads_stdin_with_community_price() -> None:
    run = peerwatt("clear", "-", "--mechanism", "community", "--price", "150000", stdin=json.dumps(ORDERS))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["mechanism"], result["price"], result["volume_wh"]) == ("community", 150_000, 250)
    assert sum(t["energy_wh"] for t in result["trades"]) == 250


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("clear", "-"), '[{"id": "a", "side": "sell", "energy_wh": 1,', "is not valid JSON"),
        (("clear", "-"), '[{"id": "a", "side": "sell", "limit_price": 1}]', "order #0 is missing energy_wh"),
        (
            ("clear", "-"),
            '[{"id": "a", "side": "sell", "energy_wh": 1.5, "limit_price": 1}]',
            "energy_wh must be an integer, got 1.5",
        ),
        (("clear", "-", "--mechanism", "community"), "[]", "needs --price"),
        (("clear", "-", "--price", "5"), "[]", "--price applies only to --mechanism community"),
        (("clear", "-", "--mechanism", "auction"), "[]", "unknown --mechanism 'auction'"),
        (("clear", "/nonexistent/orders.json"), "", "not found"),
    ],
)
def test_clear_errors_are_one_line(args: tuple[str, ...], stdin: str, message: str) -> None:
    run = peerwatt(*args, stdin=stdin)
    assert run.returncode != 0
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a"}', "must hold a JSON list of orders"),
        ("[1]", "order #0 must be a JSON object"),
        (
            '[{"id": "a", "side": "sell", "energy_wh": 1, "limit_price": 1, "colour": "red"}]',
            "unknown field(s) colour",
        ),
        ('[{"id": "a", "side": "hold", "energy_wh": 1, "limit_price": 1}]', 'side must be "sell"'),
        ('[{"id": "a", "side": "sell", "energy_wh": -1, "limit_price": 1}]', "between 0 and"),
        (
            '[{"id": "a", "side": "sell", "energy_wh": true, "limit_price": 1}]',
            "energy_wh must be an integer, got true",
        ),
        (
            '[{"id": "a", "side": "sell", "energy_wh": 1, "limit_price": 1e5}]',
            "limit_price must be an integer",
        ),
        (
            '[{"id": "a", "side": "sell", "energy_wh": 9007199254740992, "limit_price": 1}]',
            "between 0 and 2^53-1",
        ),
        ('[{"id": "a", "side": "sell", "energy_wh": NaN, "limit_price": 1}]', "not valid JSON"),
        ('[{"id": "a", "id": "b", "side": "sell", "energy_wh": 1, "limit_price": 1}]', "duplicate key 'id'"),
        ('[{"id": 7, "side": "sell", "energy_wh": 1, "limit_price": 1}]', "id must be a non-empty string"),
        (
            '[{"id": "a", "side": "sell", "energy_wh": 1, "limit_price": 1},'
            ' {"id": "a", "side": "buy", "energy_wh": 1, "limit_price": 1}]',
            "duplicate id 'a'",
        ),
    ],
)
def test_parse_orders_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_orders(text, "orders.json")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parse_orders_positions_and_default_meter() -> None:
    orders = parse_orders(json.dumps(ORDERS), "orders.json")
    assert [(o.order_id, o.meter, o.position) for o in orders] == [
        ("a1", "a1", 0),
        ("a2", "m-a2", 1),
        ("b1", "b1", 2),
        ("b2", "b2", 3),
    ]
