"""Running the real `peerwatt` command in a subprocess, for CLI tests."""

from __future__ import annotations

import subprocess
import sys


def peerwatt(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `peerwatt ARGS` with this interpreter; capture text output."""
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
