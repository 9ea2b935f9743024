"""Files and folders readable by their owner only, whatever the umask.

The dashboard's accounts, index and session key, and the treasurer's billing register and
statements, hold what other users of the machine must not read: a folder is made mode 0700 and a
file 0600 (SQLite's ``-wal`` and ``-shm`` companions take the mode of their database file). One
found wider (made by an older version, another tool, or copied in) is narrowed, with one log line
saying so.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("peerwatt.files")

FOLDER_MODE = 0o700
FILE_MODE = 0o600
COMPANIONS = ("-wal", "-shm", "-journal")


def _narrow(path: Path, mode: int, quiet: bool = False) -> None:
    """Take group and other bits away from an existing ``path`` (one log line when it had any,
    unless ``quiet``)."""
    try:
        st_mode = path.stat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode)):
        # a device, pipe or socket (a link to /dev/null put in a file's place): not ours to change
        # (found in a QA pass: /dev/null became mode 0600 for the whole machine)
        return
    current = stat.S_IMODE(st_mode)
    if current & 0o077 == 0:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning(
            "%s is mode %04o, readable by others, and cannot be narrowed: %s", path, current, exc.strerror
        )
        return
    if not quiet:
        log.warning(
            "%s was mode %04o, readable by others: now %04o (owner only)", path, current, current & mode
        )


def private_folder(folder: str | Path) -> Path:
    """The folder, created (with its parents) mode 0700, or narrowed to owner-only if wider: with
    a log line when it holds anything (an empty one, just made by another tool under the umask,
    exposed nothing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():  # left as it is: not ours to narrow
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", str(folder))
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            pass
    try:
        empty = not any(folder.iterdir())
    except OSError:
        empty = False
    _narrow(folder, FOLDER_MODE, quiet=empty)
    return folder


def private_file(path: str | Path) -> bool:
    """A file (and its SQLite companions) owner-only: created empty mode 0600 when missing (SQLite
    then writes into it, and gives ``-wal``/``-shm`` the same mode), narrowed when an existing one
    is wider. True when it was created here."""
    path = Path(path)
    if path.is_dir():  # left as it is: not ours to narrow
        raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file", str(path))
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        made = True
    except FileExistsError:
        made = False
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in COMPANIONS)):
        _narrow(candidate, FILE_MODE)
    return made


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a file mode 0600 whatever the umask (also one that existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(data)
