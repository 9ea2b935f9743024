"""`peerwatt gridops import`: a meter listed by its key id and by a metering point (docs/billing.md,
"The grid operator's data"). Found in a QA pass: a file listing a meter for one interval once by
its mapped metering point and once by its key id was added up (the ledger then held 200/400 Wh
instead of 100/200), not refused as a duplicate. A key id in the column is the meter itself, its
whole value: only a meter's own distinct metering points mapped in billing.toml are added."""

from __future__ import annotations

import time

import pytest

from peerwatt.gridops import GridopsError, assign_meters, parse_csv

HEADER = "metering_point,interval_start,import_wh,export_wh,quality\n"
T = 1_780_617_600  # 2026-06-05T00:00:00Z


def iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_a_meter_by_its_key_id_and_by_a_mapped_point_in_one_interval_is_refused():
    meter = "a" * 32
    text = HEADER + f"AT1,{iso(T)},100,200,measured\n{meter},{iso(T)},100,200,measured\n"
    rows = parse_csv(text, "f.csv", 900)
    with pytest.raises(GridopsError) as exc:
        assign_meters(rows, {"AT1": meter}, {meter}, "f.csv")
    message = str(exc.value)
    assert message.startswith(
        f"f.csv line 3: meter {meter} at {iso(T)} is also on line 2 by its metering point AT1"
    )
    assert "\n" not in message
    # the other order, and a meter with two points: named at the later line, with the earlier one
    text = HEADER + (
        f"{meter},{iso(T)},100,200,measured\nAT-CONS,{iso(T)},100,0,measured\nAT-GEN,{iso(T)},0,200,measured\n"
    )
    with pytest.raises(GridopsError) as exc:
        assign_meters(parse_csv(text, "f.csv", 900), {"AT-CONS": meter, "AT-GEN": meter}, {meter}, "f.csv")
    assert str(exc.value).startswith(
        f"f.csv line 3: AT-CONS at {iso(T)} is meter {meter}, which is also on line 2 by its key id"
    )


def test_what_is_legitimate_for_one_meter():
    """Its two mapped points in one interval are added (docs/billing.md); its key id alone in an
    interval is its whole value, whatever points it has; the same key id twice is refused."""
    meter = "a" * 32
    points = {"AT-CONS": meter, "AT-GEN": meter}
    text = HEADER + (
        f"AT-CONS,{iso(T)},100,0,measured\nAT-GEN,{iso(T)},0,200,estimated\n"
        f"{meter},{iso(T + 900)},7,8,replaced\n"
    )
    (rows,) = assign_meters(parse_csv(text, "f.csv", 900), points, {meter}, "f.csv").values()
    assert [(r.interval, r.import_wh, r.export_wh, r.quality, r.metering_point) for r in rows] == [
        (T, 100, 200, "estimated", "AT-CONS+1"),
        (T + 900, 7, 8, "replaced", meter),
    ]
    with pytest.raises(GridopsError, match=f"f.csv line 3: {meter} at {iso(T)} is also on line 2"):
        parse_csv(HEADER + f"{meter},{iso(T)},1,0,measured\n" * 2, "f.csv", 900)
    # billing.toml mapping a key id to its own meter does not make it a metering point to add
    rows = parse_csv(
        HEADER + f"AT1,{iso(T)},100,200,measured\n{meter},{iso(T)},100,200,measured\n", "f.csv", 900
    )
    with pytest.raises(
        GridopsError, match="f.csv line 3: meter a{32} at .* is also on line 2 by its metering point AT1"
    ):
        assign_meters(rows, {"AT1": meter, meter: meter}, {meter}, "f.csv")
