"""`peerwatt gridops import`: rows of the grid operator's file the ledger would refuse or not record
are left out and named, not sent (docs/billing.md, "The grid operator's data"). Found in a QA pass:

- an estimate for an interval whose value on the ledger is measured was sent again on every run
  ("imported 1 rows of 5 meter(s) ...") in a transaction the ledger took without recording it;
- one row older than the ledger's gridops window had the whole transaction of its meter refused
  (`gridops_too_old`), its valid rows too, without saying which row.
"""

from __future__ import annotations

import time

import pytest

import peerwatt.commands.member as member
from chain.genesis import genesis_from_dict
from chain.keys import save_private_key
from market.app import MarketApp
from peerwatt.cli import main
from peerwatt.gridops import assign_meters, bodies, parse_csv
from tests.support.localnet import LocalCommunity, make_community

HEADER = "metering_point,interval_start,import_wh,export_wh,quality\n"
T = 1_780_617_600  # 2026-06-05T00:00:00Z


def iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def ledger(tmp_path, **app) -> tuple[LocalCommunity, int]:
    """Two meters, validator 0 the community's gridops operator, genesis a day ago."""
    now = int(time.time())
    start = now - now % 900 - 86_400
    c = make_community(validators=1, members=2, app="market", time=start)
    d = c.genesis.doc
    c.genesis = genesis_from_dict(
        {
            "community": {k: d["community"][k] for k in ("id", "name", "time", "app", "timezone")},
            "chain": {"sequencer": d["chain"]["sequencer"]},
            "app": {
                "settlement_source": "meter_then_gridops",
                "gridops_operators": [c.validators[0].id],
                **app,
            },
            "validators": list(d["validators"].values()),
            "members": list(d["members"].values()),
            "meters": list(d["meters"].values()),
        }
    )
    c.open_ledgers(tmp_path / "ledger", MarketApp)
    return c, start


class Broker:
    """The broker replaced by the ledger: what each run published, in a block just after."""

    def __init__(self) -> None:
        self.c: LocalCommunity | None = None
        self.sent: list = []

    def publish(self, side, community, envelopes, timeout_s=20) -> None:
        self.sent.append(envelopes)
        self.c.run_block(list(envelopes), int(time.time()) + 1)


@pytest.fixture
def broker(monkeypatch) -> Broker:
    b = Broker()
    monkeypatch.setattr(member, "publish_gov", b.publish)
    return b


def run(c: LocalCommunity, tmp_path, csv_file, capsys) -> tuple[int, str, list[str]]:
    key = tmp_path / "operator.pem"
    if not key.exists():
        save_private_key(c.validators[0].key, key)
    node = tmp_path / "ledger" / "validator-0"
    with pytest.raises(SystemExit) as exit_:
        main(["gridops", "import", "--data", str(node), "--key", str(key), "--wait", "10", str(csv_file)])
    out = capsys.readouterr()
    return exit_.value.code, out.out.strip(), out.err.strip().splitlines()


