"""Fetching final blocks from a peer's HTTP API, for a node that fell behind.

A peer may be hostile or broken: its reply is bounded by what was asked (size: the blocks asked
for at their largest; depth), holds nothing but its ``blocks`` list (no more blocks than asked),
and is parsed strictly; what comes back is only *parsed* here. The caller verifies every block
(seals of one round, roots, re-execution: ``Ledger.commit``) before storing it.

A reply is also bounded in *time*, as a whole (connect, headers and body): a socket timeout is
per read, and a QA pass's peer sending one byte every 3 s held the caller (the node's main loop:
every honest validator of the community) as long as it liked. A watchdog cuts the connection at
the reply's deadline, or as soon as the node is stopping; the parse counts within that deadline (a
reply parsed past it is a CatchupTimeout, a failure the caller backs off from).

A reply with no blocks is ``{"blocks": []}``, nothing more: a QA pass's peer padded it with an
unknown key to 60 MiB (8 s of the node's loop to read and parse; 99 MiB: 30 s and 3 GB) and, as an
empty reply is no failure, it was asked again every 2 s. Its first bytes now refuse it (an
unknown key, or a reply bigger than an empty one that holds no blocks) before the rest is read.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
import urllib.parse

from chain import messages
from chain.block import Block
from chain.canonical import MAX_DEPTH, CanonicalError, loads_strict
from chain.envelope import Envelope
from peerwatt.node.ledger_api import ErasedPayloads, block_from_json

CATCHUP_BATCH = 100  # blocks asked of a peer at once
# A peer's reply is bounded: the blocks asked for at their largest plus the reply's own few bytes,
# at most MAX_CATCHUP_REPLY_BYTES in all; its JSON nesting the block's plus the few levels the reply
# wraps it in. A block's body is within MAX_BLOCK_BYTES as canonical JSON (UTF-8), and the API
# writes it ASCII-escaped with spaces: a non-ASCII character takes at most 3x its UTF-8 bytes (a
# 4-byte one is two \u escapes, 12 bytes; a review's legal block of emoji text was 2.99x), so 3x
# plus the transaction hashes and seals beside the body (4 MiB: 28,000 hashes of 70 bytes, a few
# dozen seals). At 2x, no node could catch up past such a block.
MAX_BLOCK_REPLY_BYTES = 3 * messages.MAX_BLOCK_BYTES + 4 * 1024 * 1024
REPLY_ENVELOPE_BYTES = 1024
MAX_CATCHUP_REPLY_BYTES = CATCHUP_BATCH * messages.MAX_BLOCK_BYTES // 8
CATCHUP_REPLY_DEPTH = MAX_DEPTH + 4
# The first bytes of a reply: an object whose only key is "blocks", a list (group 1: "]" when it
# is empty). HEAD_BYTES is what is read before they are checked.
_HEAD = re.compile(rb'\s*\{\s*"blocks"\s*:\s*\[\s*(\]?)')
HEAD_BYTES = 256
EMPTY_REPLY_SLACK = 16  # bytes past an empty list an honest empty reply may hold ("}", spaces)
# Time for a reply: ``timeout_s`` (connect, the peer reading its store, and a small reply) plus
# one second per CATCHUP_MIN_RATE bytes it announces (Content-Length, as the node's API sends)
# or has sent, at most CATCHUP_MAX_EXTRA_S more. An honest peer sends a batch of ordinary blocks
# (a few KiB to a few MiB) within the base time; 30 MiB, a batch of very full blocks, needs a
# 2 MiB/s (16 Mbit/s) uplink; a reply that does not make it is cut, and the node asks that peer
# for fewer blocks next time (Node._catch_up). A hostile peer holds a fetch at most
# timeout_s + CATCHUP_MAX_EXTRA_S, and is then skipped for a while.
CATCHUP_MIN_RATE = 2 * 1024 * 1024  # bytes per second
CATCHUP_MAX_EXTRA_S = 15.0
_CHUNK = 64 * 1024
_WATCH_EVERY_S = 0.05


class CatchupTimeout(OSError):
    """The peer's reply did not arrive in full by its deadline (or the node is stopping)."""


def reply_deadline_s(timeout_s: float, size: int) -> float:
    """Seconds a reply of ``size`` bytes (announced or received) may take in all."""
    return timeout_s + min(size / CATCHUP_MIN_RATE, CATCHUP_MAX_EXTRA_S)


def max_reply_bytes(limit: int) -> int:
    """The largest reply to a request for ``limit`` blocks."""
    return min(MAX_CATCHUP_REPLY_BYTES, limit * MAX_BLOCK_REPLY_BYTES + REPLY_ENVELOPE_BYTES)


def _check_head(head: bytes, size: int) -> None:
    """ValueError unless a reply of ``size`` bytes beginning with ``head`` is an object whose
    first key is "blocks" (its only key allowed), and, if that list is empty, no bigger than an
    empty reply (a peer that claims blocks by its size and gives none makes no progress)."""
    match = _HEAD.match(head)
    if match is None:
        raise ValueError("malformed reply: it does not begin with its 'blocks' list")
    if match.group(1) and size > match.end() + EMPTY_REPLY_SLACK:
        raise ValueError(f"malformed reply: no blocks, yet {size} bytes (an empty reply has a few)")


