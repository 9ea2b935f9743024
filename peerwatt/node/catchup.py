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

A reply's blocks are parsed one at a time (``Reply.next_block``, as the caller stores them) and
each block field by field, every field bounded by what an honest block can hold there *before*
it is parsed: a QA pass's peer served a real block with its 3 seals repeated 80,000 times (83.5
MiB: 5 s of parsing seals, 16 s of checking their signatures, 1.2 GB), and one with its
``tx_hashes`` padded with 33 million ``[]`` (95 MiB: 3 GB in the parse), both within the bound of
a 100-block reply. The JSON parser counts nothing while it builds (the standard library's has no
hook per list or string), so the bound is on each field's bytes: its seals take at most what one
seal per validator in force takes, its hashes what one per transaction takes, its header a few
KiB, and its transactions and results together what the largest block's take, as written
(``BODY_REPLY_BYTES``) and as canonical JSON (``_canonical_stop``). A field's end is found by the
plain parser within that bound (a window that grows), then the field is parsed by
``loads_strict``, so the parse of any reply holds at most one field of one block, and a field
padded past its bound is refused before it is parsed.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from chain import messages
from chain.canonical import MAX_DEPTH, CanonicalError, loads_strict
from chain.execute import InvalidBlock
from peerwatt.node.ledger_api import BLOCK_FIELDS

CATCHUP_BATCH = 100  # blocks asked of a peer at once
# A peer's reply is bounded: the blocks asked for at their largest plus the reply's own few bytes,
# at most MAX_CATCHUP_REPLY_BYTES in all; its JSON nesting the block's plus the few levels the reply
# wraps it in. A block's body is within MAX_BLOCK_BYTES as canonical JSON (UTF-8). The API writes
# compact UTF-8 JSON (http_api), about the canonical size; nodes before that wrote it
# ASCII-escaped with spaces, where a non-ASCII character takes at most 3x its UTF-8 bytes (a review's
# legal block of emoji text was 2.99x) but a DEL takes 6x (\u007f: found in a later review, in a
# proposal's free args), so 3x (plus the transaction hashes and seals beside the body, 4 MiB: 28,000
# hashes of 70 bytes, a few dozen seals) holds every block a current node serves and those an older
# one serves unless they are mostly DEL.
MAX_BLOCK_REPLY_BYTES = 3 * messages.MAX_BLOCK_BYTES + 4 * 1024 * 1024
REPLY_ENVELOPE_BYTES = 1024
MAX_CATCHUP_REPLY_BYTES = CATCHUP_BATCH * messages.MAX_BLOCK_BYTES // 8
CATCHUP_REPLY_DEPTH = MAX_DEPTH + 4
FIELD_DEPTH = CATCHUP_REPLY_DEPTH - 3  # a block's field lies 3 levels down: reply, "blocks", block
# What each field of one block may take as the API writes it (ledger_api.block_json, json.dumps):
# the header a few hundred bytes; the transactions and results with the header at most 3x the
# largest block's canonical bytes (see MAX_BLOCK_REPLY_BYTES); a transaction hash 68 bytes
# ('"<64 hex>", '); a seal about 360 bytes (a community id of up to 64 characters and the
# largest numbers: under 600). A seals field may hold one seal per validator in force.
HEADER_REPLY_BYTES = 4096
BODY_REPLY_BYTES = 3 * messages.MAX_BLOCK_BYTES
# ... and the header, transactions and results take at most MAX_BLOCK_BYTES as canonical JSON. A
# field's canonical size is at least its characters less its whitespace and 5 per backslash (an
# escape of 2 to 6 characters stands for at least 1 byte), counted in C before it is parsed: so
# 24 MiB of '[],' (8 million lists, 500 MB parsed) are refused after 8 MiB, as no block holds
# them, while the API's 3x of escaped text is taken
_LOOSE = (" ", "\t", "\n", "\r")
TX_HASH_REPLY_BYTES = 70
# The most transactions a block can hold: a signed envelope's canonical JSON takes at least 200
# bytes (its nine keys, an 86-character signature, a 32-character signer). Bounds its hashes when
# they come before its transactions (canonical JSON sorts the keys)
MAX_BLOCK_TXS_EVER = messages.MAX_BLOCK_BYTES // 200
SEAL_REPLY_BYTES = 1024
FIELD_SLACK = 64  # brackets and spaces around a list
FIRST_WINDOW = 64 * 1024  # a field's end is looked for in this many characters, then 4x more
# The first bytes of a reply: an object whose only key is "blocks", a list (group 1: "]" when it
# is empty). HEAD_BYTES is what is read before they are checked.
_HEAD = re.compile(rb'\s*\{\s*"blocks"\s*:\s*\[\s*(\]?)')
_WS = "[ \t\n\r]*"  # JSON's whitespace
_SKIP = re.compile(_WS)
_TEXT_HEAD = re.compile(_WS + r"\{" + _WS + r'"blocks"' + _WS + ":" + _WS + r"\[")
_KEY = re.compile(_WS + r'"([A-Za-z_]{1,32})"' + _WS + ":" + _WS)
_PLAIN = json.JSONDecoder()  # only finds where a field ends; the field is then parsed strictly
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


