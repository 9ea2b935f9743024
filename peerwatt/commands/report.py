"""`peerwatt report`: trades, settlements, per-household totals and community KPIs (pandas)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from peerwatt.errors import UserError, check_outputs, write_outputs


def _day(day: str, option: str) -> date:
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise UserError(f"{option} {day!r}: use a date like 2026-06-21") from None


def _midnight(day: date, tz: ZoneInfo) -> int:
    """The first instant of ``day`` in ``tz`` (Unix s): its local midnight."""
    return int(datetime.combine(day, time(0), tz).timestamp())


def day_bounds(date_from: str | None, date_to: str | None, tz: ZoneInfo) -> tuple[int | None, int | None]:
    """[start, end) in Unix s of the days ``date_from`` to ``date_to`` (inclusive, YYYY-MM-DD) in
    the community's time zone: from the local midnight that begins the first day to the local
    midnight that begins the day after the last, so a last day of 23 or 25 hours (a change of the
    clocks) is counted whole (found in a QA pass: the end was 24 hours after the last day's
    midnight). None: open on that side (also for 9999-12-31, after which the calendar has no
    midnight)."""
    start = _midnight(_day(date_from, "--from"), tz) if date_from else None
    end = None
    if date_to:
        last = _day(date_to, "--to")
        end = None if last == date.max else _midnight(last + timedelta(days=1), tz)
    if start is not None and end is not None and start >= end:
        raise UserError(f"--from {date_from} is after --to {date_to}: the first day comes first")
    return start, end


def _at(ts: int, tz: ZoneInfo) -> str:
    return f"{datetime.fromtimestamp(ts, tz):%Y-%m-%d %H:%M} {tz.key}"


def ledger_span_note(
    start: int | None,
    end: int | None,
    begins: int,
    last: int | None,
    tz: ZoneInfo,
    period: str = "the period",
) -> str:
    """Where the period [start, end) lies against the ledger, which begins at ``begins`` (its
    genesis) and whose last block is at ``last`` (None: no block after the genesis). A ledger with
    no block, or a period wholly before or after the ledger, is a UserError (a report of it would
    be all zeros, as if nobody had traded: found in a QA pass). A period that reaches beyond either
    end gives a note to print (the report covers only what the ledger holds), else ''. ``period``
    names the period in the messages (the options it came from)."""
    if last is None:
        raise UserError(
            f"the ledger has no block after its genesis ({_at(begins, tz)}): nothing to report yet"
        )
    if start is not None and start >= last:
        raise UserError(
            f"{period} begins after the ledger's last block ({_at(last, tz)}): nothing to report for it yet"
        )
    if end is not None and end <= begins:
        raise UserError(
            f"{period} ends before the ledger begins (its genesis, {_at(begins, tz)}): "
            "nothing to report for it"
        )
    parts = []
    if start is not None and start < begins:
        parts.append(f"the ledger begins at {_at(begins, tz)} (its genesis), after the period's start")
    if end is not None and end > last:
        whose = "its" if parts else "the ledger's"
        parts.append(f"{whose} last block is at {_at(last, tz)}, before the period's end")
    if not parts:
        return ""
    covers = (
        "that span" if len(parts) == 2 else "from then on" if end is None or end <= last else "up to then"
    )
    return ", and ".join(parts) + f": the report covers only {covers}"


# the tables build_report returns, in its order: checked before the (long) build, written after it
REPORT_TABLES = ("households", "trades", "settlements", "kpis")


def _path(out: Path, table: str) -> Path:
    """The file of one table: --out itself for the household totals, the others beside it."""
    return out if table == "households" else out.with_name(f"{out.stem}-{table}{out.suffix}")


@click.command()
@click.option(
    "--data", "data_dir", required=True, type=click.Path(path_type=Path), help="A node's data folder."
)
@click.option("--from", "date_from", help="First day (YYYY-MM-DD, community time zone).")
@click.option("--to", "date_to", help="Last day, inclusive (YYYY-MM-DD).")
@click.option("--meter", help="Only this meter (key id).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="FILE.csv or FILE.parquet")
def report(data_dir: Path, date_from: str | None, date_to: str | None, meter: str | None, out: Path) -> None:
    """Write the household totals to --out, and trades, settlements and KPIs beside it."""
    from chain.engine import stored_genesis
    from chain.store import Store, StoreError
    from market.spreadsheet import text_cell
    from peerwatt.reports import build_report
    from peerwatt.statements import BillingError

    if out.suffix not in (".csv", ".parquet"):
        raise UserError("--out must end in .csv or .parquet")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist")
    check_outputs([_path(out, name) for name in REPORT_TABLES], overwrite=True)
    try:
        store = Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        genesis = stored_genesis(store).doc
    except StoreError as exc:
        store.close()
        raise UserError(f"{exc} (`peerwatt verify --data {data_dir}` checks the whole store)") from None
    tz = ZoneInfo(genesis["community"].get("timezone", "UTC"))
    try:
        start, end = day_bounds(date_from, date_to, tz)
        height = store.height()
        last = store.block_row(height)[2] if height > 0 else None
    except StoreError as exc:
        store.close()
        raise UserError(f"{exc} (`peerwatt verify --data {data_dir}` checks the whole store)") from None
    except UserError:
        store.close()
        raise
    try:
        period = " ".join(f"{name} {day}" for name, day in (("--from", date_from), ("--to", date_to)) if day)
        note = ledger_span_note(start, end, genesis["community"]["time"], last, tz, f"the period {period}")
    except UserError:
        store.close()
        raise
    try:
        tables = build_report(store, start=start, end=end, meter=meter)
    except StoreError as exc:  # a stored row that no longer decodes
        raise UserError(f"{exc} (`peerwatt verify --data {data_dir}` checks the whole store)") from None
    except (ValueError, BillingError) as exc:  # an unknown --meter; a proposal erased from the store
        raise UserError(str(exc)) from None
    finally:
        store.close()

    def writer(frame):
        if out.suffix == ".csv":
            return lambda path: frame.map(text_cell).to_csv(path, index=False)  # names are the members'
        return lambda path: frame.to_parquet(path, index=False)

    try:
        write_outputs({_path(out, name): writer(frame) for name, frame in tables.items()}, overwrite=True)
    except ImportError:
        raise UserError("writing .parquet needs pyarrow: pip install pyarrow (or use .csv)") from None
    if note:
        click.echo(f"note: {note}", err=True)
    households = tables["households"]
    left_out = households["intervals_left_out"] if "intervals_left_out" in households else []
    if sum(left_out):  # the metered energy and all computed from it are short (found in a QA pass)
        n, homes = int(sum(left_out)), sum(1 for v in left_out if v)
        click.echo(
            f"note: the metered energy leaves out {n} interval{'' if n == 1 else 's'} of {homes} "
            f"household{'' if homes == 1 else 's'} (their readings are missing or cannot be true: "
            "column flags)",
            err=True,
        )
    written = [f"{_path(out, name)} ({len(frame)} rows)" for name, frame in tables.items()]
    kpis = tables["kpis"].iloc[0]
    click.echo("wrote " + ", ".join(written))
    share = kpis["self_sufficiency"]
    trades = int(kpis["trades"])  # (a row of ints and floats reads back as floats: "253.0 trades")
    click.echo(
        f"{trades} trade{'' if trades == 1 else 's'}, {kpis['p2p_settled_wh'] / 1000:.1f} kWh settled P2P, "
        "self-sufficiency "
        f"{'n/a' if share is None or share != share else f'{share:.1%}'}, "
        f"total savings {kpis['savings_total'] / 1e6:.2f}"
    )
