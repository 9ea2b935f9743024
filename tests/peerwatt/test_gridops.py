"""`peerwatt gridops import`: the grid operator's CSV file read (every malformed line named in one
line), turned into signed `gridops` transactions of exactly the rows the ledger does not hold yet,
and settled on a market ledger (docs/billing.md, "The grid operator's data")."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

import peerwatt.commands.member as member
from chain.canonical import loads_strict
from chain.genesis import genesis_from_dict
from chain.keys import save_private_key
from market.app import MarketApp
from peerwatt.cli import main
from peerwatt.gridops import GridopsError, assign_meters, bodies, parse_csv, sign_bodies
from tests.market.test_gridops_app import (
    I1,
    I2,
    IMPORTED,
    USE,
    community,
    results,
    statuses,
    trade_two_intervals,
)
from tests.support.cli import peerwatt
from tests.support.localnet import make_community

HEADER = "metering_point,interval_start,import_wh,export_wh,quality\n"


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def point(m: int) -> str:
    return f"AT0030000000000000000000000{m:06d}"


def test_parse_wh_kwh_semicolons_and_offsets():
    text = HEADER + f"AT1,{iso(I1)},312,0,measured\n\nAT1,2025-11-24T17:15:00+01:00,0,7,Estimated\n"
    rows = parse_csv(text, "june.csv", 900)
    assert [(r.line, r.interval, r.import_wh, r.export_wh, r.quality) for r in rows] == [
        (2, I1, 312, 0, "measured"),
        (4, 1_764_000_900, 0, 7, "estimated"),
    ]
    kwh = (
        "quality;export_kwh;import_kwh;interval_start;metering_point\nreplaced;0.5;1.234;"
        + iso(I1)
        + ";AT1\n"
    )
    (row,) = parse_csv(kwh, "june.csv", 900)
    assert (row.import_wh, row.export_wh, row.quality) == (1234, 500, "replaced")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("AT1,{t},12.5,0,measured", "june.csv line 3: import_wh '12.5' is not a whole number of Wh"),
        ("AT1,{t},-1,0,measured", "june.csv line 3: import_wh '-1' is not a whole number of Wh"),
        (
            "AT1,{t},1,0,validated",
            "june.csv line 3: quality 'validated' is not one of measured, estimated, replaced",
        ),
        (
            "AT1,2025-11-24 17:15,1,0,measured",
            "june.csv line 3: interval_start '2025-11-24 17:15' has no UTC offset",
        ),
        ("AT1,yesterday,1,0,measured", "june.csv line 3: interval_start 'yesterday' is not an ISO 8601 time"),
        (
            "AT1,2025-11-24T16:20:00Z,1,0,measured",
            "june.csv line 3: interval_start '2025-11-24T16:20:00Z' is not at",
        ),
        ("AT1,{t},1,0", "june.csv line 3: 4 fields, the header has 5"),
        ("AT1,{t},1,0,measured", "june.csv line 3: AT1 at {t} is also on line 2"),
        (",{t},1,0,measured", "june.csv line 3: metering_point '' must be"),
    ],
)
def test_a_malformed_line_is_named_in_one_line(line, message):
    text = HEADER + f"AT1,{iso(I1)},1,0,measured\n" + line.format(t=iso(I1)) + "\n"
    with pytest.raises(GridopsError) as exc:
        parse_csv(text, "june.csv", 900)
    assert str(exc.value).startswith(message.format(t=iso(I1)))
    assert "\n" not in str(exc.value)


def test_a_bad_header_is_named():
    with pytest.raises(
        GridopsError, match="june.csv line 1: the header must name .*unknown: import; missing: import_wh"
    ):
        parse_csv("metering_point,interval_start,import,export_wh,quality\n", "june.csv", 900)


def test_unknown_metering_point():
    rows = parse_csv(HEADER + f"AT1,{iso(I1)},1,0,measured\nAT2,{iso(I2)},1,0,measured\n", "f.csv", 900)
    with pytest.raises(GridopsError, match="f.csv line 3: metering point AT2 is not mapped"):
        assign_meters(rows, {"AT1": "a" * 32}, {"a" * 32}, "f.csv")


def test_a_meter_with_a_consumption_and_a_generation_point():
    """Their rows are added per interval with the least certain quality; a missing one is named."""
    meter = "a" * 32
    points = {"AT-CONS": meter, "AT-GEN": meter}
    text = HEADER + (
        f"AT-CONS,{iso(I1)},300,0,measured\nAT-GEN,{iso(I1)},0,1200,estimated\n"
        f"AT-GEN,{iso(I2)},0,900,replaced\nAT-CONS,{iso(I2)},250,0,measured\n"
    )
    (merged,) = assign_meters(parse_csv(text, "f.csv", 900), points, {meter}, "f.csv").values()
    assert [(r.interval, r.import_wh, r.export_wh, r.quality, r.metering_point) for r in merged] == [
        (I1, 300, 1200, "estimated", "AT-CONS+1"),
        (I2, 250, 900, "replaced", "AT-CONS+1"),
    ]
    lonely = parse_csv(text + f"AT-CONS,{iso(I2 + 900)},10,0,measured\n", "f.csv", 900)
    with pytest.raises(GridopsError) as exc:
        assign_meters(lonely, points, {meter}, "f.csv")
    assert str(exc.value) == (
        f"f.csv line 6: meter {meter} has the metering points AT-CONS, AT-GEN; "
        "AT-GEN has no row for this interval"
    )


def test_bodies_hold_only_what_the_ledger_lacks_in_chunks():
    meter = "b" * 32
    lines = [f"AT1,{iso(I1 + 900 * k)},{k},0,measured" for k in range(450)]
    rows = parse_csv(HEADER + "\n".join(lines) + "\n", "f.csv", 900)
    by_meter = assign_meters(rows, {"AT1": meter}, {meter}, "f.csv")
    first = bodies(by_meter, {})
    assert [len(b["rows"]) for b in first] == [400, 50]
    held = {str(I1 + 900 * k): [k, 0, "measured"] for k in range(450) if k != 7}
    (only,) = bodies(by_meter, {meter: held})
    assert only["rows"] == [{"interval": I1 + 900 * 7, "import_wh": 7, "export_wh": 0, "quality": "measured"}]
    held[str(I1 + 900 * 7)] = [7, 0, "measured"]
    assert bodies(by_meter, {meter: held}) == []  # an import of what the ledger holds sends nothing


def test_import_settles_the_corrected_interval_only(tmp_path):
    c = community(tmp_path, "meter_then_gridops")
    trade_two_intervals(c)
    points = {point(m): c.meters[m].id for m in range(4)}
    lines = []
    for m in range(4):
        for interval in (I1, I2):
            imp, exp = (0, 700) if (m, interval) == (0, I1) else USE[m]
            lines.append(f"{point(m)},{iso(interval)},{imp},{exp},measured")
    rows = parse_csv(HEADER + "\n".join(lines) + "\n", "june.csv", 900)
    by_meter = assign_meters(rows, points, set(c.genesis.doc["meters"]), "june.csv")
    state = c.ledgers[0].state
    envs = sign_bodies(
        c.validators[0].key, c.community, bodies(by_meter, state["app"].get("gridops", {})), 10, IMPORTED
    )
    height = c.ledgers[0].store.height()
    block = c.run_block(envs, IMPORTED)
    assert statuses(block) == ["ok"] * 4
    adjustments = results(c, "adjustment", since=height + 1)
    assert {a["interval"] for a in adjustments} == {I1} and len(adjustments) == 2
    # the same file again: nothing left to send
    assert bodies(by_meter, c.ledgers[0].state["app"]["gridops"]) == []


def test_cli(tmp_path):
    c = community(tmp_path / "ledger", "meter_then_gridops")
    trade_two_intervals(c)
    node = tmp_path / "ledger" / "validator-0"
    operator_key = save_private_key(c.validators[0].key, tmp_path / "operator.pem")
    member_key = save_private_key(c.members[0].key, tmp_path / "member.pem")
    (node / "billing").mkdir()
    (node / "billing" / "billing.toml").write_text(
        '[vat]\ncharged = false\nnote = "n"\n[gridops.metering_points]\n'
        + "".join(f'"{point(m)}" = "{c.meters[m].id}"\n' for m in range(4))
    )
    csv_file = tmp_path / "june.csv"
    csv_file.write_text(
        HEADER + f"{point(0)},{iso(I1)},0,700,measured\n{point(2)},{iso(I1)},800,0,measured\n"
    )
    out = tmp_path / "txs.jsonl"
    run = peerwatt(
        "gridops", "import", "--data", str(node), "--key", str(operator_key), "--out", str(out), str(csv_file)
    )
    assert run.returncode == 0, run.stderr
    assert "2 gridops transaction(s), 2 rows" in run.stdout
    envs = [loads_strict(line) for line in out.read_bytes().splitlines()]
    assert [e["type"] for e in envs] == ["gridops", "gridops"]
    assert {e["signer"] for e in envs} == {c.validators[0].id}
    assert sorted(e["body"]["meter"] for e in envs) == sorted([c.meters[0].id, c.meters[2].id])
    # a member that is not the community's operator
    run = peerwatt(
        "gridops", "import", "--data", str(node), "--key", str(member_key), "--out", str(out), str(csv_file)
    )
    assert run.returncode != 0 and "is not one of the community's gridops_operators" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    # a malformed line
    csv_file.write_text(HEADER + f"{point(0)},{iso(I1)},0,7.5,measured\n")
    run = peerwatt(
        "gridops", "import", "--data", str(node), "--key", str(operator_key), "--out", str(out), str(csv_file)
    )
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "error: june.csv line 2: export_wh '7.5' is not a whole number of Wh"
    ]


def test_cli_publishes_and_reports_what_the_ledger_did(tmp_path, monkeypatch, capsys):
    """The publishing path with the broker replaced by the ledger itself: the command waits until
    the node's store shows each transaction, and says what was imported and what was refused."""

    now = int(time.time())
    start = now - now % 900 - 86_400
    c = make_community(validators=1, members=1, app="market", time=start)
    d = c.genesis.doc
    c.genesis = genesis_from_dict(
        {
            "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
            "chain": {"sequencer": d["chain"]["sequencer"]},
            "app": {"settlement_source": "meter_then_gridops", "gridops_operators": [c.validators[0].id]},
            "validators": list(d["validators"].values()),
            "members": list(d["members"].values()),
            "meters": list(d["meters"].values()),
        }
    )
    c.open_ledgers(tmp_path / "ledger", MarketApp)
    node = tmp_path / "ledger" / "validator-0"
    key = save_private_key(c.validators[0].key, tmp_path / "operator.pem")
    published = []

    def publish(side, community, envelopes, timeout_s=20):
        published.append(envelopes)
        c.run_block(list(envelopes), int(time.time()) + 1)

    monkeypatch.setattr(member, "publish_gov", publish)
    meter = c.meters[0].id
    csv_file = tmp_path / "day.csv"
    csv_file.write_text(
        HEADER + "".join(f"{meter},{iso(start + 900 * k)},{k},0,measured\n" for k in range(8))
    )
    args = ["gridops", "import", "--data", str(node), "--key", str(key), "--wait", "10", str(csv_file)]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.err
    assert out.out.strip() == "imported 8 rows of 1 meter(s) in 1 of 1 transaction(s)"
    assert c.ledgers[0].state["app"]["gridops"][meter][str(start + 900 * 7)] == [7, 0, "measured"]
    # the same file again: nothing is published
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    assert (
        capsys.readouterr().out.strip()
        == "nothing to import: the ledger already holds every value in day.csv"
    )
    assert len(published) == 1
    # an interval that has not ended: the ledger would refuse it, so it is left out and named in
    # one line (tests/peerwatt/test_gridops_left_out.py), and nothing is published
    csv_file.write_text(HEADER + f"{meter},{iso(now - now % 900 + 3600)},1,0,measured\n")
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    assert exit_.value.code == 0
    assert out.err.strip().splitlines() == [
        "warning: day.csv: 1 row(s) left out, their intervals have not ended yet: line(s) 2 "
        f"({iso(now - now % 900 + 3600)})"
    ]
    assert out.out.strip().startswith("nothing to import from day.csv: 1 row(s) left out (above)")
    assert len(published) == 1
