"""A worker process of `peerwatt simulate`: one host of the study (peerwatt/sim_host.py).

Started by the coordinator as ``python -c "from peerwatt.sim_worker import main; main()"``. It
reads pickled, length-prefixed requests on stdin and writes one reply per request on stdout: the
first request names the study's options and the host's share of clients, which it builds itself
(its nodes open their own stores). It ends after ``close``, when stdin ends (the coordinator is
gone), or when its reply cannot be written. Ctrl-C in the terminal reaches the whole process
group: the worker ignores it and leaves it to the coordinator, which ends its workers. An error
goes back to the coordinator as one line (``("error", line)``) with no traceback on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing printed by accident can corrupt the replies

    from peerwatt.sim_host import StudyHost, read_frame, write_frame

    host = None
    try:
        first = read_frame(requests)
        if first is None:
            return
        _, options, spec = first
        host = StudyHost(options, spec)
        request = ("hello",)
        while request is not None:
            write_frame(replies, ("ok", host.handle(request)))
            if request[0] == "close":
                host = None  # closed: nothing left to close
                return
            request = read_frame(requests)
    except BrokenPipeError:  # the coordinator is gone: so are we
        return
    except BaseException as exc:  # noqa: BLE001 - told to the coordinator, which names this host
        line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__
        with contextlib.suppress(OSError):
            write_frame(replies, ("error", line))
        sys.exit(1)
    finally:
        if host is not None:
            with contextlib.suppress(Exception):
                host.close()
