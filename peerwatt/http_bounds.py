"""Bounds shared by this project's small HTTP servers (the node's API, peerwatt/node/http_api.py,
and the metrics endpoint, peerwatt/metrics.py): a connection's request must arrive by a deadline
however slowly it trickles in, its request line must name a path and a version, and a connection
beyond the server's bound gets a 503 at once."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
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


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """A request handler whose request line and headers must arrive within ``read_deadline_s``
    (``request_late`` is called when they did not), and whose request line is ``METHOD /path
    HTTP/1.x`` (a 400 otherwise: HTTP/0.9's ``GET /path`` or an empty path). Subclasses set
    ``timeout``, the socket's, which bounds sending the reply."""

    read_deadline_s: float = 5.0
    # what an answer says before the request line gave a version: with http.server's HTTP/0.9, an
    # error to "GET  HTTP/1.0" (an empty path) was a body without status line
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        deadline = time.monotonic() + self.read_deadline_s
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, deadline, self.request_late))

    def request_late(self) -> None:
        """The request did not arrive within ``read_deadline_s`` (the connection is closed)."""

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # HTTP/0.9 "GET /path", or no path
            self.send_error(HTTPStatus.BAD_REQUEST, "the request line must be GET /path HTTP/1.x")
            return False
        return True