def test_an_estimate_under_a_measured_value_is_not_sent_again_and_again(tmp_path, broker, capsys):
    c, start = ledger(tmp_path)
    broker.c = c
    a, b = c.meters[0].id, c.meters[1].id
    csv_file = tmp_path / "day.csv"
    csv_file.write_text(
        HEADER + "".join(f"{m},{iso(start + 900 * k)},{k},0,measured\n" for m in (a, b) for k in range(4))
    )
    code, out, err = run(c, tmp_path, csv_file, capsys)
    assert (code, out, err) == (0, "imported 8 rows of 2 meter(s) in 2 of 2 transaction(s)", [])
    # the operator's next file: meter a's third interval and meter b's first estimated at another
    # value, where the ledger holds a measured one
    estimated = HEADER + "".join(
        f"{m},{iso(start + 900 * k)},{k + 50 if (m, k) in ((a, 2), (b, 0)) else k},0,"
        f"{'estimated' if (m, k) in ((a, 2), (b, 0)) else 'measured'}\n"
        for m in (a, b)
        for k in range(4)
    )
    csv_file.write_text(estimated)
    for _ in range(2):  # every run alike: nothing sent, the two rows named
        code, out, err = run(c, tmp_path, csv_file, capsys)
        assert code == 0
        assert out == (
            "nothing to import from day.csv: 2 row(s) left out (above), the ledger already holds "
            "every other value"
        )
        assert err == [
            "warning: day.csv: 2 row(s) left out, they are estimates for intervals whose value on the "
            "ledger is measured or replaced, which an estimate never replaces: line(s) 4, 6 "
            f"({iso(start)} to {iso(start + 1800)})"
        ]
    assert len(broker.sent) == 1
    held = c.ledgers[0].state["app"]["gridops"]
    assert held[a][str(start + 1800)] == [2, 0, "measured"] and held[b][str(start)] == [0, 0, "measured"]
    # a measured value among them still goes (and replaces), the estimates are still left out
    csv_file.write_text(estimated + f"{a},{iso(start + 3600)},99,0,measured\n")
    code, out, err = run(c, tmp_path, csv_file, capsys)
    assert (code, out, len(err)) == (0, "imported 1 rows of 1 meter(s) in 1 of 1 transaction(s)", 1)
    assert c.ledgers[0].state["app"]["gridops"][a][str(start + 3600)] == [99, 0, "measured"]


def test_bodies_leave_out_an_estimate_the_ledger_would_not_record():
    meter = "b" * 32
    text = HEADER + "".join(f"{meter},{iso(T + 900 * k)},5,0,estimated\n" for k in range(4))
    by_meter = assign_meters(parse_csv(text, "f.csv", 900), {}, {meter}, "f.csv")
    held = {
        str(T): [1, 0, "measured"],  # never replaced by an estimate
        str(T + 900): [5, 0, "replaced"],  # the same figures, not the same value: still not
        str(T + 1800): [1, 0, "estimated"],  # an estimate replaces an estimate
    }  # T + 2700: nothing held
    (body,) = bodies(by_meter, {meter: held})
    assert [r["interval"] for r in body["rows"]] == [T + 1800, T + 2700]


def test_rows_the_ledger_would_refuse_for_their_time_are_left_out_and_named(tmp_path, broker, capsys):
    """A window of 6 hours: rows of a day ago are too old, one of the next hour has not ended; the
    recent rows of the same meter are imported, the others named by line, one line per reason."""
    c, start = ledger(tmp_path, gridops_window_s=6 * 3600)
    broker.c = c
    a = c.meters[0].id
    now = int(time.time())
    c.run_block([], now)  # the ledger's last block: the window is measured from its time
    recent = now - now % 900 - 7200
    csv_file = tmp_path / "day.csv"
    csv_file.write_text(
        HEADER
        + f"{a},{iso(start)},1,0,measured\n"  # line 2: too old
        + f"{a},{iso(recent)},2,0,measured\n"
        + f"{a},{iso(start + 900)},3,0,measured\n"  # line 4: too old
        + f"{a},{iso(now - now % 900 + 3600)},4,0,measured\n"  # line 5: not ended
        + f"{a},{iso(recent + 900)},5,0,measured\n"
    )
    code, out, err = run(c, tmp_path, csv_file, capsys)
    assert code == 0, err
    assert out == "imported 2 rows of 1 meter(s) in 1 of 1 transaction(s)"
    assert err == [
        "warning: day.csv: 1 row(s) left out, their intervals have not ended yet: line(s) 5 "
        f"({iso(now - now % 900 + 3600)})",
        "warning: day.csv: 2 row(s) left out, their intervals leave the ledger's gridops_window_s "
        "(6 hours) before its last block or within 1 hour after it: the ledger no longer takes them: "
        f"line(s) 2, 4 ({iso(start)} to {iso(start + 900)})",
    ]
    held = c.ledgers[0].state["app"]["gridops"][a]
    assert held == {str(recent): [2, 0, "measured"], str(recent + 900): [5, 0, "measured"]}
    # again: nothing sent, the left-out rows named again
    code, out, err = run(c, tmp_path, csv_file, capsys)
    assert (code, len(err), len(broker.sent)) == (0, 2, 1)
    assert out.startswith("nothing to import from day.csv: 3 row(s) left out (above)")
