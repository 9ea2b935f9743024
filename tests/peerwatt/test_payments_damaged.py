"""A damaged billing register (bytes overwritten inside its pages) is refused by every payment
command in one line, exit 2, with nothing written or recorded.

Found in a QA pass: `statements pay` ended in a traceback (`sqlite3.DatabaseError: database disk
image is malformed`), and `statements mark-paid` said `no statement or note ... nothing recorded`
of a statement the register holds (its row could not be found in the damaged pages)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chain.store import integrity_problems
from tests.peerwatt import test_payments
from tests.peerwatt.test_payments import give_everyone_bank_details
from tests.peerwatt.test_statements_month import Month
from tests.support.cli import peerwatt

month, issued = test_payments.month, test_payments.issued  # (fixtures)


def damage(register: Path) -> None:
    """Every 7th byte after the first page overwritten, as the QA pass did."""
    assert not register.with_name(register.name + "-wal").exists()  # (all in the file itself)
    data = bytearray(register.read_bytes())
    for offset in range(4096, len(data), 7):
        data[offset] = 0x41
    register.write_bytes(bytes(data))
    conn = sqlite3.connect(register)
    try:
        assert integrity_problems(conn, 1)
    finally:
        conn.close()


def refused(res, register: Path) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: cannot use the register {register}: database disk image is malformed")
    assert "the file is damaged, nothing recorded: restore it from its backup" in line


@pytest.mark.parametrize("command", ["pay", "mark-paid", "bank-details"])
def test_every_payment_command_refuses_a_damaged_register(
    command: str, month: Month, issued: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    billing, docs = issued
    give_everyone_bank_details(billing, docs)
    register = billing / "issued.sqlite"
    damage(register)
    before = register.read_bytes()
    out = tmp_path / "sepa"
    args = {
        "pay": ["--period", "2026-06", "--out", str(out)],
        "mark-paid": ["--on", "2026-07-05", docs[0]["number"]],
        # --data: the member is found on the ledger, and the register is first opened to store them
        "bank-details": [
            "--member",
            docs[0]["member"],
            "--data",
            str(month.node),
            "--name",
            "Anna Huber",
            "--iban",
            "AT611904300234573201",
        ],  # fmt: skip
    }[command]
    refused(peerwatt("statements", command, "--billing", str(billing), *args), register)
    assert not out.exists()
    assert register.read_bytes() == before  # nothing recorded
