"""The one exception type a user can cause: it carries a one-line message naming cause and fix;
and writing a command's output files all or nothing, with any failure as such a line."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

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


def write_outputs(
    writers: dict[Path, Callable[[Path], object]],
    *,
    overwrite: bool,
    undo: list[Callable[[], None]] | None = None,
) -> None:
    """Write a command's output files all or nothing, or raise a one-line UserError.

    ``writers`` maps each target to a function that writes the content to the path it is given
    (a temporary file beside the target). Every target is checked first (a folder, a missing
    folder, an existing file when not ``overwrite``), then all are written to temporary files,
    and only when every one was written are they moved into place; if one cannot be, those moved
    before it are taken back: a file that was not there removed, one that was put back as it was
    (its content and mode, read before any target is replaced: one that cannot be read is
    refused). A failure or interruption leaves the targets as they were and no temporary file
    behind. ``undo``, when given, gets a function that takes them all back the same way, for a
    command that fails after writing them (``peerwatt statements``: a register that could not
    keep the documents the files are of)."""
    check_outputs(writers, overwrite=overwrite)
    temps: dict[Path, Path] = {}
    placed: list[tuple[Path, Before]] = []  # in order, with what was there before
    current: Path | None = None
    try:
        for current, write in writers.items():
            # a short name of its own: the target's name may already be as long as a name can be
            temps[current] = current.with_name(f".peerwatt-{os.getpid()}-{len(temps)}.tmp")
            write(temps[current])
        befores = {path: _before(path) if overwrite else None for path in temps}
        for current, tmp in temps.items():
            if overwrite:
                os.replace(tmp, current)
            else:
                _link_new(tmp, current)
            placed.append((current, befores[current]))
    except BaseException as exc:
        _take_back(placed)
        if isinstance(exc, FileExistsError):
            raise UserError(f"{current} already exists; refusing to overwrite (move it away first)") from None
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {current}: {exc.strerror or exc}") from None
        raise
    finally:
        _unlink(temps.values())
    if undo is not None:
        undo.append(lambda: _take_back(placed))


# What a target was before it was replaced: a file's content and mode, a symbolic link's target,
# or None (there was none)
Before = tuple[bytes, int] | str | None


def _before(path: Path) -> Before:
    """What a target about to be replaced is (to put it back if writing fails): a file's content
    and mode, a symbolic link's target (the link is replaced, never what it points to), None if
    there is none; UserError when it cannot be read, or is a pipe or a device (reading a pipe would
    wait for ever: found in a review)."""
    if path.is_symlink():
        return os.readlink(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise UserError(f"cannot write {path}: it is not a regular file (a pipe, a device): give a file name")
    try:
        return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise UserError(
            f"{path} exists and cannot be read, to be put back if the run fails ({exc.strerror or exc}): "
            "move it away"
        ) from None


def _take_back(placed: list[tuple[Path, Before]]) -> None:
    """Undo moving the targets ``placed`` into place, last first: remove one that was not there,
    put back one that was (a warning for one that cannot be: the failure being undone is what
    the command reports). Done once: ``placed`` is emptied."""
    for path, before in reversed(placed):
        try:
            if before is None:
                path.unlink()
            else:
                _put_back(path, before)
        except OSError as exc:
            log.warning("cannot take back %s after the failed run: %s", path, exc.strerror or exc)
    placed.clear()


def _put_back(path: Path, before: tuple[bytes, int] | str) -> None:
    """``path`` as it was (:data:`Before`), whole or not at all: made beside it and renamed over it."""
    tmp = path.with_name(f".peerwatt-{os.getpid()}-back.tmp")
    try:
        if isinstance(before, str):
            os.symlink(before, tmp)
        else:
            data, mode = before
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
        os.replace(tmp, path)
    finally:
        _unlink([tmp])


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
