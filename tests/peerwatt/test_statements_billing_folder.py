"""The billing folder as an operator has it: a billing.toml of other settings only, and a copy of
the register in a folder that cannot be written.

Found in a QA pass: a billing.toml holding only `[gridops.metering_points]`, as docs/billing.md's
gridops section shows it, made `statements` fail "with vat.charged = false, vat.note must state
why" (without the file the default applies); and `statements verify --billing DIR` with DIR a
read-only folder holding a copy of the register failed "unable to open database file"."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chain.canonical import dumps_checked
from chain.store import Store
from peerwatt.statements import BillingError, load_config
from tests.peerwatt.test_statements_month import Month, build_month, issue
from tests.support.cli import peerwatt

METERING_POINTS = '[gridops.metering_points]\n"AT0030000000000000000000000012345" = "{meter}"\n'


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


def test_a_billing_toml_without_vat_takes_the_default(month: Month, tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    billing.mkdir()
    (billing / "billing.toml").write_text(METERING_POINTS.format(meter=month.c.meters[0].id))
    out = tmp_path / "out"
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--out", str(out)]
    res = peerwatt(*args, "--billing", str(billing), "--height", str(month.issue_height))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("issued 5 statements")
    config = load_config(billing)
    assert (config.currency, config.vat.charged, config.vat.note) == ("EUR", False, "VAT not charged.")
    # a [vat] table that does not charge VAT still needs its note
    (billing / "billing.toml").write_text('currency = "EUR"\n[vat]\ncharged = false\n')
    with pytest.raises(BillingError, match=r"with vat.charged = false, vat.note must state why"):
        load_config(billing)
    (billing / "billing.toml").write_text('currency = "CHF"\n')
    assert load_config(billing).currency == "CHF" and load_config(billing).vat.note == "VAT not charged."


@contextmanager
def immutable(folder: Path) -> Iterator[None]:
    """``folder`` cannot be written, by root either (chattr +i), for the block."""
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root and a file system that has it)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_verify_reads_a_register_copied_into_a_read_only_folder(month: Month, tmp_path: Path) -> None:
    billing = tmp_path / "billing"
    store = Store.open(month.node, readonly=True)
    try:
        docs = issue(store, month, billing)
    finally:
        store.close()
    path = tmp_path / "statement.json"
    path.write_bytes(dumps_checked(docs[0]))
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(billing / "issued.sqlite", copy / "issued.sqlite")
    with immutable(copy):
        res = peerwatt("statements", "verify", "--data", str(month.node), str(path), "--billing", str(copy))
        assert res.returncode == 0, res.stderr
        assert f"checked against the issuer's register {copy / 'issued.sqlite'}" in res.stdout
        assert sorted(p.name for p in copy.iterdir()) == ["issued.sqlite"]

    # a copy whose -wal holds what the register does not yet: one line saying what to do
    wal_copy = tmp_path / "wal-copy"
    wal_copy.mkdir()
    shutil.copy(billing / "issued.sqlite", wal_copy / "issued.sqlite")
    writer = sqlite3.connect(copy / "issued.sqlite")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE later (a)")
    writer.commit()
    shutil.copy(copy / "issued.sqlite", wal_copy / "issued.sqlite")
    shutil.copy(copy / "issued.sqlite-wal", wal_copy / "issued.sqlite-wal")
    writer.close()
    with immutable(wal_copy):
        res = peerwatt(
            "statements", "verify", "--data", str(month.node), str(path), "--billing", str(wal_copy)
        )
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: cannot read the register {wal_copy / 'issued.sqlite'}: ")
    assert "its -wal file holds changes not yet in it" in line
