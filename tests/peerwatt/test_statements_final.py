"""A statement is final only when nothing after its period can be billed: the member is removed
and none of its meters is active after the period (docs/billing.md, "Final statement").

Found in a QA pass: a removed member whose meter was not revoked (``remove_member`` alone leaves
the meters trading, docs/governance.md) got a final statement for November and another final
one, with new money, for December.
"""

from __future__ import annotations

from pathlib import Path

from market.app import MarketApp
from market.billing import VatSetting, member_statement, members_to_bill
from peerwatt.statements import (
    issue_corrections,
    issue_period,
    ledger_view,
    period_bounds,
    verify_file,
    write_files,
)
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import PARAMS, T0, order, reading

DEC = 1_764_547_200  # 2025-12-01T00:00Z; T0 is in November 2025
JAN = 1_767_225_600  # 2026-01-01T00:00Z
FEB = 1_769_904_000  # 2026-02-01T00:00Z


def _pass(c: LocalCommunity, action: str, args: dict, t: int) -> None:
    """Propose ``action`` (a member's matter by members, a meter's by the validator) and pass it."""
    body = {"action": action, "args": args, "deadline": t + 3600}
    proposer = c.validators[0] if action.endswith("_meter") else c.members[1]
    p = proposer.sign(c.community, "propose", body, created=t)
    voters = [
        m.sign(c.community, "vote", {"proposal": p.tx_hash.hex(), "vote": "yes"}, created=t)
        for m in (() if action.endswith("_meter") else c.members[2:4])
    ]
    b = c.run_block([p, *voters], t)
    assert any(r.get("outcome") == "passed" for r in b.results if r["kind"] == "gov"), b.results


def _trade(c: LocalCommunity, interval: int) -> None:
    """Member 0's meter sells 1000 Wh to member 2's in ``interval``, settled."""
    t = interval - 3600
    b = c.run_block(
        [
            order(c, 0, "sell", 1000, 90_000, t, interval=interval),
            order(c, 2, "buy", 1000, 200_000, t, interval=interval),
        ],
        t,
    )
    assert all(r["status"] == "ok" for r in b.results if r["kind"] == "tx"), b.results
    c.run_block([], interval - 300)
    t = interval + 905
    c.run_block(
        [
            reading(c, 0, interval - 900, 0, 0, t),
            reading(c, 0, interval, 0, 1000, t),
            reading(c, 2, interval - 900, 0, 0, t),
            reading(c, 2, interval, 1000, 0, t),
        ],
        t,
    )


def _statement(c: LocalCommunity, member: str, period: str) -> dict:
    start, end = period_bounds(period, "UTC")
    view = ledger_view(c.ledgers[0].store)
    return member_statement(view, member, period=period, start=start, end=end, vat=VatSetting(False, 0, "n"))


def test_removed_member_with_an_active_meter_is_not_final(tmp_path: Path) -> None:
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    seller = c.members[0].id
    _pass(c, "remove_member", {"member": seller}, T0 + 5)
    _trade(c, T0 + 7200)
    _trade(c, DEC + 3600)  # its meter still trades in December
    nov, dec = _statement(c, seller, "2025-11"), _statement(c, seller, "2025-12")
    assert (nov["final"], nov["net"]) == (False, 145_000)  # 1000 Wh at 145k (the bids' midpoint)
    assert (dec["final"], dec["net"]) == (False, 145_000)
    # its meter revoked in January: January's statement is the final one
    _pass(c, "revoke_meter", {"meter": c.meters[0].id}, JAN + 3600)
    assert _statement(c, seller, "2026-01")["final"]
    assert not _statement(c, seller, "2025-12")["final"]  # the meter was active after December


