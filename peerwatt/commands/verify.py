"""`peerwatt verify --data DIR`: re-verify a node's whole store from genesis."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chain.engine import genesis_from_dict_bytes
from chain.store import Store, StoreError
from chain.verify import VerifyError, verify_store
from peerwatt.apps import load_app
from peerwatt.errors import UserError


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress display.")
def verify(data_dir: Path, quiet: bool) -> None:
    """Re-check every signature, root, link, seal and re-execute every block."""
    try:
        store = Store.open(data_dir, readonly=True)
        app_name = genesis_from_dict_bytes(store.genesis_doc()).app_name
    except (StoreError, ValueError, KeyError) as exc:
        raise UserError(str(exc)) from None
    app = load_app(app_name)
    total = max(store.height(), 0)
    try:
        if quiet or total < 200 or not sys.stderr.isatty():
            report = verify_store(store, app)
        else:
            from rich.progress import Progress

            with Progress(transient=True) as progress:
                task = progress.add_task("verifying", total=total)
                report = verify_store(store, app, lambda h, n: progress.update(task, completed=h))
    except VerifyError as exc:
        click.echo(f"FAILED at height {exc.height}: {exc.problem}")
        sys.exit(1)
    finally:
        store.close()
    click.echo(report.summary())
