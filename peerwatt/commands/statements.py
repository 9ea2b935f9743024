"""`peerwatt statements`: issue a month's numbered statements (JSON, CSV, PDF), their correction
notes, and verify a statement against the chain; the members' bank details, the SEPA payment
files (`pay`) and marking a statement paid (`mark-paid`) (docs/billing.md)."""

from __future__ import annotations

import re
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


def _check_folder(folder: Path, what: str) -> None:
    """Refuse a folder that cannot be made (a file in its place or on its path) before anything is
    issued or created."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"{what} {folder}: {path} is a file, not a folder")
            return


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
            "give --data NODE_DIR --period YYYY-MM --out DIR (or: statements verify|pay|mark-paid ...)"
        )
    from peerwatt.payments import prepare
    from peerwatt.statements import (
        BillingError,
        files_of_run,
        issue_corrections,
        issue_month_end,
        settlement_source,
    )

    issued_at = issued_on or date.today().isoformat()
    try:
        date.fromisoformat(issued_at)
    except ValueError:
        raise UserError(f"--issued-on {issued_at!r}: use a date like 2026-07-01") from None
    billing = billing_dir or data_dir / "billing"
    _check_folder(out_dir, "cannot write the statements to")
    _check_folder(billing, "cannot use the billing folder")
    store = _open_store(data_dir)
    notes: dict[str, list] = {}
    # the files are written before the documents are kept as issued: a failed write issues nothing,
    # and a run that fails after writing them takes them away again (files_of_run)
    try:
        # first, on a register an older version made payment files for, what it holds now is kept
        # apart from what this run issues (docs/billing.md, "Pay and collect")
        prepare(billing)
        source = settlement_source(store, height)  # (words the PDFs' metered energy)
        with files_of_run(out_dir, billing, source) as (write, written):
            if corrections:
                docs = issue_corrections(
                    store, billing, period, issued_at=issued_at, height=height, write=write
                )
            else:
                docs, notes = issue_month_end(
                    store, billing, period, issued_at=issued_at, height=height, write=write
                )
    except BillingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the statements: {exc}") from None
    finally:
        store.close()
    what = "correction notes and late statements" if corrections else "statements"
    if docs:
        click.echo(f"issued {len(docs)} {what}: {docs[0]['number']} to {docs[-1]['number']}")
    else:
        click.echo(f"no {what} to issue for {period}")
    for earlier, earlier_notes in notes.items():
        if earlier_notes:
            click.echo(
                f"issued {len(earlier_notes)} correction notes and late statements for {earlier}: "
                f"{earlier_notes[0]['number']} to {earlier_notes[-1]['number']}"
            )
    if written:
        click.echo(f"wrote {len(written)} files to {out_dir}; kept in {billing / 'issued.sqlite'}")
    for doc in [*docs, *(d for earlier in notes.values() for d in earlier)]:
        _warn_left_out(doc)


def _warn_left_out(doc: dict) -> None:
    """One stderr line per meter whose intervals a document leaves out (docs/billing.md)."""
    from market.billing import figures_of
    from peerwatt.settings import one_line

    st = figures_of(doc)
    for m in st["meters"]:
        if m.get("intervals_left_out"):
            click.echo(
                f"warning: {doc['number']} ({one_line(st['member_name'] or st['member'])}): "
                f"{m['intervals_left_out']} interval(s) of meter {one_line(m['name'] or m['meter'][:8])} not "
                "billed, without their data or with readings that cannot be true (see its flags)",
                err=True,
            )


@statements.command("verify")
@click.option(
    "--data", "data_dir", required=True, type=click.Path(path_type=Path), help="A node's data folder."
)
@click.option(
    "--billing",
    "billing_dir",
    type=click.Path(path_type=Path),
    help="The issuer's billing folder: also check the VAT setting, currency, number and issue date "
    "against its register (they are not on the ledger).",
)
@click.argument("file", type=click.Path(path_type=Path))
def verify(data_dir: Path, billing_dir: Path | None, file: Path) -> None:
    """Re-derive every figure of a statement or note (.json or .pdf) the ledger determines, and say
    which of its figures come from the issuer's settings (checked only with --billing)."""
    from market.billing import figures_of
    from peerwatt.statements import (
        BillingError,
        issuer_settings,
        verify_file,
        verify_in_register,
    )

    store = _open_store(data_dir)
    try:
        caveats: list[str] = []  # (said only of a document that verifies)
        doc, problems = verify_file(store, file, caveats=caveats)
    except BillingError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise UserError(f"{file}: {len(problems)} figure(s) differ from the ledger", exit_code=1)
    settings = issuer_settings(doc)
    if billing_dir is not None:
        try:
            problems = verify_in_register(billing_dir, doc)
        except BillingError as exc:
            raise UserError(str(exc)) from None
        if problems:
            for p in problems:
                click.echo(p, err=True)
            raise UserError(
                f"{file}: {len(problems)} figure(s) differ from the issuer's register", exit_code=1
            )
    ledger = figures_of(doc)["ledger"]
    click.echo(
        f"{doc['number']}: matches the ledger at height {ledger['height']} "
        f"(block {ledger['block_hash'][:16]}) in every figure the ledger determines (energy, trades, "
        "amounts, net, account balance, savings), and its VAT and total are computed right at its "
        "stated rate"
    )
    for caveat in caveats:
        click.echo(caveat)
    if billing_dir is None:
        click.echo(
            f"not checked, not on the ledger: {settings} are the issuer's settings, the number "
            f"{doc['number']} and issue date {doc['issued_at']} its numbering; --billing DIR (the issuer's "
            "billing folder) checks them against its register"
        )
    else:
        click.echo(
            f"checked against the issuer's register {billing_dir / 'issued.sqlite'}: issued as "
            f"{doc['number']} on {doc['issued_at']} with {settings}, identical in every field"
        )


