"""Bounds shared by this project's small HTTP servers (the node's API, peerwatt/node/http_api.py,
and the metrics endpoint, peerwatt/metrics.py): a connection's request must arrive by a deadline
however slowly it trickles in, and a connection beyond the server's bound gets a 503 at once."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from typing import Any


def answer_busy(sock: socket.socket, response: bytes) -> None:
    """Send ``response`` (a whole 503 answer) to a connection beyond the bound, if it fits in the
    socket's buffer at once; never blocks, never raises."""
    try:
        sock.setblocking(False)
        sock.send(response)
    except OSError:
        pass


class DeadlineReader(io.RawIOBase):
    """A connection's reading side that fails (TimeoutError, after calling ``late`` if given)
    once ``deadline`` (time.monotonic) has passed, however slowly bytes trickle in: a socket
    timeout alone restarts with each byte."""

    def __init__(self, sock: socket.socket, deadline: float, late: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.late = late

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left_s = self.deadline - time.monotonic()
        if left_s <= 0:
            self._late()
            raise TimeoutError("the request did not arrive in time")
        before = self.sock.gettimeout()
        self.sock.settimeout(left_s)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self._late()
            raise
        finally:
            self.sock.settimeout(before)

    def _late(self) -> None:
        if self.late is not None:
            self.late()
