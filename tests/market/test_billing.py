"""market.billing on a hand-made ledger view: membership windows, rates, VAT, shown cents, notes."""

from __future__ import annotations

import random

import pytest

from market.billing import (
    LedgerView,
    MeterInfo,
    VatSetting,
    billed_window,
    correction_note,
    member_statement,
    shown_parts,
)
from market.params import with_defaults

DAY = 86_400
T = 1_780_272_000  # 2026-06-01 UTC
PARAMS = with_defaults({"interval_s": DAY, "correction_window_intervals": 1, "grid_fee_per_kwh": 20_000})


def view(**changes) -> LedgerView:
    meters = {
        "s": MeterInfo("s", "alice", "roof", "S1", 10_000, T - DAY),
        "b": MeterInfo("b", "bob", "flat", "B1", 10_000, T + 2 * DAY, T + 4 * DAY),
    }
    readings = {
        "s": {T + i * DAY: (100 * (i + 1), 1_000 * (i + 1), "S1") for i in range(-1, 6)},
        "b": {T + i * DAY: (2_000 * (i + 1), 0, "B1") for i in range(-1, 6)},
    }
    settlements = [
        {
            "interval": T + 2 * DAY,
            "trade": "x:y",
            "seller": "s",
            "buyer": "b",
            "energy_wh": 900,
            "settled_wh": 900,
            "value": 90_000,
            "grid_fee": 18_000,
            "levies": 0,
            "status": "settled",
            "flag": None,
            "height": 5,
        }
    ]
    trades = [{"interval": T + 2 * DAY, "sell_order": "x", "buy_order": "y", "energy_wh": 900, "height": 3}]
    balances = [
        {"interval": T + 2 * DAY, "account": "alice", "delta": 90_000, "height": 5},
        {"interval": T + 2 * DAY, "account": "bob", "delta": -108_000, "height": 5},
    ]
    base = {
        "community": "c",
        "timezone": "UTC",
        "height": 9,
        "block_hash": "ab" * 32,
        "block_time": T + 7 * DAY,
        "params": PARAMS,
        "param_history": [(0, dict(PARAMS))],
        "members": {"alice": "Alice", "bob": "Bob"},
        "removed_members": {},
        "meters": meters,
        "readings": readings,
        "trades": trades,
        "settlements": settlements,
        "balances": balances,
    }
    base.update(changes)
    return LedgerView(**base)


def test_membership_window_bounds_the_metered_energy() -> None:
    v = view()
    bob = member_statement(
        v, "bob", period="2026-06", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")
    )
    # enrolled at the start of day 3, revoked at the start of day 5: days 3 and 4 only
    assert billed_window(v.meters["b"], T, T + 30 * DAY) == (T + 2 * DAY, T + 4 * DAY)
    assert bob["energy"]["import_wh"] == 4_000
    assert not bob["final"]  # still a member: a meter may be enrolled for it again
    removed = view(removed_members={"bob": T + 4 * DAY})
    assert member_statement(
        removed, "bob", period="2026-06", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")
    )["final"]
    assert bob["total"] == bob["balance"]["period"] == -108_000
    assert [(line["code"], line["rate"], line["amount"]) for line in bob["lines"]] == [
        ("p2p_earnings", None, 0),
        ("p2p_cost", 100_000, -90_000),
        ("grid_fees@20000", 20_000, -18_000),
        ("levies@0", 0, 0),
    ]
    alice = member_statement(
        v, "alice", period="2026-06", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")
    )
    assert alice["energy"]["export_wh"] == 6_000  # days 1 to 6: the last reading is at the end of day 6
    assert alice["sold_to"] == [
        {
            "member": "bob",
            "name": "Bob",
            "energy_wh": 900,
            "amount": 90_000,
            "provisional": 0,
            "avg_price": 100_000,
        }
    ]
    assert not alice["final"]


def test_the_rate_in_force_when_the_trade_cleared() -> None:
    history = [
        (0, dict(PARAMS)),
        (2, {**PARAMS, "grid_fee_per_kwh": 20_000}),
        (4, {**PARAMS, "grid_fee_per_kwh": 1}),
    ]
    bob = member_statement(
        view(param_history=history),
        "bob",
        period="p",
        start=T,
        end=T + 30 * DAY,
        vat=VatSetting(False, 0, "n"),
    )
    assert "grid_fees@20000" in {line["code"] for line in bob["lines"]}


def test_vat_and_provisional() -> None:
    v = view(block_time=T + 3 * DAY)  # day 3 may still be corrected
    bob = member_statement(v, "bob", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(True, 2000, ""))
    assert bob["vat"]["amount"] == -21_600 and bob["total"] == -129_600
    assert bob["provisional"] == -108_000
    assert bob["shown"]["total"] == -130_000
    assert bob["shown"]["net"] + bob["shown"]["vat"] == bob["shown"]["total"]


def test_shown_parts_add_up() -> None:
    rng = random.Random(7)
    for _ in range(300):
        parts = [rng.randint(-5_000_000, 5_000_000) for _ in range(rng.randint(1, 6))]
        total = sum(parts)
        rounded = (abs(total) + 5_000) // 10_000 * 10_000 * (1 if total >= 0 else -1)
        try:
            shown = shown_parts(parts, rounded)
        except ValueError:
            continue  # a half-up rounding of a tie may lie outside; the statement uses half-even
        assert sum(shown) == rounded
        assert all(abs(s - p) < 10_000 for s, p in zip(shown, parts, strict=True))
    assert shown_parts([10_000, 5_000, 5_000], 20_000) == [10_000, 10_000, 0]
    with pytest.raises(ValueError):
        shown_parts([1, 2], 30_000)


