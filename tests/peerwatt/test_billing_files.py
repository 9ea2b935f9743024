"""The billing folder's files are the treasurer's (docs/billing.md, "Who can read the files";
docs/privacy.md): found in a QA pass, under umask 022 ``issued.sqlite`` (names, IBANs, mandates
after ``statements bank-details``) and the statement files were -rw-r--r-- in 0755 folders; a
folder where the register should be was reported as "unable to open database file"; a failed or
interrupted run left an empty register behind."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.store import Store
from peerwatt.statements import BillingError, IssuedStore, issue_month_end
from tests.peerwatt.test_statements_month import Month, month  # noqa: F401  (the fixture)
from tests.support.cli import peerwatt


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def run(month: Month, billing: Path, out: Path):  # noqa: F811
    args = ["statements", "--data", str(month.node), "--period", "2026-06", "--issued-on", "2026-07-01"]
    return peerwatt(*args, "--billing", str(billing), "--height", str(month.issue_height), "--out", str(out))


def test_the_register_and_statement_files_are_owner_only(month: Month, tmp_path: Path, umask_022) -> None:  # noqa: F811
    billing, out = tmp_path / "node" / "billing", tmp_path / "out"
    r = run(month, billing, out)
    assert r.returncode == 0, r.stderr
    assert mode(billing) == 0o700
    register = billing / "issued.sqlite"
    for path in (register, *(register.with_name(register.name + s) for s in ("-wal", "-shm"))):
        if path.exists():
            assert mode(path) == 0o600, path
    files = sorted(out.iterdir())
    assert len(files) == 5 * 3 + 1  # json, csv and pdf per household, and the period's summary
    assert {mode(p) for p in files} == {0o600}


def test_a_wider_billing_folder_and_register_are_narrowed(tmp_path: Path, caplog, umask_022) -> None:
    billing = tmp_path / "billing"
    IssuedStore(billing).close()
    billing.chmod(0o755)
    (billing / "issued.sqlite").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="peerwatt.statements"):
        IssuedStore(billing).close()
    assert mode(billing) == 0o700 and mode(billing / "issued.sqlite") == 0o600
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"{billing} was mode 0755, readable by others: now 0700" in line for line in lines), lines
    assert any("issued.sqlite was mode 0644" in line for line in lines), lines


def test_a_folder_where_the_register_should_be_is_named_a_folder(tmp_path: Path) -> None:
    (tmp_path / "billing" / "issued.sqlite").mkdir(parents=True)
    with pytest.raises(BillingError) as err:
        IssuedStore(tmp_path / "billing")
    assert "issued.sqlite: it is not a file (a folder?)" in str(err.value)
    assert "unable to open database file" not in str(err.value)


def test_a_run_that_cannot_write_a_pdf_leaves_no_register(month: Month, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    (out / "oak-street-2026-06-0002.pdf").mkdir(parents=True)  # a folder where a statement goes
    r = run(month, tmp_path / "billing", out)
    assert r.returncode == 2 and "cannot write the statements" in r.stderr
    assert not (tmp_path / "billing").exists()  # nor the billing folder it made


def test_an_interrupted_run_leaves_no_register(month: Month, tmp_path: Path) -> None:  # noqa: F811
    def interrupted(docs: list) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the files are written

    store = Store.open(month.node, readonly=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            issue_month_end(
                store,
                tmp_path / "billing",
                "2026-06",
                issued_at="2026-07-01",
                height=month.issue_height,
                write=interrupted,
            )
    finally:
        store.close()
    assert not (tmp_path / "billing").exists()  # no register, nor the billing folder it made


def test_a_failed_run_keeps_a_register_that_holds_something(month: Month, tmp_path: Path) -> None:  # noqa: F811
    billing, out = tmp_path / "billing", tmp_path / "out"
    assert run(month, billing, out).returncode == 0
    again = run(month, billing, out)
    assert again.returncode == 2 and "were issued on 2026-07-01" in again.stderr
    assert (billing / "issued.sqlite").is_file()