# -- payments (peerwatt/payments.py): bank details, the SEPA files, marking paid -----------------

_BILLING = click.option(
    "--billing",
    "billing_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The operator's billing folder (issued.sqlite, billing.toml).",
)


def _member_to_pay(member: str, billing_dir: Path, data_dir: Path | None) -> str:
    """``member`` as a key id (lower case) of a household the billing folder issued a statement to,
    or, with ``data_dir``, of a member of the community on that ledger (one with no statement yet);
    else a one-line UserError (found in a QA pass: 'nothex' and 32 hex digits of nobody were
    stored with an IBAN that no statement would ever be paid with)."""
    import sqlite3

    from chain.schema import KEY_ID, SchemaError

    try:
        KEY_ID.check(member.lower(), "--member")
    except SchemaError:
        raise UserError(
            f"--member {member!r} is not a key id: 32 hex digits, as on the member's statements "
            "('Member: NAME (KEYID)')"
        ) from None
    member = member.lower()
    if data_dir is not None:
        from chain.store import StoreError
        from peerwatt.statements import BillingError, registry

        store = _open_store(data_dir)
        try:
            members = registry(store).members  # everyone who was ever a member, removed ones too
        except (StoreError, BillingError) as exc:
            raise UserError(f"{exc} (`peerwatt verify --data {data_dir}` checks the whole store)") from None
        finally:
            store.close()
        if member not in members:
            raise UserError(
                f"{member} is not a member of the community on the ledger in {data_dir}: check the key id"
            )
        return member
    from peerwatt.statements import BillingError, read_register

    register = billing_dir / "issued.sqlite"
    issued = False
    if register.is_file():
        try:
            conn = read_register(register)
            try:
                issued = conn.execute(
                    "SELECT 1 FROM documents WHERE member = ? LIMIT 1", (member,)
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise UserError(f"cannot read the register {register}: {exc}") from None
        except BillingError as exc:
            raise UserError(str(exc)) from None
    if not issued:
        raise UserError(
            f"no statement in {register} was issued to {member}: check the key id, or give --data NODE_DIR "
            "to find it among the community's members (one with no statement yet)"
        )
    return member


@statements.command("bank-details")
@_BILLING
@click.option("--member", required=True, help="The member's key id (32 hex digits, as on its statements).")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="A node's data folder: accept a member on its ledger with no statement issued yet.",
)
@click.option("--name", required=True, help="The account holder's name.")
@click.option("--iban", required=True, help="The account's IBAN (checked).")
@click.option("--bic", default=None, help="The bank's BIC (optional).")
@click.option("--mandate-id", default=None, help="The SEPA direct-debit mandate's id (for direct debits).")
@click.option("--mandate-date", default=None, help="The date the mandate was signed, YYYY-MM-DD.")
def bank_details_cmd(
    billing_dir: Path,
    member: str,
    data_dir: Path | None,
    name: str,
    iban: str,
    bic: str | None,
    mandate_id: str | None,
    mandate_date: str | None,
) -> None:
    """Record (or replace) a member's bank details in the billing store, never on the ledger."""
    from peerwatt.payments import set_bank_details
    from peerwatt.statements import BillingError

    member = _member_to_pay(member, billing_dir, data_dir)
    try:
        d = set_bank_details(
            billing_dir,
            member,
            name=name,
            iban=iban,
            bic=bic,
            mandate_id=mandate_id,
            mandate_date=mandate_date,
            now=date.today().isoformat(),
        )
    except BillingError as exc:
        raise UserError(str(exc)) from None
    mandate = f", mandate {d.mandate_id} of {d.mandate_date}" if d.mandate_id else ", no direct-debit mandate"
    click.echo(f"bank details of {member}: {d.name}, {d.iban[:4]}...{d.iban[-4:]}{mandate}")


