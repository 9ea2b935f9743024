"""peerwatt.errors.write_outputs puts back what it replaced when a later target cannot be moved
into place, and hands a command that fails after writing an undo function: the one all-or-nothing
writer of `report`, `gov`, `agent join-request` and `statements` (peerwatt.statements.write_files,
which had this put-back of its own before it used write_outputs). `report` overwrote its earlier
tables and left them new when a later one could not be put in place."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from peerwatt.commands.report import REPORT_TABLES, _path
from peerwatt.commands.report import report as report_command
from peerwatt.errors import UserError, write_outputs
from tests.support.market_ledger import closed_market_data


def failing_replace_of(target: Callable[[str], bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """os.replace fails (as for an immutable file) when moving a file onto a target ``target``
    picks; a file put back is moved from its own temporary file and is not picked."""
    replace = os.replace

    def failing(src, dst):
        if target(str(dst)):
            raise PermissionError(1, "Operation not permitted")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)


def test_a_target_that_cannot_be_put_in_place_puts_back_those_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, locked = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    old.write_text("old")
    old.chmod(0o640)
    failing_replace_of(lambda dst: dst == str(locked), monkeypatch)
    with pytest.raises(UserError, match=r"cannot write .*c\.csv: Operation not permitted"):
        write_outputs({p: lambda path: path.write_text("new") for p in (old, new, locked)}, overwrite=True)
    assert os.listdir(tmp_path) == ["a.csv"]  # no new file, no temporary file
    assert old.read_text() == "old" and stat.S_IMODE(old.stat().st_mode) == 0o640


def test_undo_takes_back_what_was_written(tmp_path: Path) -> None:
    old, new = tmp_path / "a.csv", tmp_path / "b.csv"
    old.write_text("old")
    undo: list[Callable[[], None]] = []
    write_outputs(
        {old: lambda p: p.write_text("new a"), new: lambda p: p.write_text("new b")}, overwrite=True
    )
    write_outputs(
        {old: lambda p: p.write_text("newer"), new: lambda p: p.write_text("b")}, overwrite=True, undo=undo
    )
    assert old.read_text() == "newer" and new.read_text() == "b"
    (take_back,) = undo
    take_back()
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]
    assert old.read_text() == "new a" and new.read_text() == "new b"
    take_back()  # (once: a second call changes nothing)
    assert old.read_text() == "new a"
    undo.clear()
    write_outputs({tmp_path / "c.csv": lambda p: p.write_text("c")}, overwrite=False, undo=undo)
    undo[0]()
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


def test_an_existing_target_that_cannot_be_read_is_refused_before_any_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It could not be put back: refused in one line, nothing changed (as root reads any file,
    the read fails by a patch here)."""
    first, unreadable = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("old a")
    unreadable.write_text("old b")
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path == unreadable:
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match=r"b\.csv exists and cannot be read, .*: move it away"):
        write_outputs(
            {first: lambda p: p.write_text("new"), unreadable: lambda p: p.write_text("new")}, overwrite=True
        )
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]
    assert first.read_text() == "old a" and unreadable.read_text() == "old b"


def test_report_puts_back_its_earlier_tables_when_the_last_cannot_be_written(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = closed_market_data(tmp_path_factory.mktemp("market"))
    folder = tmp_path_factory.mktemp("out")
    out = folder / "part.csv"
    targets = [str(_path(out, name)) for name in REPORT_TABLES]
    for target in targets:
        Path(target).write_text(f"old {target}")
    moved: list[str] = []

    def last_table(dst: str) -> bool:  # (the tables put back after it are moved too)
        if dst in targets:
            moved.append(dst)
        return len(moved) == len(targets)

    failing_replace_of(last_table, monkeypatch)
    res = CliRunner().invoke(report_command, ["--data", str(node), "--out", str(out)])
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception) == f"cannot write {moved[len(targets) - 1]}: Operation not permitted"
    assert len(moved) == 2 * len(targets) - 1  # the three before it were put back
    assert sorted(os.listdir(folder)) == sorted(Path(t).name for t in targets)
    for target in targets:
        assert Path(target).read_text() == f"old {target}", target


def test_a_symbolic_link_is_put_back_as_the_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in a review: a target that was a symbolic link was put back as a plain copy of what it
    pointed to. The link is replaced (never what it points to) and put back as the link."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.csv").write_text("keep")
    link = tmp_path / "a.csv"
    link.symlink_to(tmp_path / "real" / "a.csv")
    undo: list[Callable[[], None]] = []
    write_outputs({link: lambda p: p.write_text("new"), tmp_path / "b.csv": lambda p: p.write_text("b")},
                  overwrite=True, undo=undo)  # fmt: skip
    assert not link.is_symlink() and link.read_text() == "new"
    assert (tmp_path / "real" / "a.csv").read_text() == "keep"
    undo[0]()
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "real" / "a.csv")
    assert not (tmp_path / "b.csv").exists()


def test_a_pipe_as_a_target_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Found in a review: reading a named pipe to keep it for the put-back waited for ever."""
    import threading

    pipe = tmp_path / "out.csv"
    os.mkfifo(pipe)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            write_outputs({pipe: lambda p: p.write_text("x")}, overwrite=True)
            outcome.append(None)
        except BaseException as exc:  # (the assertion below says what came)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # the old code waits on the pipe: let it go, then fail
        with open(pipe, "wb"):
            pass
        thread.join(5)
        pytest.fail("write_outputs waited on a pipe")
    (exc,) = outcome
    assert isinstance(exc, UserError)
    assert str(exc) == f"cannot write {pipe}: it is not a regular file (a pipe, a device): give a file name"
    assert stat.S_ISFIFO(pipe.stat().st_mode) and not list(tmp_path.glob(".peerwatt-*"))
