"""A file-system refusal that no command turned into its own message is still one line on stderr
and exit 1 from `peerwatt`, never a traceback (the QA passes found such paths more than once)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from peerwatt.cli import COMMANDS, main


@click.command("read-it")
@click.argument("path")
def read_it(path: str) -> None:
    """A command that reads a file and turns no error into its own line."""
    Path(path).read_text()


@pytest.mark.parametrize("kind", ["folder", "under a file"])
def test_an_os_error_is_one_line(tmp_path: Path, capsys, monkeypatch, kind: str) -> None:
    if kind == "folder":
        target, expected = tmp_path, "Is a directory"
    else:
        (tmp_path / "f").write_text("")
        target, expected = tmp_path / "f" / "x", "Not a directory"
    monkeypatch.setitem(COMMANDS, "read-it", f"{__name__}:read_it")
    with pytest.raises(SystemExit) as exited:
        main(["read-it", str(target)])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: cannot use {target}: {expected}\n"