def test_member_with_every_meter_revoked_but_not_removed_is_not_final(tmp_path: Path) -> None:
    """It stays a member: a new meter may be enrolled for it and billed (a meter replaced)."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    _trade(c, T0 + 7200)
    _pass(c, "revoke_meter", {"meter": c.meters[0].id}, T0 + 3 * 3600)
    nov = _statement(c, c.members[0].id, "2025-11")
    assert nov["meters"][0]["billed_to"] == T0 + 3 * 3600
    assert not nov["final"]
    _pass(c, "remove_member", {"member": c.members[0].id}, DEC + 100)
    assert _statement(c, c.members[0].id, "2025-11")["final"]  # removed since: nothing more is billed


def test_a_member_admitted_again_is_not_final(tmp_path: Path) -> None:
    """Removed, then admitted again with the same key: a member once more (a meter may be
    enrolled for it), so its statements are not final (found in a review: ``removed`` was never
    taken back, and the re-admitted member stayed final)."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    member = c.members[0]
    _trade(c, T0 + 7200)
    _pass(c, "revoke_meter", {"meter": c.meters[0].id}, T0 + 3 * 3600)
    _pass(c, "remove_member", {"member": member.id}, T0 + 4 * 3600)
    assert _statement(c, member.id, "2025-11")["final"]
    _pass(c, "add_member", {"key": member.sec1_hex, "name": "back again"}, DEC + 100)
    assert not _statement(c, member.id, "2025-11")["final"]


def test_a_member_removed_in_a_month_with_nothing_to_bill_gets_a_final_statement(tmp_path: Path) -> None:
    """Its meters revoked in November and November's statement issued before the removal (so not
    final: still a member), removed in December: December has nothing to bill, but the household
    gets its final statement there (found in a review: before, no statement of it was ever final),
    and no statement the month after."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    member = c.members[0].id
    store, billing = c.ledgers[0].store, tmp_path / "billing"
    _trade(c, T0 + 7200)
    _pass(c, "revoke_meter", {"meter": c.meters[0].id}, T0 + 3 * 3600)
    c.run_block([], DEC + 60)
    nov = issue_period(store, billing, "2025-11", issued_at="2025-12-01T00:02:00Z")
    assert [d["final"] for d in nov if d["member"] == member] == [False]
    _pass(c, "remove_member", {"member": member}, DEC + 3600)
    c.run_block([], JAN + 60)
    start, end = period_bounds("2025-12", "UTC")
    assert member not in members_to_bill(ledger_view(store), start, end)  # nothing to bill
    docs = issue_period(store, billing, "2025-12", issued_at="2026-01-01T00:05:00Z")
    (dec,) = [d for d in docs if d["member"] == member]
    assert (dec["final"], dec["net"], dec["meters"]) == (True, 0, [])
    (pdf,) = [p for p in write_files([dec], tmp_path / "out") if p.suffix == ".pdf"]
    assert verify_file(store, pdf)[1] == []  # written, read back and re-derived: no difference
    c.run_block([], FEB + 60)
    jan = issue_period(store, billing, "2026-01", issued_at="2026-02-01T00:05:00Z")
    assert member not in {d["member"] for d in jan}  # not again the month after


def test_a_member_whose_final_statement_was_issued_gets_no_second_one(tmp_path: Path) -> None:
    """November issued after the removal (1 December) is final already: December, issued or
    corrected, brings no second final statement (found in an update pass of the change above)."""
    c = make_community(validators=1, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    member = c.members[0].id
    store, billing = c.ledgers[0].store, tmp_path / "billing"
    _trade(c, T0 + 7200)
    _pass(c, "revoke_meter", {"meter": c.meters[0].id}, T0 + 3 * 3600)
    _pass(c, "remove_member", {"member": member}, DEC + 3600)
    c.run_block([], DEC + 7200)
    nov = issue_period(store, billing, "2025-11", issued_at="2025-12-01T03:00:00Z")
    assert [d["final"] for d in nov if d["member"] == member] == [True]
    c.run_block([], JAN + 60)
    dec = issue_period(store, billing, "2025-12", issued_at="2026-01-01T00:05:00Z")
    assert member not in {d["member"] for d in dec}
    notes = issue_corrections(store, billing, "2025-12", issued_at="2026-01-02T00:05:00Z")
    assert member not in {d["member"] for d in notes}
