"""A stand-in HTTP server for tests of a client: a peer serving catch-up blocks, or a node's API,
that answers every GET as the test says (a JSON body, a status, raw bytes in place of a response,
a reply dripped a byte at a time), on a loopback port of its own or a given one, and counts the
requests it was sent."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

Answer = Callable[[BaseHTTPRequestHandler], None]
"""Answers one GET: writes to ``handler`` (``send_body``, or bytes of its own to ``handler.wfile``)."""


class HttpPeer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (``port``; 0: a free one) whose every GET is answered
    by ``answer``, each on a thread of its own, until ``close()`` (or the end of a ``with``)."""

    def __init__(self, answer: Answer, port: int = 0) -> None:
        self.requests = 0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                peer.requests += 1
                answer(self)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.address = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving and free the port (a request still being answered goes on, on its thread)."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpPeer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def query(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """The request's query parameters (``/v1/blocks?from=3&limit=9`` -> ``{"from": "3", "limit": "9"}``)."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query))


def send_body(
    handler: BaseHTTPRequestHandler, body: bytes, status: int = 200, content_type: str | None = None
) -> None:
    """Answer with ``status``, a Content-Length (and ``content_type`` if given) and ``body``. A
    client that hangs up before it has read it all (one that refuses a reply from its first bytes,
    as several tests provoke) is no error here."""
    try:
        handler.send_response(status)
        if content_type is not None:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
