"""A statement's grid fee and levies lines name the rate their amounts were charged at, so each
line's amount is its energy times its rate (docs/billing.md, "What a statement shows").

Found in a QA pass: on a ledger without ``fee_rates_at`` (the old default, "settlement") a fee
raised by vote between a trade's clearing and its settlement was charged at the new rate, and the
statement's line named the old one ('grid_fees@20000', 800 Wh, amount -24000: the 30000 rate).
"""

from __future__ import annotations

from pathlib import Path

from market.app import MarketApp
from market.billing import VatSetting, member_statement
from market.money import value_micro
from peerwatt.statements import ledger_view, period_bounds
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, PARAMS, T0, order, reading


def _set_fee(c: LocalCommunity, value: int, t: int) -> None:
    body = {"action": "set_param", "args": {"name": "grid_fee_per_kwh", "value": value}, "deadline": t + 3600}
    p = c.members[0].sign(c.community, "propose", body, created=t)
    votes = [
        m.sign(c.community, "vote", {"proposal": p.tx_hash.hex(), "vote": "yes"}, created=t)
        for m in c.members[1:3]
    ]
    c.run_block([p, *votes], t)
    assert c.ledgers[0].state["chain"]["params"]["grid_fee_per_kwh"] == value


def _fee_lines(c: LocalCommunity) -> list[tuple[str, int, int, int]]:
    """The buyer's (member 2's) fee and levies lines: (code, energy_wh, rate, amount)."""
    start, end = period_bounds("2025-11", "UTC")
    st = member_statement(
        ledger_view(c.ledgers[0].store),
        c.members[2].id,
        period="2025-11",
        start=start,
        end=end,
        vat=VatSetting(False, 0, "n"),
    )
    assert st["net"] == st["balance"]["period"]
    lines = [
        (line["code"], line["energy_wh"], line["rate"], line["amount"])
        for line in st["lines"]
        if line["code"].startswith(("grid_fees@", "levies@"))
    ]
    for _code, wh, rate, amount in lines:
        assert amount == -value_micro(wh, rate)
    return lines


def _community(tmp_path: Path, **params) -> LocalCommunity:
    """Member 0 sells 1000 Wh to member 2 in I1; the grid fee is raised to 30,000 by vote after
    the gate closed and before the readings settle the trade."""
    c = make_community(validators=1, members=4, app="market", app_params={**PARAMS, **params}, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    t = T0 + 10
    c.run_block([order(c, 0, "sell", 1000, 90_000, t), order(c, 2, "buy", 1000, 200_000, t)], t)
    c.run_block([], I1 - 300)  # gate closure: cleared at 20,000
    _set_fee(c, 30_000, I1 - 200)
    t = I1 + 905
    c.run_block(
        [
            reading(c, 0, I1 - 900, 0, 0, t),
            reading(c, 0, I1, 0, 1000, t),
            reading(c, 2, I1 - 900, 0, 0, t),
            reading(c, 2, I1, 2000, 0, t),
        ],
        t,
    )
    return c


def test_old_ledger_lines_name_the_rate_charged(tmp_path: Path) -> None:
    c = _community(tmp_path)  # no fee_rates_at: settled at the rates in force then
    assert _fee_lines(c) == [("grid_fees@30000", 1000, 30_000, -30_000), ("levies@5000", 1000, 5_000, -5_000)]
    # the fee set to 0, then a correction that changes no energy re-prices the trade at 0
    t = I1 + 1000
    _set_fee(c, 0, t)
    c.run_block([reading(c, 2, I1, 2001, 0, t + 20)], t + 20)
    assert _fee_lines(c) == [("grid_fees@0", 1000, 0, 0), ("levies@5000", 1000, 5_000, -5_000)]


def test_rates_kept_at_clearing_are_the_lines_rates(tmp_path: Path) -> None:
    c = _community(tmp_path / "kept", fee_rates_at="clearing")
    lines = [("grid_fees@20000", 1000, 20_000, -20_000), ("levies@5000", 1000, 5_000, -5_000)]
    assert _fee_lines(c) == lines
    t = I1 + 1000
    _set_fee(c, 0, t)
    c.run_block([reading(c, 2, I1, 2001, 0, t + 20)], t + 20)
    assert _fee_lines(c) == lines
