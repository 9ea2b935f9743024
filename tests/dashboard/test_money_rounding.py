"""Issue 17 item 4: the money lines shown add up to the shown totals (whole cents by the
largest-remainder method); the ledger's integers stay exact in the API."""

from __future__ import annotations

import re

import pytest

from dashboard import units
from dashboard.units import largest_remainder, shown_statement


def _statement(baseline_import: int, baseline_export: int, **lines: int) -> dict[str, int]:
    s = {"p2p_cost": 0, "grid_fees": 0, "levies": 0, "residual_import_cost": 0, "p2p_earnings": 0}
    s["residual_export_earnings"] = 0
    s.update(lines)
    s["baseline_import_cost"], s["baseline_export_earnings"] = baseline_import, baseline_export
    s["baseline_cost"] = baseline_import - baseline_export
    s["actual_cost"] = (
        s["p2p_cost"]
        + s["grid_fees"]
        + s["levies"]
        + s["residual_import_cost"]
        - s["p2p_earnings"]
        - s["residual_export_earnings"]
    )
    s["savings"] = s["baseline_cost"] - s["actual_cost"]
    return s


def test_the_issue_example_adds_up():
    # baseline −€0.0154 and actual cost −€0.0146 were shown as −€0.02 and −€0.01 with savings €0.00
    s = _statement(0, 15_400, p2p_earnings=14_600)
    assert (units.money(s["baseline_cost"]), units.money(s["actual_cost"]), units.money(s["savings"])) == (
        "\u2212\u20ac0.02",
        "\u2212\u20ac0.01",
        "\u20ac0.00",
    )
    m = shown_statement(s)
    assert m["savings"] == 0 and m["baseline_cost"] - m["actual_cost"] == m["savings"]
    assert m["baseline_cost"] == m["baseline_import_cost"] - m["baseline_export_earnings"]
    assert m["actual_cost"] == -m["p2p_earnings"]
    assert {units.money(m["baseline_cost"]), units.money(m["actual_cost"])} == {"\u2212\u20ac0.01"}


def test_largest_remainder():
    assert largest_remainder([3_300, 3_300, 3_400], 10_000) == [0, 0, 10_000]
    assert largest_remainder([5_000, 5_000], 10_000) == [10_000, 0]  # equal remainders: in order
    assert largest_remainder([-15_400, 14_600], 0) == [-10_000, 10_000]
    assert largest_remainder([20_000, -6_000], 10_000) == [20_000, -10_000]  # exact parts stay
    with pytest.raises(ValueError):
        largest_remainder([1, 1], 30_000)


@pytest.mark.parametrize("seed", range(200))
def test_shown_lines_always_add_up(seed):
    import random

    rng = random.Random(seed)
    vals = {
        k: rng.randrange(0, 60_000)
        for k in (
            "p2p_cost",
            "grid_fees",
            "levies",
            "residual_import_cost",
            "p2p_earnings",
            "residual_export_earnings",
        )
    }
    s = _statement(rng.randrange(0, 90_000), rng.randrange(0, 90_000), **vals)
    m = shown_statement(s)
    assert all(v % 10_000 == 0 for v in m.values())
    assert all(abs(m[k] - s[k]) < 10_000 for k in m)  # each line is its value rounded down or up
    assert m["savings"] == m["baseline_cost"] - m["actual_cost"]
    assert m["baseline_cost"] == m["baseline_import_cost"] - m["baseline_export_earnings"]
    assert m["actual_cost"] == (
        m["p2p_cost"]
        + m["grid_fees"]
        + m["levies"]
        + m["residual_import_cost"]
        - m["p2p_earnings"]
        - m["residual_export_earnings"]
    )


MONEY = re.compile(r"(\u2212?)\u20ac([\d,]+)\.(\d\d)")


def _cents(text: str) -> int:
    sign, whole, frac = MONEY.search(text).groups()
    return (-1 if sign else 1) * (int(whole.replace(",", "")) * 100 + int(frac))


def _page_lines(html: str) -> list[tuple[str, int]]:
    table = html.split('id="statement"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<th scope=\"row\">(.*?)</th><td[^>]*>(.*?)</td>", table, re.S)
    return [(head, _cents(cell)) for head, cell in rows]


@pytest.mark.parametrize(
    "view,dates",
    [
        ("day", ["2025-06-02", "2025-06-03", "2025-06-04", "2025-06-05"]),
        ("month", ["2025-06-01"]),
        ("year", ["2025-01-01"]),
    ],
)
def test_household_page_money_adds_up(as_admin, built, view, dates):
    for meter in built.meters:
        for day in dates:
            html = as_admin.get(f"/household/{meter}?view={view}&date={day}").get_data(as_text=True)
            if 'id="statement"' not in html:
                continue
            lines = _page_lines(html)
            (earn, cost, fees, levies, supply, feed_in, actual, baseline, savings) = (c for _, c in lines)
            assert actual == cost + fees + levies + supply - earn - feed_in, (meter, day, lines)
            assert savings == baseline - actual, (meter, day, lines)
            at_retail, at_feed_in = (_cents(m.group(0)) for m in MONEY.finditer(lines[7][0]))
            assert baseline == at_retail - at_feed_in, (meter, day, lines)
