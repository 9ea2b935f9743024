"""The strict checks of stored envelopes, shared between `peerwatt verify` and helper processes.

`peerwatt verify` executes blocks in order, but checking an envelope (strict parse, canonical
bytes, signature) depends only on its bytes and a key, so the envelopes of the next blocks can be
checked on other cores while this one executes. A :class:`CheckPool` takes batches of
``(envelope bytes, key, interval)`` and answers, per item, :data:`BAD` (refused: the caller redoes
the check in order, to fail with the same error as without helpers), :data:`PARSED` (strictly
valid and canonical; the signature was not checked or did not verify with that key) or
:data:`VERIFIED` (strictly valid, canonical, and signed by that key). The caller still decides,
at execution time, that the key is the one enrolled there.

Work sharing: batches wait in a local queue; each helper gets at most :data:`IN_FLIGHT` of them,
and while the caller waits for a batch it checks queued batches itself, so on 2 cores the caller
and one helper are both busy. Helpers are plain subprocesses (``python -c``) that import only
this module's few dependencies, not the caller's ``__main__`` (which ``spawn`` re-runs); they
read length-prefixed pickles on stdin and write one verdict byte per item on stdout.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import struct
import subprocess
import sys
import threading
from collections import deque
from functools import lru_cache
from pathlib import Path
from queue import SimpleQueue

from chain.envelope import parse_envelope
from chain.keys import PublicKey, load_public_key
from chain.signature import verify

BAD, PARSED, VERIFIED = 0, 1, 2


def default_workers() -> int:
    """The cores this process may use (`peerwatt verify` and `simulate` use them all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# batches queued on one helper (~90 ms of checks), so it does not run dry while the caller
# executes a block (a 1,000-transaction block: ~55 ms); the caller keeps the rest, to check them
# itself when it would wait. Measured on 2 cores, 20,000 kv txs, best of 4 taking turns: 4 gave
# 1.70-1.74x one core, 6 1.76-1.81x, 8 1.74-1.80x, 12 1.71-1.77x, 16 1.70-1.74x (more queued
# on the helper leaves the caller less to take when it would wait at the end)
IN_FLIGHT = 8
_HEADER = struct.Struct("<II")  # batch id, length of what follows

# (envelope bytes as stored, SEC1 hex of the key to check its signature with or None, the
# interval its body's intervals must align to or None)
Item = tuple[bytes, str | None, int | None]


@lru_cache(maxsize=4096)
def _public_key(sec1_hex: str) -> PublicKey:
    return load_public_key(bytes.fromhex(sec1_hex))


def check_items(community: str, items: list[Item]) -> bytes:
    """One verdict byte per item: the checks ``chain.verify`` makes of a stored envelope (strict
    parse for ``community``, canonical bytes) and of its signature with the given key."""
    out = bytearray(len(items))
    for i, (data, sec1, interval_s) in enumerate(items):
        try:
            env = parse_envelope(data, community=community, now=None, interval_s=interval_s)
            if env.to_bytes() != data:
                continue
        except Exception:  # noqa: BLE001 - BAD only means "redo in order", which reports it
            continue
        out[i] = PARSED
        if sec1 is None:
            continue
        try:
            verify(_public_key(sec1), env.signing_bytes(), env.sig)
        except Exception:  # noqa: BLE001 - not verified: execution checks it again in order
            continue
        out[i] = VERIFIED
    return bytes(out)


def _read_exact(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve() -> None:
    """A helper's main loop (``python -c "from chain.verify_workers import serve; serve()"``)."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # nothing printed by accident can corrupt the replies
    frames: SimpleQueue[tuple[int, bytes] | None] = SimpleQueue()

    def read() -> None:  # drains stdin at once, so the caller never blocks writing a batch
        while (header := _read_exact(requests, _HEADER.size)) is not None:
            batch, size = _HEADER.unpack(header)
            body = _read_exact(requests, size)
            if body is None:
                break
            frames.put((batch, body))
        frames.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while (frame := frames.get()) is not None:
            batch, body = frame
            community, items = pickle.loads(body)
            verdicts = check_items(community, items)
            replies.write(_HEADER.pack(batch, len(verdicts)) + verdicts)
    except (BrokenPipeError, KeyboardInterrupt):  # the caller is gone or stopping: so are we
        return


class _Helper:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from chain.verify_workers import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.in_flight: deque[int] = deque()
        self.alive = True
        with contextlib.suppress(AttributeError, OSError):  # Linux: room for a few batches
            import fcntl

            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)


class CheckPool:
    """Batches of envelope checks run by ``helpers`` other processes and by the caller while it
    waits (use as a context manager). :meth:`submit` queues a batch, :meth:`result` returns its
    verdicts, checking it (or other queued batches) here while a helper has not answered."""

    def __init__(self, helpers: int, community: str) -> None:
        if helpers < 1:
            raise ValueError("at least one helper process")
        self.community = community
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # where `chain` is importable from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._helpers = [_Helper(env) for _ in range(helpers)]
        self._selector = selectors.DefaultSelector()
        for helper in self._helpers:
            self._selector.register(helper.fd, selectors.EVENT_READ, helper)
        self._queued: dict[int, list[Item]] = {}  # not yet sent, in submission order
        self._sent: dict[int, list[Item]] = {}  # on a helper (kept to redo them if it dies)
        self._done: dict[int, bytes] = {}
        self._stolen: set[int] = set()  # sent to a helper and checked here too (first answer wins)
        self._next = 0
        self.queued_items = 0  # submitted items whose verdicts were not taken yet
        self.on_helpers = 0  # items checked on helper processes
        self.here = 0  # items checked by the caller

    def submit(self, items: list[Item]) -> int:
        batch = self._next
        self._next += 1
        self._queued[batch] = items
        self.queued_items += len(items)
        self._pump(block=False)
        return batch

    def result(self, batch: int) -> bytes:
        """The verdicts of ``batch`` (one byte per item, in order)."""
        while batch not in self._done:
            self._pump(block=False)
            if batch in self._done:
                break
            if batch in self._queued:  # nobody has it: check it here, now
                self._check_here(batch)
            elif self._queued:  # a helper has it: check the last queued batch meanwhile
                self._check_here(next(reversed(self._queued)))
            elif (victim := self._steal(batch)) is not None:
                self._done[victim] = check_items(self.community, self._sent[victim])
                self._stolen.add(victim)
                self.here += len(self._sent[victim])
            else:
                self._pump(block=True)
        verdicts = self._done.pop(batch)
        self.queued_items -= len(verdicts)
        return verdicts

    def _steal(self, batch: int) -> int | None:
        """A batch sent to a helper that this process may check too rather than wait: the one a
        helper would reach last, ``batch`` itself only when no other is left (a helper starved
        of CPU by a loaded machine then costs no more than checking it here)."""
        for helper in self._helpers:
            for sent in reversed(helper.in_flight):
                if sent != batch and sent not in self._stolen and sent not in self._done:
                    return sent
        return batch if batch in self._sent and batch not in self._stolen else None

    def _check_here(self, batch: int) -> None:
        items = self._queued.pop(batch)
        self._done[batch] = check_items(self.community, items)
        self.here += len(items)

    def _pump(self, *, block: bool) -> None:
        """Send queued batches to helpers with room, and take in the answers that arrived
        (waiting for at least one if ``block``)."""
        for helper in self._helpers:
            while helper.alive and self._queued and len(helper.in_flight) < IN_FLIGHT:
                batch = next(iter(self._queued))
                items = self._queued.pop(batch)
                body = pickle.dumps((self.community, items), protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    helper.stdin.write(_HEADER.pack(batch, len(body)) + body)
                    helper.stdin.flush()
                except OSError:
                    self._queued[batch] = items
                    self._lost(helper)
                    break
                self._sent[batch] = items
                helper.in_flight.append(batch)
        if not any(h.alive and h.in_flight for h in self._helpers):
            return
        for key, _ in self._selector.select(None if block else 0):
            self._read(key.data)

    def _read(self, helper: _Helper) -> None:
        try:
            data = os.read(helper.fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            self._lost(helper)
            return
        helper.buffer += data
        while len(helper.buffer) >= _HEADER.size:
            batch, size = _HEADER.unpack_from(helper.buffer)
            if len(helper.buffer) < _HEADER.size + size:
                break
            verdicts = helper.buffer[_HEADER.size : _HEADER.size + size]
            helper.buffer = helper.buffer[_HEADER.size + size :]
            if (
                not helper.in_flight
                or helper.in_flight[0] != batch
                or len(verdicts) != len(self._sent[batch])
            ):
                self._lost(helper)  # not our protocol: trust nothing more from it
                return
            helper.in_flight.popleft()
            items = self._sent.pop(batch)
            if batch in self._stolen:
                self._stolen.discard(batch)  # checked here already
                continue
            self._done[batch] = verdicts
            self.on_helpers += len(items)

    def _lost(self, helper: _Helper) -> None:
        """A helper that died or misbehaved: its batches are checked here instead."""
        if not helper.alive:
            return
        helper.alive = False
        self._selector.unregister(helper.fd)
        for batch in helper.in_flight:
            items = self._sent.pop(batch)
            if batch in self._stolen:
                self._stolen.discard(batch)
            else:
                self._queued[batch] = items
        helper.in_flight.clear()
        helper.proc.kill()

    def close(self) -> None:
        for helper in self._helpers:
            with contextlib.suppress(OSError):
                helper.stdin.close()
        for helper in self._helpers:
            try:
                helper.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                helper.proc.kill()
                helper.proc.wait()
            if helper.proc.stdout is not None:
                helper.proc.stdout.close()
        self._selector.close()

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
