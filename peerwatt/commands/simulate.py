"""`peerwatt simulate`: fast what-if studies of a community on a virtual clock."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import click

from peerwatt.errors import UserError


@click.command()
@click.option("--homes", default=20, show_default=True, type=click.IntRange(2, 5000))
@click.option(
    "--pv-share", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Share with PV."
)
@click.option("--pv-kwp", default="3-9", show_default=True, help="PV size range in kWp, e.g. 3-9.")
@click.option("--days", default=1.0, show_default=True, type=click.FloatRange(0.05, 366))
@click.option(
    "--start",
    "start_date",
    default="2026-06-21",
    show_default=True,
    help="First day (in --timezone): the study starts at its midnight.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="The community's time zone, an IANA name such as Europe/Vienna (its days and months).",
)
@click.option("--lat", default=52.52, show_default=True, type=click.FloatRange(-66, 66))
@click.option("--lon", default=13.40, show_default=True, type=click.FloatRange(-180, 180))
@click.option("--feed-in", default=80_000, show_default=True, type=click.IntRange(1), help="µ/kWh")
@click.option("--retail", default=300_000, show_default=True, type=click.IntRange(1), help="µ/kWh")
@click.option("--grid-fee", default=20_000, show_default=True, type=click.IntRange(0), help="µ/kWh")
@click.option("--levies", default=5_000, show_default=True, type=click.IntRange(0), help="µ/kWh")
@click.option(
    "--mechanism",
    default="uniform",
    show_default=True,
    type=click.Choice(["uniform", "pay-as-bid", "community"]),
)
@click.option("--community-price", default=150_000, show_default=True, type=click.IntRange(1))
@click.option("--validators", default=2, show_default=True, type=click.IntRange(0, 10))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--out",
    default="simulation",
    show_default=True,
    help="The study's folder: new or empty, or an earlier study with --replace.",
)
@click.option(
    "--replace",
    "replace_study",
    is_flag=True,
    help="Replace the earlier study in --out, once the new one is complete.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes (default: one per core, and at least one per node, from 40 homes up; "
    "below, 1: everything in this process). The results do not depend on it.",
)
@click.option(
    "--progress",
    is_flag=True,
    help="Report progress on stderr also when it is not a terminal (a line per simulated day).",
)
def simulate(
    homes,
    pv_share,
    pv_kwp,
    days,
    start_date,
    timezone,
    lat,
    lon,
    feed_in,
    retail,
    grid_fee,
    levies,
    mechanism,
    community_price,
    validators,
    seed,
    out,
    replace_study,
    workers,
    progress,
) -> None:
    """Simulate a community with the real agent, ledger and market code; write report and plots."""
    from rich.console import Console

    from chain.genesis import GenesisError, check_timezone
    from peerwatt.simulation import SimOptions, WorkerError

    if not out.strip():  # (an unset $DIR: Path("") is the current folder)
        raise UserError("--out is empty: name the study's folder, e.g. --out study")
    try:
        low, high = (float(x) for x in pv_kwp.split("-"))
    except ValueError:
        raise UserError(
            f"--pv-kwp {pv_kwp} is not two sizes like 3-9 (kWp, 0 to 1000, the smallest size first)"
        ) from None
    try:
        start = date.fromisoformat(start_date)
    except ValueError:
        raise UserError(f"--start {start_date} is not a date like 2026-06-21 (1970-01-02 or later)") from None
    try:
        check_timezone(timezone, "--timezone")
    except GenesisError as exc:
        raise UserError(str(exc)) from None
    options = SimOptions(
        homes=homes,
        pv_share=pv_share,
        pv_min_kwp=low,
        pv_max_kwp=high,
        days=days,
        start=start,
        timezone=timezone,
        lat=lat,
        lon=lon,
        feed_in_price=feed_in,
        retail_price=retail,
        grid_fee_per_kwh=grid_fee,
        levies_per_kwh=levies,
        mechanism=mechanism,
        community_price=community_price,
        validators=validators,
        seed=seed,
        out=Path(out),
        workers=workers,
    )
    started = time.monotonic()
    try:
        result = _run_with_progress(
            options, replace_study, progress, f"simulating {homes} homes × {days:g} days"
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except WorkerError as exc:
        raise UserError(str(exc), exit_code=1) from None
    elapsed = time.monotonic() - started
    title = f"{homes} homes, {days:g} days from {start_date} ({timezone}), {mechanism}"
    Console().print(_summary_table(result, title, elapsed))
    click.echo(
        f"report, plots and ledger in {result.out}/ "
        f"(verify with `peerwatt verify --data {result.out}/ledger/sequencer`)"
    )


def _run_with_progress(options, replace_study: bool, forced: bool, label: str):
    """Run the study with a progress bar on stderr when it is a terminal, a plain line per
    simulated day with ``--progress`` when it is not, and nothing otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from peerwatt.simulation import run_simulation

    def run(progress=None):
        return run_simulation(options, progress, replace_study=replace_study)

    console = Console(stderr=True)
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[day]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rss]}"),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=1, day="", rss="")

            def update(done: int, total: int, rss: float | None) -> None:
                day = done * options.step_s / 86_400
                if rss is not None:  # the study's, measured every simulated hour
                    bar.update(task, rss=f"RSS {rss:.0f} MB")
                bar.update(task, completed=done, total=total, day=f"day {day:.1f}/{options.days:g}")

            return run(update)
    if not forced:
        return run()
    steps_per_day = 86_400 // options.step_s
    started = time.monotonic()

    def line(done: int, total: int, rss: float | None) -> None:
        if (done % steps_per_day == 0 or done == total) and rss is not None:
            elapsed = time.monotonic() - started
            left = elapsed / done * (total - done)
            click.echo(
                f"{label}: day {done / steps_per_day:.1f}/{options.days:g} ({done / total:.0%}),"
                f" {elapsed:.0f} s, about {left:.0f} s left, RSS {rss:.0f} MB",
                err=True,
            )

    return run(line)


