"""`peerwatt node erase` with a billing register it cannot use, and the deletion of bank details
that cannot compact the register.

Found in a QA pass: `node erase` on a damaged ``billing/issued.sqlite`` erased the ledger
payloads, then ended in a traceback (`BillingError: cannot use the register ...: file is not a
database (check the billing folder's owner and mode)`), saying nothing of the erased member's
bank details, still in the register. Now one line, exit 2: the register's error, the members
whose bank details are not deleted, that the payloads are erased and to run it again; a second
run once the register is restored deletes them. And ``erase_bank_details`` said the details were
deleted while another process reading the register kept SQLite from rewriting the file, their
IBAN still in it: now it says their bytes may remain, and a later call removes them."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from peerwatt import statements
from peerwatt.payments import bank_details, erase_bank_details, set_bank_details
from peerwatt.statements import BillingError
from tests.peerwatt.test_payments_damaged import damage
from tests.reliability.test_erasure import AFTER_CORRECTION_WINDOW, DECIDED_AT, vote_erasure
from tests.support.cli import peerwatt
from tests.support.market_ledger import build_market

GONE_IBAN, KEPT_IBAN, OTHER_IBAN = "DE89370400440532013000", "AT611904300234573201", "NL91ABNA0417164300"


def register_bytes(billing: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(billing.glob("issued.sqlite*")))


def give_bank_details(billing: Path, gone: str, kept: str) -> None:
    for member, iban in ((gone, GONE_IBAN), (kept, KEPT_IBAN)):
        set_bank_details(billing, member, name="Household Huber", iban=iban, now="2026-07-01")


@pytest.fixture
def erased_node(tmp_path: Path) -> tuple[Path, str, str]:
    """A stopped one-validator node whose member 0 was voted erased, its retention passed, and a
    billing folder in it holding the bank details of member 0 and member 1."""
    c = build_market(tmp_path, validators=1, members=4)
    vote_erasure(c, 0, DECIDED_AT)
    c.run_block([], AFTER_CORRECTION_WINDOW)
    for ledger in c.ledgers:
        ledger.close()
    data = tmp_path / "validator-0"
    give_bank_details(data / "billing", c.members[0].id, c.members[1].id)
    return data, c.members[0].id, c.members[1].id


def not_a_database(register: Path) -> None:
    register.write_bytes(b"this is not a database, it was overwritten\n" * 100)


@pytest.mark.parametrize("how", [not_a_database, damage], ids=["not-a-database", "pages-overwritten"])
def test_node_erase_with_a_damaged_register_says_what_is_erased_and_what_is_not(erased_node, how, tmp_path):
    data, gone, kept = erased_node
    billing = data / "billing"
    register = billing / "issued.sqlite"
    backup = tmp_path / "issued.sqlite.backup"
    shutil.copy(register, backup)
    how(register)
    damaged = register.read_bytes()

    res = peerwatt("node", "erase", "--data", str(data), "--now", str(AFTER_CORRECTION_WINDOW))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.splitlines() == ["erased 3 payload(s) of 1 member(s)"]
    (line,) = res.stderr.splitlines()  # no traceback
    assert line.startswith(f"error: cannot use the register {register}: ")
    assert "the file is damaged, nothing recorded: restore it from its backup" in line
    assert "owner and mode" not in line
    assert f"the bank details of {gone}, if it holds any, are not deleted" in line
    assert line.endswith(
        "the ledger payloads are erased (above): run `peerwatt node erase` again once the register "
        "can be used"
    )
    assert register.read_bytes() == damaged  # nothing written to it

    shutil.copy(backup, register)  # restored from its backup: the bank details are back, as said
    again = peerwatt("node", "erase", "--data", str(data), "--now", str(AFTER_CORRECTION_WINDOW))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "erased 0 payload(s) of 1 member(s)",
        f"deleted the bank details of 1 erased member(s) in {billing}",
    ]
    assert GONE_IBAN.encode() not in register_bytes(billing)
    assert set(bank_details(billing)) == {kept}


def test_bank_details_whose_bytes_a_reader_keeps_in_the_file_are_not_said_to_be_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing = tmp_path / "billing"
    give_bank_details(billing, "gone-member", "kept-member")
    monkeypatch.setattr(statements, "LOCK_WAIT_S", 0.2)  # (how long the checkpoint waits for the reader)
    reader = sqlite3.connect(billing / "issued.sqlite", isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM bank_details").fetchone() == (2,)
        with pytest.raises(BillingError) as refused:
            erase_bank_details(billing, "gone-member")
        assert str(refused.value) == (
            f"cannot compact the register {billing / 'issued.sqlite'} (another process was reading it): "
            "the bank details of gone-member are deleted from its table, but their bytes may remain in "
            "the file and its -wal"
        )
        assert GONE_IBAN.encode() in register_bytes(billing)  # as it says
    finally:
        reader.close()
    assert set(bank_details(billing)) == {"kept-member"}
    assert erase_bank_details(billing, "gone-member") == []  # nothing left to delete; compacted
    assert GONE_IBAN.encode() not in register_bytes(billing)
    assert KEPT_IBAN.encode() in register_bytes(billing)


def test_bank_details_of_several_members_go_in_one_transaction(tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    give_bank_details(billing, "gone-member", "kept-member")
    set_bank_details(billing, "also-gone", name="Household Berger", iban=OTHER_IBAN, now="2026-07-01")
    gone = erase_bank_details(billing, "gone-member", "never-had-any", "also-gone")
    assert gone == ["also-gone", "gone-member"]
    assert set(bank_details(billing)) == {"kept-member"}
    files = register_bytes(billing)
    assert GONE_IBAN.encode() not in files and OTHER_IBAN.encode() not in files
    assert erase_bank_details(billing) == [] and erase_bank_details(tmp_path / "none", "x") == []
