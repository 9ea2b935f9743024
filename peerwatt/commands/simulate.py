"""`peerwatt simulate`: fast what-if studies of a community on a virtual clock."""

from __future__ import annotations

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
@click.option("--start", "start_date", default="2026-06-21", show_default=True, help="First day (UTC).")
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
@click.option("--out", default="simulation", show_default=True, type=click.Path(path_type=Path))
def simulate(
    homes,
    pv_share,
    pv_kwp,
    days,
    start_date,
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
) -> None:
    """Simulate a community with the real agent, ledger and market code; write report and plots."""
    from rich.console import Console
    from rich.progress import Progress

    from peerwatt.simulation import SimOptions, run_simulation

    try:
        low, high = (float(x) for x in pv_kwp.split("-"))
        start = date.fromisoformat(start_date)
    except ValueError:
        raise UserError("--pv-kwp must look like 3-9 and --start like 2026-06-21") from None
    options = SimOptions(
        homes=homes,
        pv_share=pv_share,
        pv_min_kwp=low,
        pv_max_kwp=high,
        days=days,
        start=start,
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
        out=out,
    )
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(f"simulating {homes} homes × {days:g} days", total=1)
            result = run_simulation(
                options, lambda done, total: progress.update(task, completed=done, total=total)
            )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    Console().print(_summary_table(result, f"{homes} homes, {days:g} days from {start_date}, {mechanism}"))
    click.echo(
        f"report, plots and ledger in {result.out}/ "
        f"(verify with `peerwatt verify --data {result.out}/ledger/sequencer`)"
    )


def _summary_table(result, title: str):
    """The study's headline figures as a rich table (KPIs, prices, savings, the ledger's verdict)."""
    from rich.table import Table

    k = result.tables["kpis"].iloc[0]
    households = result.tables["households"]
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("P2P energy settled", f"{k['p2p_settled_wh'] / 1000:,.1f} kWh")
    table.add_row(
        "trades (settled / unsettled)",
        f"{int(k['trades'])} ({int(k['settled_trades'])} / {int(k['unsettled_trades'])})",
    )
    share = k["self_sufficiency"]
    table.add_row("share of demand met locally", "n/a" if share != share or share is None else f"{share:.1%}")
    sc = k["self_consumption"]
    table.add_row("self-consumption of exports", "n/a" if sc != sc or sc is None else f"{sc:.1%}")
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
    return table