class Reply:
    """A peer's reply: its blocks, parsed one at a time by :meth:`next_block` (so the caller can
    store each before the next is parsed), each within the bounds of an honest block's fields.
    The parse as a whole must end within the reply's deadline (the time left when it had been
    read; the caller's work between blocks does not count)."""

    def __init__(self, text: str, size: int, limit: int, time_left_s: float) -> None:
        self.text = text
        self.size = size  # bytes received
        self.limit = limit
        self.count = 0  # blocks parsed so far
        self._time_left_s = time_left_s
        head = _TEXT_HEAD.match(text)
        if head is None:  # (_check_head saw the same bytes)
            raise ValueError("malformed reply: it does not begin with its 'blocks' list")
        self._pos = head.end()
        self._done = False

    def next_block(self, max_seals: int) -> dict[str, Any] | None:
        """The next block's fields, each parsed strictly (``ledger_api.block_from_json`` checks
        them), or None after the last. ``max_seals``: how many seals it may hold (one per
        validator in force before it). ValueError for a malformed reply, InvalidBlock for a block
        a field of which is larger than an honest one (``too_many_seals``, ``bad_tx_hashes``),
        CatchupTimeout when the parse runs past the reply's deadline."""
        if self._done:
            return None
        started = time.monotonic()
        try:
            fields = self._next(max_seals)
        finally:
            self._time_left_s -= time.monotonic() - started
        if self._time_left_s < 0:
            self._done = True
            raise CatchupTimeout(
                f"the reply of {self.size} bytes parsed {-self._time_left_s:.1f} s past its deadline"
            )
        return fields

    def _next(self, max_seals: int) -> dict[str, Any] | None:
        text, pos = self.text, _SKIP.match(self.text, self._pos).end()
        if text.startswith("]", pos):
            self._done = True
            end = _SKIP.match(text, pos + 1).end()
            if not text.startswith("}", end) or _SKIP.match(text, end + 1).end() != len(text):
                raise ValueError("malformed reply: not an object holding 'blocks' and nothing else")
            return None
        if self.count:
            if not text.startswith(",", pos):
                raise ValueError(f"malformed reply: no ',' or ']' after block {self.count}")
            pos = _SKIP.match(text, pos + 1).end()
        if self.count == self.limit:
            self._done = True
            raise ValueError(
                f"malformed reply: {self.count + self._count_rest(pos, max_seals)} blocks, "
                f"{self.limit} asked for"
            )
        fields, self._pos = self._block_at(pos, max_seals)
        self.count += 1
        return fields

    def _count_rest(self, pos: int, max_seals: int) -> int:
        """How many more blocks the reply holds from ``pos`` on (each within its bounds)."""
        count = 0
        while True:
            _fields, pos = self._block_at(pos, max_seals, parse=False)
            count += 1
            pos = _SKIP.match(self.text, pos).end()
            if not self.text.startswith(",", pos):
                return count
            pos = _SKIP.match(self.text, pos + 1).end()

    def _block_at(self, pos: int, max_seals: int, parse: bool = True) -> tuple[dict[str, Any], int]:
        """The fields of the block at ``pos`` and the position after it: the fields the API
        writes (in any order), each once, each bounded before it is parsed."""
        text, number = self.text, self.count + 1
        if not text.startswith("{", pos):
            raise ValueError(f"malformed reply: block {number} is not an object")
        pos += 1
        fields: dict[str, Any] = {}
        seen: set[str] = set()
        body_left = BODY_REPLY_BYTES  # the header, transactions and results together, as written
        canonical_left = messages.MAX_BLOCK_BYTES  # ... and at least this canonical
        txs: int | None = None
        for index in range(len(BLOCK_FIELDS)):
            if index:
                pos = _SKIP.match(text, pos).end()
                if not text.startswith(",", pos):
                    raise ValueError(f"malformed reply: block {number} ends before all its fields")
                pos += 1
            key = _KEY.match(text, pos)
            name = key.group(1) if key is not None else None
            if name not in BLOCK_FIELDS or name in seen:
                found = f"{name!r}" if name in seen else "another key" if key is not None else "no key"
                raise ValueError(
                    f"malformed reply: block {number}: {found} where a field belongs (a block holds "
                    f"{', '.join(BLOCK_FIELDS)}, each once, and nothing else)"
                )
            seen.add(name)
            pos = key.end()
            if name == "header":
                bound = min(HEADER_REPLY_BYTES, body_left)
            elif name in ("txs", "results"):
                bound = body_left
            elif name == "tx_hashes":
                bound = TX_HASH_REPLY_BYTES * (MAX_BLOCK_TXS_EVER if txs is None else txs) + FIELD_SLACK
            else:
                bound = SEAL_REPLY_BYTES * max_seals + FIELD_SLACK
            body = name in ("header", "txs", "results")
            end = self._value_end(pos, bound, canonical_left if body else None, number, name, max_seals)
            if body:
                body_left -= end - pos
                canonical_left -= _canonical_at_least(text, pos, end)
            if parse or name == "txs":
                try:
                    value = loads_strict(text[pos:end], max_depth=FIELD_DEPTH)
                except CanonicalError as exc:
                    raise ValueError(f"malformed reply: block {number}'s {name!r}: {exc}") from None
                if name == "txs":
                    if type(value) is not list:
                        raise ValueError(f"malformed reply: block {number}'s 'txs' is not a list")
                    txs = len(value)
                if parse:
                    fields[name] = value
            pos = end
        pos = _SKIP.match(text, pos).end()
        if not text.startswith("}", pos):
            raise ValueError(
                f"malformed reply: block {number}: more than its fields (a block holds "
                f"{', '.join(BLOCK_FIELDS)}, each once, and nothing else)"
            )
        return fields, pos + 1

    def _value_end(
        self, pos: int, bound: int, canonical_left: int | None, number: int, name: str, max_seals: int
    ) -> int:
        """Where the JSON value at ``pos`` ends, found within ``bound`` characters and (if not
        None) ``canonical_left`` canonical bytes at least (``_canonical_at_least``): the plain
        parser on a window that grows 4x up to the bounds, so a value padded beyond them is never
        parsed whole. ValueError or InvalidBlock naming block ``number``'s field ``name``."""
        text = self.text
        window = min(FIRST_WINDOW, bound)
        while True:
            stop = min(len(text), pos + window)
            full = False  # the window stops where the canonical bound does
            if canonical_left is not None:
                stop, full = _canonical_stop(text, pos, stop, canonical_left)
            try:
                _value, end = _PLAIN.raw_decode(text[pos:stop])
            except (ValueError, RecursionError):
                end = None
            cut = stop < len(text)
            # complete unless it reached the window's end (a number there may go on past it)
            if end is not None and not (cut and pos + end == stop):
                return pos + end
            if not cut:
                raise ValueError(f"malformed reply: block {number}'s {name!r} is not JSON")
            if window >= bound or full:
                break
            window = min(4 * window, bound)
        if name == "seals":
            raise InvalidBlock(
                "too_many_seals",
                f"block {number} of the reply: its seals take more than {bound} bytes, more than "
                f"{max_seals} seals (one per validator) take",
            )
        if name == "tx_hashes":
            raise InvalidBlock(
                "bad_tx_hashes",
                f"block {number} of the reply: its tx_hashes take more than {bound} bytes, more than "
                "one hash per transaction takes",
            )
        raise ValueError(
            f"malformed reply: block {number}'s {name!r} takes more than any block's can ({bound} "
            f"bytes, {messages.MAX_BLOCK_BYTES} as canonical JSON with the rest of its block)"
        )