def _summary_table(result, title: str, elapsed: float | None = None):
    """The study's headline figures as a rich table (KPIs, prices, savings, the ledger's verdict)."""
    from rich.table import Table

    k = result.tables["kpis"].iloc[0]
    households = result.tables["households"]
    table = Table(title=title)
    table.add_column("measure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("P2P energy settled", f"{k['p2p_settled_wh'] / 1000:,.1f} kWh")
    trades_n, settled_n, unsettled_n = int(k["trades"]), int(k["settled_trades"]), int(k["unsettled_trades"])
    table.add_row(
        "trades (settled / unsettled / pending)",
        f"{trades_n} ({settled_n} / {unsettled_n} / {trades_n - settled_n - unsettled_n})",
    )
    # what the market did, then what was possible: the imports the community's own exports could
    # have covered in the same interval (self-sufficiency), whatever the market
    for label, name in (
        ("share of demand met by P2P trades", "p2p_share_of_consumption"),
        ("share of demand that could have been met locally", "self_sufficiency"),
        ("share of exports sold P2P (self-consumption)", "self_consumption"),
    ):
        share = k[name]
        table.add_row(label, "n/a" if share is None or share != share else f"{share:.1%}")
    trades = result.tables["trades"]
    if len(trades):
        table.add_row(
            "average clearing price",
            f"{(trades['value'].sum() * 1000 / trades['energy_wh'].sum()) / 10_000:.2f} ct/kWh",
        )
    if "savings" in households and len(households):
        s = households["savings"] / 1e6
        table.add_row(
            "savings per household (min / median / max)", f"{s.min():.2f} / {s.median():.2f} / {s.max():.2f}"
        )
    table.add_row("ledger", result.verify.summary())
    if result.memory:
        first, last = result.memory[0], result.memory[-1]
        table.add_row(
            f"memory (RSS) after day {first[0]:.1f} / day {last[0]:.1f}", f"{first[1]:.0f} / {last[1]:.0f} MB"
        )
    workers = result.workers
    table.add_row("processes", f"this one and {workers} workers" if workers else "this one")
    if elapsed is not None:
        table.add_row("simulated in", f"{elapsed:.1f} s")
    return table