@statements.command("pay")
@_BILLING
@click.option("--period", required=True, help="The month, YYYY-MM.")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the files."
)
@click.option(
    "--on",
    "on",
    default=None,
    help="Collection / execution date asked of the bank, YYYY-MM-DD (default: 5 days from today).",
)
@click.option(
    "--again",
    is_flag=True,
    help="Also put in the unpaid statements and notes an earlier payment file holds, or may hold (one "
    "an older peerwatt wrote without recording it): the bank refused or lost that file; upload the new "
    "file instead of that one, never besides it.",
)
def pay(billing_dir: Path, period: str, out_dir: Path, on: str | None, again: bool) -> None:
    """Write the SEPA files for the period's unpaid statements and notes not in an earlier payment
    file: pain.008 direct debits (what households owe) and pain.001 credit transfers (what the
    community owes them). Each file and what it holds is recorded in issued.sqlite. On a register
    an older peerwatt wrote payment files for without recording them, what it held then is left
    out until marked paid or given --again (docs/billing.md)."""
    from datetime import datetime, timedelta

    from peerwatt.payments import check_collection_date
    from peerwatt.payments import pay as make_payment_files
    from peerwatt.settings import one_line
    from peerwatt.statements import BillingError

    try:
        when = date.fromisoformat(on) if on else date.today() + timedelta(days=5)
    except ValueError:
        raise UserError(f"--on {on!r}: use a date like 2026-07-05") from None
    try:
        check_collection_date(when, date.today())
    except BillingError as exc:
        raise UserError(str(exc)) from None
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise UserError(f"--period {period!r}: use a month like 2026-06")
    if not (billing_dir / "issued.sqlite").exists():
        raise UserError(f"{billing_dir} has no issued.sqlite: issue the statements first")
    try:
        run, written = make_payment_files(
            billing_dir,
            period,
            on=when,
            out_dir=out_dir,
            again=again,
            now=datetime.now().isoformat(timespec="seconds"),
        )
    except BillingError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the payment files (nothing recorded): {exc}") from None
    for due, why in run.left_out:
        click.echo(
            f"warning: {one_line(due.member_name or due.member)} ({due.member}) left out, {why}: "
            f"{due.number} (EUR {abs(due.cents) / 100:.2f}); set them with peerwatt statements bank-details",
            err=True,
        )
    if run.earlier:
        click.echo(
            f"left out {len(run.earlier)} statement(s) and note(s) an earlier payment file holds, not yet "
            f"marked paid ({_files_of(run.earlier)}): mark them paid once the bank has booked them, or give "
            "--again to put them in a new file if the bank refused or lost that one (mark paid first what "
            "it booked of it)"
        )
    if run.older:
        click.echo(
            f"left out {len(run.older)} statement(s) and note(s) issued before this register recorded its "
            f"payment files ({_moment(run.older_since)}, on updating from an older peerwatt) and not "
            f"marked paid ({_numbers_of(run.older)}): that older peerwatt may have written them into a "
            "payment file it kept no record of; check the bank's statements and the files it wrote: "
            "mark paid what the bank booked (peerwatt statements mark-paid), and give --again to put the "
            "rest in a new file deliberately (never upload it besides an older file holding them)",
            err=True,
        )
    if run.again:
        click.echo(
            f"--again: {len(run.again)} statement(s) and note(s) an earlier payment file holds are in "
            f"these files again ({_files_of(run.again)}): upload the new files instead of those, never "
            "besides them"
        )
    if run.older_again:
        click.echo(
            f"--again: {len(run.older_again)} statement(s) and note(s) issued before this register "
            f"recorded its payment files ({_moment(run.older_since)}), which an older peerwatt may have "
            f"written into a payment file, are in these files ({_numbers_of(run.older_again)}): upload "
            "the new files only if no file of that older peerwatt holding them was or will be uploaded"
        )
    if not written and (run.left_out or run.older):
        if not run.older:
            raise UserError(
                f"no payment file for {period}: all {len(run.left_out)} statement(s) with something to "
                "pay or collect and in no earlier payment file were left out for missing or unusable bank "
                "details (above)",
                exit_code=1,
            )
        why = [f"{len(run.older)} that an older peerwatt may have written into a payment file"]
        if run.left_out:
            why.append(f"{len(run.left_out)} for missing or unusable bank details")
        raise UserError(
            f"no payment file for {period}: all {len(run.left_out) + len(run.older)} statement(s) and "
            f"note(s) with something to pay or collect and in no recorded payment file were left out: "
            f"{' and '.join(why)} (above)",
            exit_code=1,
        )
    if not written and run.earlier:
        click.echo(f"no new payment file for {period}: every unpaid statement and note is in an earlier one")
    elif not written:
        click.echo(f"nothing to pay or collect for {period}")
    for path in written:
        dues = run.debits if "pain.008" in path.name else run.credits
        what = "direct debits" if "pain.008" in path.name else "credit transfers"
        total = sum(abs(d.cents) for d in dues)
        click.echo(f"wrote {path}: {len(dues)} {what}, EUR {total // 100}.{total % 100:02d}")


