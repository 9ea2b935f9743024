"""Hosts of a `peerwatt simulate` study: a share of its nodes and agents, behind one interface
with two transports.

A :class:`StudyHost` builds its clients (nodes with their own stores, agents with their meters)
from the study's options alone (peerwatt/sim_community.py) and answers the coordinator's
requests, one per superstep (the exchange is peerwatt/sim_bus.py):

- ``("tick", t)``: the clock reaches ``t``. The nodes first run idle up to ``t`` (virtual time:
  consensus timers due by then fire), then the ledger clock moves and every agent polls its meter.
  The nodes do not step again at ``t`` before the agents' messages reach them (next superstep), so
  a block due at ``t`` holds what the agents sent at ``t``.
- ``("step", deliveries)``: fire the acknowledgements of what the coordinator routed, hand the
  deliveries to their clients, run every node's ``step()`` until it is quiet.
- ``("rss",)``: this process's resident memory (MB), measured by itself.
- ``("close",)``: close the stores and outboxes; the nodes' final figures.

Both transports answer ``send(request)`` then ``receive() -> reply``, so the coordinator sends to
every host first and then collects, and the hosts work at the same time:

- :class:`InProcessHost`: the host in the coordinator's process (``--workers 1`` runs only this).
- :class:`SubprocessHost`: the host in a worker process, ``python -c "from peerwatt.sim_worker
  import main; main()"`` (not multiprocessing: spawn re-runs the caller's ``__main__``, and fork
  from a threaded process warns), talking length-prefixed pickled frames over its stdin and
  stdout (our own processes on both ends). Every wait is bounded; a worker that dies, hangs or
  answers garbage raises :class:`WorkerError` naming its nodes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meter_agent.clock import SimClock
from peerwatt.sim_bus import HostExchange, Published
from peerwatt.sim_community import (
    AgentsShared,
    SimOptions,
    make_agent,
    make_genesis,
    make_homes,
    make_node,
    node_name,
    rss_mb,
    start_time,
    validator_keys,
)

WORKER_CODE = "from peerwatt.sim_worker import main; main()"  # what a worker process runs
MAX_STEPS = 1000  # node.step() calls per superstep before a node counts as still busy

_FRAME = struct.Struct("<4sQ")  # magic, length of the pickle that follows
_MAGIC = b"PWS1"
MAX_FRAME = 1 << 31

# what a host answers to one request: what its clients published and subscribed, whether a
# node was still busy after MAX_STEPS steps, and the request's own result (rss, figures)
Reply = tuple[list[Published], list[tuple[str, str]], bool, Any]


class WorkerError(RuntimeError):
    """A worker process died, hung or answered garbage (the message is one line)."""


@dataclass(frozen=True)
class HostSpec:
    """Which clients a host holds: node indices (0 is the sequencer) and home indices."""

    nodes: tuple[int, ...]
    homes: tuple[int, ...]

    @property
    def name(self) -> str:
        """For messages: its nodes' names, and its homes when it has no node."""
        if self.nodes:
            return " and ".join(node_name(i) for i in self.nodes)
        if not self.homes:
            return "an empty host"
        return f"homes {self.homes[0] + 1}-{self.homes[-1] + 1}"


class StudyHost:
    """The clients of one host and its answers to the coordinator (see the module docstring)."""

    def __init__(self, options: SimOptions, spec: HostSpec) -> None:
        o = options
        self.spec = spec
        keys = validator_keys(o)
        homes = make_homes(o)
        genesis = make_genesis(o, keys, homes)
        self.genesis_hash = genesis.hash.hex()  # the coordinator checks every host built the same
        start = start_time(o)
        self.clock = SimClock(start, 1.0)  # the ledger's and the meters' time
        self.clock.pause()
        self.monotonic = SimClock(start, 1.0)  # the nodes' timers: virtual too, never the machine's
        self.monotonic.pause()
        self.exchange = HostExchange()
        self.nodes = []
        self.agents = []
        try:
            for i in spec.nodes:
                bus = self.exchange.bus(f"node-{i}")
                self.nodes.append(make_node(o, genesis, i, keys[i], bus, self.clock, self.monotonic.now))
            shared = AgentsShared(o)
            for i in spec.homes:
                bus = self.exchange.bus(f"agent-{i}")
                self.agents.append(make_agent(o, genesis, homes, i, bus, self.clock, shared))
            for node in self.nodes:
                node.start()
            for agent in self.agents:
                agent.start()
        except BaseException:
            self.close()
            raise

    def handle(self, request: tuple) -> Reply:
        kind = request[0]
        busy = False
        result: Any = None
        if kind == "tick":
            self.exchange.routed()
            self._tick(request[1])
        elif kind == "step":
            self.exchange.routed()
            self.exchange.deliver(request[1])
            busy = self._settle()
        elif kind == "rss":
            result = rss_mb()
        elif kind == "close":
            result = self.close()
        elif kind == "hello":
            result = self.genesis_hash
        else:
            raise ValueError(f"unknown request {kind!r}")
        published, subscribed = self.exchange.take()
        return published, subscribed, busy, result

    def _tick(self, t: float) -> None:
        # the nodes idle until t (only timers can fire: nothing arrived), at the ledger time of
        # the last poll; then the ledger time moves and the agents poll
        self.monotonic.advance(t - self.monotonic.now())
        self._settle()
        self.clock.advance(t - self.clock.now())
        for agent in self.agents:
            agent.poll()

    def _settle(self) -> bool:
        """Step every node until it is quiet; True if one was still busy after MAX_STEPS."""
        busy = False
        for node in self.nodes:
            for _ in range(MAX_STEPS):
                if not node.step():
                    break
            else:
                busy = True
        return busy

    def close(self) -> dict[str, dict[str, int]]:
        """Close the outboxes and stores; each node's height, failovers and quarantined messages."""
        figures = {}
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.outbox.close()
        for index, node in zip(self.spec.nodes, self.nodes, strict=False):
            figures[node_name(index)] = {
                "height": node.ledger.height,
                "failovers": node.metrics.failovers,
                "quarantined": node.metrics.quarantined,
                "blocks_refused": sum(node.metrics.blocks_refused.values()),
            }
            with contextlib.suppress(Exception):
                node.ledger.close()
        self.agents, self.nodes = [], []
        return figures


