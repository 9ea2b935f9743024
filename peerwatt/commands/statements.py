"""`peerwatt statements`: issue a month's numbered statements (JSON, CSV, PDF), their correction
notes, and verify a statement against the chain (docs/billing.md)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from peerwatt.errors import UserError


def _open_store(data_dir: Path):
    from chain.store import Store, StoreError

    try:
        return Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None


@click.group(invoke_without_command=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="A node's data folder.")
@click.option("--period", help="The month, YYYY-MM (the community's time zone).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for the statements' files.")
@click.option(
    "--billing",
    "billing_dir",
    type=click.Path(path_type=Path),
    help="The operator's billing folder: billing.toml and issued.sqlite (default: NODE_DIR/billing).",
)
@click.option(
    "--corrections",
    is_flag=True,
    help="Issue credit/debit notes for what changed on the ledger since the period's statements.",
)
@click.option(
    "--height", type=int, default=None, help="Compute from this ledger height (default: the last block)."
)
@click.option("--issued-on", default=None, help="Issue date printed on the documents (default: today).")
@click.pass_context
def statements(
    ctx: click.Context,
    data_dir: Path | None,
    period: str | None,
    out_dir: Path | None,
    billing_dir: Path | None,
    corrections: bool,
    height: int | None,
    issued_on: str | None,
) -> None:
    """Issue every household's numbered statement for a month (or its correction notes)."""
    if ctx.invoked_subcommand is not None:
        return
    if data_dir is None or period is None or out_dir is None:
        raise UserError(
            "give --data NODE_DIR --period YYYY-MM --out DIR (or: peerwatt statements verify ...)"
        )
    from peerwatt.statements import BillingError, issue_corrections, issue_period, write_files

    issued_at = issued_on or date.today().isoformat()
    try:
        date.fromisoformat(issued_at)
    except ValueError:
        raise UserError(f"--issued-on {issued_at!r}: use a date like 2026-07-01") from None
    billing = billing_dir or data_dir / "billing"
    store = _open_store(data_dir)
    try:
        run = issue_corrections if corrections else issue_period
        docs = run(store, billing, period, issued_at=issued_at, height=height)
        written = write_files(docs, out_dir)
    except BillingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the statements: {exc}") from None
    finally:
        store.close()
    what = "correction notes and late statements" if corrections else "statements"
    if not docs:
        click.echo(f"no {what} to issue for {period}")
        return
    click.echo(f"issued {len(docs)} {what}: {docs[0]['number']} to {docs[-1]['number']}")
    click.echo(f"wrote {len(written)} files to {out_dir}; kept in {billing / 'issued.sqlite'}")


@statements.command("verify")
@click.option(
    "--data", "data_dir", required=True, type=click.Path(path_type=Path), help="A node's data folder."
)
@click.argument("file", type=click.Path(path_type=Path))
def verify(data_dir: Path, file: Path) -> None:
    """Re-derive every figure of a statement or note (.json or .pdf) from the ledger."""
    from peerwatt.statements import BillingError, verify_file

    store = _open_store(data_dir)
    try:
        doc, problems = verify_file(store, file)
    except BillingError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise UserError(f"{file}: {len(problems)} figure(s) differ from the ledger", exit_code=1)
    click.echo(
        f"{doc['number']}: every figure matches the ledger at height {doc['ledger']['height']} "
        f"(block {doc['ledger']['block_hash'][:16]})"
    )