def _canonical_at_least(text: str, start: int, stop: int) -> int:
    """A lower bound of the canonical size of the JSON in ``text[start:stop]``: its characters
    less its whitespace, and 5 per backslash (counted in C)."""
    loose = sum(text.count(c, start, stop) for c in _LOOSE) + 5 * text.count("\\", start, stop)
    return stop - start - loose


def _canonical_stop(text: str, start: int, stop: int, left: int) -> tuple[int, bool]:
    """The end of the longest window from ``start`` (to ``stop`` at most) whose canonical size
    may be at most ``left`` (``_canonical_at_least``), and whether that cut it short."""
    if _canonical_at_least(text, start, stop) <= left:
        return stop, False
    cut = min(stop, start + left)
    loose = cut - start - _canonical_at_least(text, start, cut)
    while True:  # the window may take as many more characters as those that count for nothing
        want = min(stop, start + left + loose)
        if want <= cut:
            return cut, True
        loose += want - cut - _canonical_at_least(text, cut, want)
        cut = want


def fetch_reply(
    peer: str,
    start: int,
    *,
    timeout_s: float = 5.0,
    limit: int = CATCHUP_BATCH,
    stop: threading.Event | None = None,
) -> Reply:
    """Up to ``limit`` (at most CATCHUP_BATCH) final blocks from height ``start``, read but not
    yet parsed (:meth:`Reply.next_block`). ValueError/OSError for a bad reply or peer:
    CatchupTimeout when the reply did not arrive within ``reply_deadline_s`` (or ``stop`` was
    set)."""
    limit = max(1, min(limit, CATCHUP_BATCH))
    url = f"{peer.rstrip('/')}/v1/blocks?from={start}&limit={limit}"
    raw, deadline = _get(url, max_reply_bytes(limit), timeout_s, stop)
    head = _HEAD.match(raw)
    if head is not None and head.group(1):  # no blocks: a few bytes (_check_head), parsed whole
        try:
            reply = loads_strict(raw, max_depth=CATCHUP_REPLY_DEPTH)
        except CanonicalError as exc:
            raise ValueError(f"malformed reply: {exc}") from None
        if reply != {"blocks": []}:
            raise ValueError("malformed reply: not an object holding 'blocks' and nothing else")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("malformed reply: not UTF-8") from None
    time_left_s = deadline - time.monotonic()
    if time_left_s < 0:
        raise CatchupTimeout(f"the reply of {len(raw)} bytes parsed {-time_left_s:.1f} s past its deadline")
    return Reply(text, len(raw), limit, time_left_s)