def _moment(since: str | None) -> str:
    """'2026-12-07 14:44' of '2026-12-07T14:44:31'."""
    return (since or "?").replace("T", " ")[:16]


def _numbers_of(dues: list) -> str:
    """The documents' numbers, a run of consecutive ones of a period as its first and last:
    'oak-2026-06-0003 to oak-2026-06-0006, oak-2026-06-0009'."""
    runs: list[list] = []  # [first, last, prefix, seq]
    for number in sorted(d.number for d in dues):
        prefix, _, seq = number.rpartition("-")
        last = runs[-1] if runs else None
        if last is not None and seq.isdigit() and last[2] == prefix and last[3] + 1 == int(seq):
            last[1], last[3] = number, int(seq)
        else:
            runs.append([number, number, prefix, int(seq) if seq.isdigit() else -2])
    return ", ".join(first if first == last else f"{first} to {last}" for first, last, _p, _s in runs)


def _files_of(earlier: list) -> str:
    """'3 in PATH of 2026-07-07 10:31, to be collected or executed on 2026-07-12; 1 in ...'."""
    counts: dict = {}
    for _due, f in earlier:
        counts[f] = counts.get(f, 0) + 1
    return "; ".join(
        f"{n} in {f.file} of {f.made_at.replace('T', ' ')[:16]}, to be collected or executed on "
        f"{f.requested_on}"
        for f, n in counts.items()
    )


@statements.command("mark-paid")
@_BILLING
@click.option("--on", "on", required=True, help="The date it was paid, YYYY-MM-DD.")
@click.argument("numbers", nargs=-1, required=True)
def mark_paid_cmd(billing_dir: Path, on: str, numbers: tuple[str, ...]) -> None:
    """Record that statements or notes were paid (the issued documents are not changed)."""
    from peerwatt.payments import mark_paid
    from peerwatt.settings import one_line
    from peerwatt.statements import BillingError

    if not (billing_dir / "issued.sqlite").exists():
        raise UserError(f"{billing_dir} has no issued.sqlite: no statements were issued there")
    try:
        dues = mark_paid(billing_dir, numbers, on=on, now=date.today().isoformat())
    except BillingError as exc:
        raise UserError(str(exc)) from None
    for number, due in zip(numbers, dues, strict=True):
        cents = abs(due.cents)
        way = "paid by" if due.cents < 0 else "paid to"
        click.echo(
            f"{number}: EUR {cents // 100}.{cents % 100:02d} {way} "
            f"{one_line(due.member_name or due.member)}, on {on}"
        )
