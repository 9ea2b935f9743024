"""Writing the broker's files: files only their owner reads (mode 0600 from creation on),
folders with one-line errors, and sharing files with the user Mosquitto runs as.
"""

from __future__ import annotations

import grp
import os
import shlex
from pathlib import Path

from peerwatt.errors import UserError


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (mode 0600 from creation on)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_dir(path: Path, mode: int = 0o755) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise UserError(f"cannot create folder {path}: {exc.strerror}") from None


def share_with(paths: list[Path], user: str) -> str | None:
    """Make files readable by the user Mosquitto runs as (mode 0640, group = its group).

    Mosquitto started as root drops to that user before it reads the password and ACL files.
    Returns the command still to run when we cannot change the group here (not root, no such group).
    """
    for path in paths:
        os.chmod(path, 0o640)
    try:
        gid = grp.getgrnam(user).gr_gid
    except KeyError:
        gid = None
    if gid is not None and os.geteuid() == 0:
        for path in paths:
            os.chown(path, 0, gid)
        return None
    return shlex.join(["chgrp", user, *(str(p) for p in paths)])
