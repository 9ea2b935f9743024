"""The node's small HTTP API for peers and light clients (stdlib server, JSON, read-only).

GET /v1/status                      the node's status (height, last final block age, ...)
GET /v1/blocks?from=H&limit=N       final blocks with transactions, results and seals
GET /v1/proof?height=H&index=I      a result with its inclusion proof and the block's seals

Every query value is a whole number in ASCII digits within the ledger's integer range (heights and
indices are I-JSON integers, 0..2**53-1; ``limit`` is 1..2**53-1, of which at most
MAX_BLOCKS_PER_REQUEST are served); anything else, or a missing ``height``/``index``, is a 400
whose one-line error names the parameter.

Connections are bounded: at most MAX_CONNECTIONS are served at once, at most
MAX_CONNECTIONS_PER_ADDRESS of them from one client address (any more is answered 503 and
closed), a connection's request must arrive in full within READ_DEADLINE_S however slowly it
trickles, and a reply that the client does not take within WRITE_TIMEOUT_S is dropped. A client
that hangs up or stalls is logged in one line at DEBUG, nothing more.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from chain.canonical import MAX_SAFE_INTEGER
from chain.store import Store, StoreError
from peerwatt.http_bounds import BoundedRequestHandler, answer_busy
from peerwatt.metrics import exposition, registry_for
from peerwatt.node.ledger_api import blocks_json, proof_json

log = logging.getLogger("peerwatt.node")

MAX_CONNECTIONS = 64  # served at once, each on its own thread
# of which one client address holds at most this many, so one host cannot take every slot and
# turn away the peers' catch-up (a review: 64 connections reopened every 4.5 s did)
MAX_CONNECTIONS_PER_ADDRESS = 8
READ_DEADLINE_S = 5.0  # for the whole request line and headers of a connection
# for sending a reply: longer than a catch-up client waits for one (catchup.reply_deadline_s)
WRITE_TIMEOUT_S = 30.0
_BUSY_BODY = b'{"error": "too many connections, try again later"}'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class NodeHttpApi:
    """Serves a store (opened read-only, its own connection per request) and a status callback."""

    def __init__(
        self, data_dir: str | Path, status: Callable[[], dict[str, Any]], host: str, port: int
    ) -> None:
        self.data_dir = Path(data_dir)
        self.status = status
        self.registry = registry_for("node", status)
        api = self

        class Handler(BoundedRequestHandler):
            timeout = WRITE_TIMEOUT_S  # the socket's; reading is bounded by read_deadline_s
            read_deadline_s = READ_DEADLINE_S

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/metrics":
                    code, data, kind = 200, exposition(api.registry), "text/plain; version=0.0.4"
                else:
                    code, body = api.handle(self.path)
                    # compact UTF-8: a block is served at about its canonical size, which the
                    # catch-up bounds count on (json.dumps' defaults wrote DEL 6x, 'é' 3x)
                    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
                    kind = "application/json"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self.server = _BoundedServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"cannot serve the node API on {host}:{port}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self.server.serve_forever, name="node-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str) -> tuple[int, dict[str, Any]]:
        url = urlparse(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/v1/status":
                return 200, self.status()
            if url.path == "/v1/blocks":
                start = _whole_number(query, "from", lo=0, default=0)
                limit = _whole_number(query, "limit", lo=1, default=50)
                with _ReadOnlyStore(self.data_dir) as store:
                    return 200, {"blocks": blocks_json(store, start, limit)}
            if url.path == "/v1/proof":
                height = _whole_number(query, "height", lo=0)
                index = _whole_number(query, "index", lo=0)
                with _ReadOnlyStore(self.data_dir) as store:
                    proof = proof_json(store, height, index)
                return (404, {"error": "no such result"}) if proof is None else (200, proof)
        except (KeyError, ValueError) as exc:
            return 400, {"error": f"bad request: {exc}"}
        except StoreError as exc:  # a damaged row: the peer asking is told in one line, not cut off
            log.warning("the API cannot serve %s: %s", url.path, exc)
            return 500, {"error": f"this node's store cannot serve it: {exc}"}
        return 404, {"error": "unknown path"}


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; a request's error is logged, a
    client gone or stalled in one line at DEBUG."""

    daemon_threads = True
    # the listen backlog: with socketserver's 5, a burst of connections waits for SYN retries (1 s,
    # 3 s, ...) while the accepting thread waits for the GIL, instead of being served or refused
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._per_address: dict[str, int] = {}  # connections served now, by client address
        self._per_address_lock = threading.Lock()

    def _take(self, host: str) -> bool:
        with self._per_address_lock:
            if self._per_address.get(host, 0) >= MAX_CONNECTIONS_PER_ADDRESS:
                return False
            if not self._slots.acquire(blocking=False):
                return False
            self._per_address[host] = self._per_address.get(host, 0) + 1
            return True

    def _give_back(self, host: str) -> None:
        with self._per_address_lock:
            left = self._per_address.pop(host, 1) - 1
            if left:
                self._per_address[host] = left
            self._slots.release()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take(client_address[0]):
            answer_busy(request, _BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._give_back(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give_back(client_address[0])

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("the API's client %s went away: %s", client_address[0], exc)
        else:
            log.exception("the API failed on a request from %s", client_address[0])


def _whole_number(query: dict[str, str], name: str, *, lo: int, default: int | None = None) -> int:
    """Query value ``name`` as a whole number lo..MAX_SAFE_INTEGER (ASCII digits only: int() also
    takes ' 7', '1_0' and '١'); ``default`` when absent, ValueError naming it otherwise."""
    text = query.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"{name} is missing")
        return default
    digits = text.lstrip("0") or "0"  # measured before int(): 5,000 digits exceed int()'s limit
    if (
        not (text.isascii() and text.isdigit())
        or len(digits) > len(str(MAX_SAFE_INTEGER))
        or not lo <= int(digits) <= MAX_SAFE_INTEGER
    ):
        raise ValueError(f"{name} must be a whole number {lo}..{MAX_SAFE_INTEGER}")
    return int(digits)


class _ReadOnlyStore:
    """A read-only connection to the store for one request (WAL lets it read while the node writes)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __enter__(self) -> Store:
        self.store = Store.open(self.data_dir, readonly=True)
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