def test_correction_note_references_the_original_and_chains() -> None:
    v = view()
    original = dict(
        member_statement(v, "bob", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")),
        number="c-p-0001",
        issued_at="d",
    )
    changed = view(settlements=[dict(v.settlements[0], value=45_000, settled_wh=450, grid_fee=9_000)])
    now = member_statement(
        changed, "bob", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, "n")
    )
    note = correction_note(original, now, number="c-p-0003", issued_at="e")
    assert note is not None
    assert (note["kind"], note["references"], note["total"]) == ("credit_note", "c-p-0001", 54_000)
    assert note["deltas"]["p2p_cost"] == 45_000 and note["deltas"]["grid_fees@20000"] == 9_000
    # a second note compares with the first note's figures and still references the original
    assert correction_note(note, now, number="c-p-0004", issued_at="f") is None
    assert correction_note(original, original, number="x", issued_at="f") is None


def test_intervals_without_their_readings_are_flagged_and_counted() -> None:
    """Found in a QA pass (the report had it too): an interval without its two readings was left
    out of a statement's metered energy in silence, so a dead meter's household was billed a
    smaller import with nothing saying so."""
    readings = view().readings
    # alice's meter: day 3's reading lost (days 3 and 4 lack one of their two), silent after day 5
    s = {i: r for i, r in readings["s"].items() if i not in (T + 2 * DAY, T + 5 * DAY)}
    v = view(readings={**readings, "s": s})
    alice = member_statement(v, "alice", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, ""))
    assert alice["format"] == 2
    assert alice["flags"] == [
        f"s:missing_reading@{T + 2 * DAY}..{T + 3 * DAY}",
        f"s:missing_reading@{T + 5 * DAY}",  # bob's meter read day 6: alice's should have too
    ]
    assert alice["meters"][0]["intervals_left_out"] == 3
    assert alice["energy"]["export_wh"] == 3_000  # days 1, 2 and 5 (day 6's reading is gone)
    assert any("3 interval(s) not billed" in n for n in alice["notes"])
    # a statement issued in the first layout is re-derived in it: no such flags, fields or notes
    old = member_statement(
        v, "alice", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, ""), layout=1
    )
    assert old["format"] == 1 and old["flags"] == [] and old["notes"] == []
    assert "intervals_left_out" not in old["meters"][0]
    assert old["energy"] == alice["energy"] and old["lines"] == alice["lines"]
    with pytest.raises(ValueError, match="statement format 3"):
        member_statement(v, "alice", period="p", start=T, end=T + DAY, vat=VatSetting(False, 0, ""), layout=3)


def test_a_meter_enrolled_mid_period_is_expected_from_its_first_reading() -> None:
    """Nothing is flagged before a meter's first reading (its baseline) or outside its
    membership: bob's meter joined on day 3 and left at the start of day 5."""
    v = view()
    bob = member_statement(v, "bob", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, ""))
    assert bob["flags"] == [] and bob["meters"][0]["intervals_left_out"] == 0
    late = {**v.meters, "s": MeterInfo("s", "alice", "roof", "S1", 10_000, T + 2 * DAY + 600)}
    readings = {**v.readings, "s": {i: r for i, r in v.readings["s"].items() if i >= T + 3 * DAY}}
    alice = member_statement(
        view(meters=late, readings=readings),
        "alice",
        period="p",
        start=T,
        end=T + 30 * DAY,
        vat=VatSetting(False, 0, ""),
    )
    assert alice["flags"] == [] and alice["energy"]["export_wh"] == 2_000  # days 5 and 6


def test_a_meter_without_any_record_is_flagged_from_its_window_start() -> None:
    """Found in a QA pass: a meter that never sent a reading (or, under the grid operator's data,
    had no row) was billed 0 kWh with nothing left out: the count started at its first record."""
    v = view(readings={**view().readings, "s": {}})
    alice = member_statement(v, "alice", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, ""))
    # enrolled before the period: every interval of it up to the last one read (bob's, day 6)
    assert alice["flags"] == [f"s:missing_reading@{T}..{T + 5 * DAY}"]
    assert alice["meters"][0]["intervals_left_out"] == 6 and alice["energy"]["import_wh"] == 0
    # the grid operator's data covers an interval by itself: expected from the window's start
    gridops = {**PARAMS, "settlement_source": "gridops", "gridops_operators": ["op"]}
    data = {"b": {T + i * DAY: (10, 0, "measured") for i in range(2, 4)},
            "s": {T + i * DAY: (0, 10, "measured") for i in range(3, 4)}}  # fmt: skip
    v = view(params=gridops, param_history=[(0, gridops)], gridops=data)
    alice = member_statement(v, "alice", period="p", start=T, end=T + 30 * DAY, vat=VatSetting(False, 0, ""))
    assert alice["flags"] == [f"s:missing_reading@{T}..{T + 2 * DAY}"]  # up to day 4, the last with data
    assert alice["energy"]["export_wh"] == 10
    assert "3 interval(s) not billed, without the grid operator's data (flags below)" in alice["notes"][0]
