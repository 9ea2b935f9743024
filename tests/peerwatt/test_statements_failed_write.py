"""A run that fails while or after writing its files leaves none of them behind: the numbers were
never issued, and "it can simply be run again" (docs/billing.md). Files that were in --out before
are left as they were.

Found in a QA pass: with the third household's file unwritable (an immutable file of that name in
--out), the run said it issued nothing, but the first and second households' files stayed in --out
for numbers never issued."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from chain.store import Store
from peerwatt.statements import BillingError, files_of_run, issue_period
from tests.peerwatt.test_statements_month import Month, build_month
from tests.support.cli import peerwatt


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    return build_month(tmp_path_factory.mktemp("month"))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def issued_numbers(billing: Path) -> list[str]:
    import sqlite3

    if not (billing / "issued.sqlite").exists():
        return []
    conn = sqlite3.connect(billing / "issued.sqlite")
    try:
        return [n for (n,) in conn.execute("SELECT number FROM documents")]
    finally:
        conn.close()


def test_a_file_that_cannot_be_put_in_place_takes_back_those_before_it(
    month: Month, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, billing = tmp_path / "out", tmp_path / "billing"
    out.mkdir()
    (out / "oak-street-2026-06.csv").write_text("a summary kept by hand\n")
    (out / "oak-street-2026-06-0003.pdf").write_bytes(b"an older file of that name")
    before = contents(out)
    replace = os.replace

    def failing(src, dst):  # the third household's PDF cannot be replaced (as an immutable file)
        if str(dst).endswith("oak-street-2026-06-0003.pdf"):
            raise PermissionError(1, "Operation not permitted")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    store = Store.open(month.node, readonly=True)
    try:
        with pytest.raises(BillingError, match=r"cannot write .*oak-street-2026-06-0003\.pdf: Operation not"):
            with files_of_run(out) as (write, _written):
                issue_period(
                    store, billing, "2026-06", issued_at="2026-07-01", height=month.issue_height, write=write
                )
    finally:
        store.close()
    assert contents(out) == before
    assert issued_numbers(billing) == []


def test_a_run_that_fails_after_writing_takes_its_files_back(month: Month, tmp_path: Path) -> None:
    """The files are written, then the register cannot keep the documents (here: an error right
    after the write, as a failed COMMIT or Ctrl-C would be): no file of them stays, and a folder
    the run made goes too."""
    out, billing = tmp_path / "new-out", tmp_path / "billing"

    def then_fail(write):
        def run(docs):
            write(docs)
            assert len(list(out.glob("*.pdf"))) == 5
            raise KeyboardInterrupt

        return run

    store = Store.open(month.node, readonly=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            with files_of_run(out) as (write, _written):
                issue_period(
                    store,
                    billing,
                    "2026-06",
                    issued_at="2026-07-01",
                    height=month.issue_height,
                    write=then_fail(write),
                )
    finally:
        store.close()
    assert not out.exists()
    assert issued_numbers(billing) == []


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_cli_with_an_immutable_file_in_out(month: Month, tmp_path: Path) -> None:
    """As the QA pass did it: `chattr +i` on an existing file of the third household's name."""
    out, billing = tmp_path / "out", tmp_path / "billing"
    out.mkdir()
    locked = out / "oak-street-2026-06-0003.pdf"
    locked.write_bytes(b"immutable")
    (out / "README.txt").write_text("the treasurer's own file\n")
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root and a file system that has it)")
    try:
        before = contents(out)
        args = ["statements", "--data", str(month.node), "--period", "2026-06", "--out", str(out)]
        res = peerwatt(*args, "--billing", str(billing), "--height", str(month.issue_height))
        assert res.returncode == 2, res.stdout
        (line,) = res.stderr.splitlines()
        assert line.startswith("error: cannot write the statements: cannot write ") and str(locked) in line
        assert contents(out) == before
        assert issued_numbers(billing) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    locked.unlink()  # and it can simply be run again
    res = peerwatt(*args, "--billing", str(billing), "--height", str(month.issue_height))
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("oak-street-2026-06-000?.pdf"))) == 5
