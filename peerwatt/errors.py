"""The one exception type a user can cause: it carries a one-line message naming cause and fix;
and writing a command's output files all or nothing, with any failure as such a line."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

NAME_MAX = 255  # bytes in one file name (Linux file systems)


class UserError(Exception):
    """A failure the user can fix (bad config, unreachable meter, wrong key).

    The CLI prints ``str(error)`` as a single line, without a traceback, and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def check_outputs(paths: Iterable[Path], *, overwrite: bool) -> None:
    """Raise a one-line UserError unless each of ``paths`` can be written as a file: it is no
    folder, its folder exists, and it does not exist yet unless ``overwrite``."""
    for path in paths:
        if len(path.name.encode()) > NAME_MAX:
            raise UserError(f"cannot write {path}: its name is longer than {NAME_MAX} bytes")
        try:
            _check_output(path, overwrite)
        except OSError as exc:  # a path the system cannot even look at (too long, a loop...)
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_output(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder (give a file name)")
    if not path.parent.is_dir():
        why = "is not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"cannot write {path}: {path.parent} {why}")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise UserError(f"{path} already exists; refusing to overwrite (move it away first)")


def check_writable(paths: Iterable[Path]) -> None:
    """Raise a one-line UserError unless each of ``paths`` could be written (made or replaced)
    now: it is no folder, it is writable if it exists, and its nearest existing folder is one
    this process may write into (checked before a command writes any of several files, so a
    refusal leaves none of them changed)."""
    for path in paths:
        try:
            if path.is_dir():
                raise UserError(f"cannot write {path}: it is a folder")
            if path.exists():
                if not os.access(path, os.W_OK):
                    raise UserError(f"cannot write {path}: permission denied")
                continue
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise UserError(f"cannot write {path}: {folder} is a file, not a folder")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {path}: permission denied in {folder}")
        except OSError as exc:  # a path the system cannot even look at (too long, a loop...)
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_outputs(writers: dict[Path, Callable[[Path], object]], *, overwrite: bool) -> None:
    """Write a command's output files all or nothing, or raise a one-line UserError.

    ``writers`` maps each target to a function that writes the content to the path it is given
    (a temporary file beside the target). Every target is checked first (a folder, a missing
    folder, an existing file when not ``overwrite``), then all are written to temporary files,
    and only when every one was written are they moved into place: a failure leaves no target
    half-written and no temporary file behind.
    """
    check_outputs(writers, overwrite=overwrite)
    temps: dict[Path, Path] = {}
    linked: list[Path] = []
    current: Path | None = None
    try:
        for current, write in writers.items():
            # a short name of its own: the target's name may already be as long as a name can be
            temps[current] = current.with_name(f".peerwatt-{os.getpid()}-{len(temps)}.tmp")
            write(temps[current])
        for current, tmp in temps.items():
            if overwrite:
                os.replace(tmp, current)
            else:
                _link_new(tmp, current)
                linked.append(current)
    except FileExistsError:
        _unlink(linked)
        raise UserError(f"{current} already exists; refusing to overwrite (move it away first)") from None
    except OSError as exc:
        _unlink(linked)
        raise UserError(f"cannot write {current}: {exc.strerror or exc}") from None
    finally:
        _unlink(temps.values())


def _link_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (FileExistsError), also if it was made
    since it was checked; on a file system without hard links, a rename after a last check."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists() or path.is_symlink():
            raise FileExistsError(path) from None
        os.replace(tmp, path)


def _unlink(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