class _Watchdog:
    """Shuts the connection down at its deadline (which grows with the reply's size) or when
    ``stop`` is set; a read blocked on the socket then returns at once."""

    def __init__(self, timeout_s: float, stop: threading.Event | None) -> None:
        self.start = time.monotonic()
        self.timeout_s = timeout_s
        self.size = 0
        self.stop = stop
        self.sock: socket.socket | None = None
        self.cut: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="catch-up-watchdog", daemon=True)
        self._thread.start()

    def remaining(self) -> float:
        return self.start + reply_deadline_s(self.timeout_s, self.size) - time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(_WATCH_EVERY_S):
            if self.stop is not None and self.stop.is_set():
                self._cut("the node is stopping")
            elif self.remaining() <= 0:
                self._cut(f"no complete reply within {time.monotonic() - self.start:.1f} s")
            else:
                continue
            return

    def _cut(self, why: str) -> None:
        with self._lock:
            self.cut = why
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self.sock = sock
            if self.cut is not None:
                sock.shutdown(socket.SHUT_RDWR)

    def check(self) -> None:
        if self.cut is not None:
            raise CatchupTimeout(f"{self.cut} ({self.size} bytes received)")

    def close(self) -> None:
        self._done.set()


def _get(url: str, max_bytes: int, timeout_s: float, stop: threading.Event | None) -> tuple[bytes, float]:
    """The body of ``url`` (at most ``max_bytes``, its head checked by ``_check_head`` as soon as
    it arrived), all of it within its deadline; and that deadline (``time.monotonic``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) address: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    watch = _Watchdog(timeout_s, stop)
    conn: http.client.HTTPConnection | None = None
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=max(0.1, watch.remaining()))
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        watch.attach(sock)
        conn = http.client.HTTPConnection(parts.hostname, port)  # (its socket: the one below)
        conn.sock = sock  # the watchdog's socket: it can cut any read of this connection
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} {response.reason}")
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit():
            if int(length) > max_bytes:
                raise ValueError(f"reply larger than {max_bytes} bytes ({length} announced)")
            watch.size = int(length)  # the time an honest peer needs for it
        body = bytearray()
        head_checked = False
        while True:
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            body += chunk
            watch.size = max(watch.size, len(body))
            if len(body) > max_bytes:
                raise ValueError(f"reply larger than {max_bytes} bytes")
            if not head_checked and len(body) >= HEAD_BYTES:
                _check_head(bytes(body[:HEAD_BYTES]), watch.size)
                head_checked = True
        watch.check()  # a cut connection may look like an ordinary end of the reply
        if not head_checked:
            _check_head(bytes(body), len(body))
        return bytes(body), watch.start + reply_deadline_s(timeout_s, watch.size)
    except (OSError, http.client.HTTPException) as exc:
        watch.check()
        if isinstance(exc, OSError):
            raise
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        watch.close()
        if conn is not None:
            conn.close()


def fetch_blocks(
    peer: str,
    start: int,
    community: str,
    interval_s: int | None,
    *,
    timeout_s: float = 5.0,
    limit: int = CATCHUP_BATCH,
    stop: threading.Event | None = None,
) -> list[tuple[Block, list[Envelope]]]:
    """Up to ``limit`` (at most CATCHUP_BATCH) final blocks from height ``start`` with their
    seals, not yet verified; [] when the peer has none. ValueError/OSError for a bad reply or
    peer: CatchupTimeout when the reply did not arrive and parse within ``reply_deadline_s`` (or
    ``stop`` was set), ErasedPayloads when the first block holds erased payloads."""
    limit = max(1, min(limit, CATCHUP_BATCH))
    url = f"{peer.rstrip('/')}/v1/blocks?from={start}&limit={limit}"
    raw, deadline = _get(url, max_reply_bytes(limit), timeout_s, stop)
    try:
        reply = loads_strict(raw, max_depth=CATCHUP_REPLY_DEPTH)
    except CanonicalError as exc:
        raise ValueError(f"malformed reply: {exc}") from None
    late_s = time.monotonic() - deadline
    if late_s > 0:
        raise CatchupTimeout(f"the reply of {len(raw)} bytes parsed {late_s:.1f} s past its deadline")
    if not isinstance(reply, dict) or set(reply) != {"blocks"}:
        raise ValueError("malformed reply: not an object holding 'blocks' and nothing else")
    blocks = reply["blocks"]
    if not isinstance(blocks, list):
        raise ValueError("malformed reply: 'blocks' is not a list")
    if len(blocks) > limit:
        raise ValueError(f"malformed reply: {len(blocks)} blocks, {limit} asked for")
    out = []
    for data in blocks:
        try:
            out.append(block_from_json(data, community, interval_s))
        except ErasedPayloads:
            if out:  # the blocks before it can be stored first
                break
            raise
    return out