# -- frames --------------------------------------------------------------------------------------


def encode_frame(obj: Any) -> bytes:
    """One frame: the header (magic, length) and the pickle of ``obj``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(_MAGIC, len(body)) + body


def write_frame(stream: IO[bytes], obj: Any) -> None:
    stream.write(encode_frame(obj))
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or None at the end of the stream."""
    header = stream.read(_FRAME.size)
    if not header:
        return None
    magic, size = _FRAME.unpack(header)
    if magic != _MAGIC or size > MAX_FRAME:
        raise ValueError("not a frame of the simulate protocol")
    body = stream.read(size)
    if len(body) != size:
        return None
    return pickle.loads(body)


# -- transports ----------------------------------------------------------------------------------


class InProcessHost:
    """A host in this process: ``receive`` runs the request ``send`` gave it."""

    in_process = True

    def __init__(self, options: SimOptions, spec: HostSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self._core = StudyHost(options, spec)
        self._request: tuple | None = ("hello",)  # answered first, as a worker does

    def send(self, request: tuple) -> None:
        self._request = request

    def receive(self) -> Reply:
        request, self._request = self._request, None
        assert request is not None, "receive() without send()"
        return self._core.handle(request)

    def kill(self) -> None:
        self._core.close()

    def finish(self, timeout_s: float) -> None:
        pass


class SubprocessHost:
    """A host in a worker process (see the module docstring). The worker starts building its
    clients at once; its first reply (to ``hello``) says it is ready."""

    in_process = False

    def __init__(self, options: SimOptions, spec: HostSpec, *, timeout_s: float) -> None:
        self.name = spec.name
        self.spec = spec
        self.timeout_s = timeout_s
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # where `peerwatt` is importable from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        with contextlib.suppress(AttributeError, OSError):  # Linux: a superstep's frame in one go
            import fcntl

            for fd in (self._in, self._out):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        self._buffer = bytearray()
        try:
            self.send(("hello", options, spec))
        except BaseException:  # Ctrl-C included: not yet in the caller's list of hosts to end
            self.kill()
            raise

    def send(self, request: tuple) -> None:
        data = memoryview(encode_frame(request))
        deadline = time.monotonic() + self.timeout_s
        while data:
            try:
                written = os.write(self._in, data)
            except BlockingIOError:
                written = 0
            except OSError:
                raise self._failed("died") from None
            data = data[written:]
            if data and not self._wait(deadline, write=True):
                raise self._failed(f"took no request for {self.timeout_s:.0f} s")

    def receive(self) -> Reply:
        deadline = time.monotonic() + self.timeout_s
        while (frame := self._frame()) is None:
            if not self._wait(deadline, write=False):
                raise self._failed(f"did not answer within {self.timeout_s:.0f} s")
            try:
                chunk = os.read(self._out, 1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise self._failed("died")
            self._buffer += chunk
        try:
            reply = pickle.loads(frame)
        except Exception:  # noqa: BLE001 - anything that does not unpickle is garbage
            raise self._failed("answered garbage") from None
        if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "error" and isinstance(reply[1], str):
            raise self._failed(f"failed: {reply[1]}")
        if not (isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "ok" and _is_reply(reply[1])):
            raise self._failed("answered garbage")
        return reply[1]

    def _frame(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < _FRAME.size:
            return None
        magic, size = _FRAME.unpack_from(buffer)
        if magic != _MAGIC or size > MAX_FRAME:
            raise self._failed("answered garbage")
        if len(buffer) < _FRAME.size + size:
            return None
        frame = bytes(buffer[_FRAME.size : _FRAME.size + size])
        del buffer[: _FRAME.size + size]
        return frame

    def _wait(self, deadline: float, *, write: bool) -> bool:
        """Wait until the pipe is ready (True) or the deadline passed (False)."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        fd = [self._in] if write else [self._out]
        ready = select.select([], fd, [], left) if write else select.select(fd, [], [], left)
        return bool(ready[0] or ready[1])

    def _failed(self, what: str) -> WorkerError:
        self.kill()
        code = self.proc.returncode
        exit_note = "" if what != "died" or code is None else f" (exit code {code})"
        return WorkerError(f"the worker process of {self.name} {what}{exit_note}; the study stopped")

    def finish(self, timeout_s: float) -> None:
        """After ``close``: the worker exits by itself; wait for it (bounded), then reap it."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """End the worker now and reap it (no zombie); safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]


def _is_reply(reply: Any) -> bool:
    return (
        isinstance(reply, tuple)
        and len(reply) == 4
        and isinstance(reply[0], list)
        and isinstance(reply[1], list)
        and isinstance(reply[2], bool)
    )


Host = InProcessHost | SubprocessHost  # what the coordinator holds: either transport
