"""The one line for an error on the billing register (``IssuedStore.error``) gives the advice
that is true of its kind: a damaged file is to be restored from its backup, a register another
run holds is to be used again when it has finished, and only a file or folder that cannot be
opened or written is about owner and mode.

Found in a QA pass: every SQLite error was told to "check the billing folder's owner and mode",
a damaged register met inside a transaction ("database disk image is malformed") and one that
is not a database at all too."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from peerwatt import statements
from peerwatt.payments import set_bank_details
from peerwatt.statements import BillingError, IssuedStore
from tests.peerwatt.test_payments_damaged import damage

OWNER = "check their owner and mode"


@pytest.fixture
def billing(tmp_path: Path) -> Path:
    folder = tmp_path / "billing"
    for i, iban in enumerate(["DE89370400440532013000", "AT611904300234573201", "NL91ABNA0417164300"]):
        set_bank_details(folder, f"member-{i}", name="Household Huber", iban=iban, now="2026-07-01")
    return folder


def test_a_register_damaged_inside_a_transaction_is_said_to_be_damaged(billing: Path) -> None:
    register = billing / "issued.sqlite"
    damage(register)  # the first page (the schema) is whole: the register opens
    issued = IssuedStore(billing)
    try:
        with pytest.raises(BillingError) as refused, issued.transaction():
            issued.conn.execute("SELECT * FROM bank_details").fetchall()
    finally:
        issued.close()
    assert str(refused.value) == (
        f"cannot use the register {register}: database disk image is malformed: the file is damaged, "
        "nothing recorded: restore it from its backup (docs/billing.md)"
    )


def test_a_register_that_is_not_a_database_is_said_to_be_damaged(billing: Path) -> None:
    register = billing / "issued.sqlite"
    register.write_bytes(b"this is not a database, it was overwritten\n" * 100)
    with pytest.raises(BillingError) as refused:
        IssuedStore(billing)
    assert str(refused.value) == (
        f"cannot use the register {register}: file is not a database: the file is damaged, nothing "
        "recorded: restore it from its backup (docs/billing.md)"
    )


def test_a_register_another_run_holds_is_said_to_be_held(
    billing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statements, "LOCK_WAIT_S", 0.1)
    holder = sqlite3.connect(billing / "issued.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        issued = IssuedStore(billing)
        try:
            with pytest.raises(BillingError) as refused, issued.transaction():
                pass
        finally:
            issued.close()
    finally:
        holder.close()
    assert str(refused.value) == (
        f"cannot use the register {billing / 'issued.sqlite'}: another run (peerwatt statements, pay, "
        "mark-paid) has held it for more than 0.1 s; run this again when it has finished"
    )


def test_only_a_register_that_cannot_be_opened_or_written_is_about_owner_and_mode(billing: Path) -> None:
    issued = IssuedStore(billing)
    try:
        issued.conn.execute("PRAGMA query_only=ON")  # SQLite's own SQLITE_READONLY, even as root
        with pytest.raises(sqlite3.OperationalError) as caught:
            issued.conn.execute("DELETE FROM bank_details")
        assert caught.value.sqlite_errorname == "SQLITE_READONLY"
        readonly = str(issued.error(caught.value))
        denied = str(issued.error(PermissionError(errno.EACCES, "Permission denied")))
        other = str(issued.error(sqlite3.OperationalError("no such table: nowhere")))
    finally:
        issued.close()
    register = billing / "issued.sqlite"
    assert readonly.startswith(f"cannot use the register {register}: attempt to write a readonly database (")
    assert OWNER in readonly and "mounted read-only" in readonly
    assert denied.startswith(f"cannot use the register {register}: Permission denied (") and OWNER in denied
    assert other == f"cannot use the register {register}: no such table: nowhere"
