"""`peerwatt sim-meter` in a process of its own, for tests of the command line: one way to start
it on a free port, read the port from its first line and always stop it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# "serving sdm630 over Modbus TCP on 127.0.0.1:PORT, ..." / "... on http://127.0.0.1:PORT, ..."
_PORT = re.compile(r"127\.0\.0\.1:(\d+)")


@contextmanager
def sim_meter_process(*args: str) -> Iterator[tuple[subprocess.Popen, str, int]]:
    """`peerwatt sim-meter ARGS --port 0`: yields (the process, its first line, its port). A
    test may stop it itself (SIGINT, then ``communicate()``) to check how it stops; whatever is
    still running on the way out is terminated, and killed if it does not stop within 15 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "sim-meter", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        match = _PORT.search(line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield proc, line, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        else:
            proc.communicate()  # closes the pipes
