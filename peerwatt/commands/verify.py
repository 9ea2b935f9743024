"""`peerwatt verify --data DIR [--independent]`: re-verify a node's whole store from genesis."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chain.engine import stored_genesis
from chain.store import Store, StoreCorrupt, StoreError
from chain.verify import VerifyError, verify_store
from chain.verify_workers import default_workers
from market.apps import load_app
from peerwatt.errors import UserError


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option(
    "--independent",
    is_flag=True,
    help="Also re-check every signature with `ecdsa` (pure Python, not OpenSSL) and every "
    "canonical encoding with `rfc8785`: slower (~500 signatures/s); prints an estimate first.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Processes checking signatures ahead while blocks are re-executed in order "
    "(default: every core for stores of 100 blocks or more, else 1).",
)
def verify(data_dir: Path, quiet: bool, independent: bool, workers: int | None) -> None:
    """Re-check every signature, root, link, seal and re-execute every block."""
    try:
        store = Store.open(data_dir, readonly=True)
    except StoreCorrupt as exc:  # the file itself is damaged: a failed verification
        click.echo(f"FAILED at height 0: {exc}")
        sys.exit(1)
    except StoreError as exc:  # no store there, not readable for this user, a newer schema...
        raise UserError(str(exc)) from None
    try:
        app_name = stored_genesis(store).app_name
    except StoreError as exc:  # a damaged genesis document fails verification at height 0
        store.close()
        click.echo(f"FAILED at height 0: {exc}")
        sys.exit(1)
    app = load_app(app_name)
    total = max(store.height(), 0)
    if workers is None:
        workers = default_workers() if total >= 100 else 1
    extra = None
    try:
        if independent:
            report, extra = _verify_independent(store, app, show_progress=not quiet and sys.stderr.isatty())
        elif quiet or total < 200 or not sys.stderr.isatty():
            report = verify_store(store, app, workers=workers)
        else:
            from rich.progress import Progress

            with Progress(transient=True) as progress:
                task = progress.add_task("verifying", total=total)
                report = verify_store(
                    store, app, lambda h, n: progress.update(task, completed=h), workers=workers
                )
    except VerifyError as exc:
        click.echo(f"FAILED at height {exc.height}: {exc.problem}")
        sys.exit(1)
    finally:
        store.close()
    click.echo(report.summary())
    if extra is not None:
        click.echo(extra.summary())


def _verify_independent(store: Store, app, *, show_progress: bool):
    """The normal verify plus `chain.independent`'s re-checks; the estimate goes to stderr
    (above the progress bar when one is shown), the verdict to stdout."""
    from chain.independent import verify_store_independent

    def say(seconds: float, count: int) -> None:
        line = f"independent check: about {seconds:.0f} s for {count} signatures (ecdsa, pure Python)"
        if console is None:
            click.echo(line, err=True)
        else:
            console.print(line, markup=False, highlight=False)

    if not show_progress:
        console = None
        return verify_store_independent(store, app, estimate=say)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("re-checking signatures"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("independent", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return verify_store_independent(store, app, progress=advance, estimate=say)
