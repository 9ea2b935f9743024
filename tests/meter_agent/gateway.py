"""A misbehaving Modbus TCP gateway on loopback, for transport-fault tests.

``FaultyGateway(mode, backend_port=None)`` listens on 127.0.0.1 (a free port) and treats each
client connection according to its current ``mode`` (switchable while it runs):

* ``reset``: accept, wait for the first request, then close with SO_LINGER 0 (the client gets
  a TCP RST: ``ConnectionResetError``), as a gateway does that drops its RS-485 side.
* ``reset_on_accept``: the RST comes right after the accept, before any request.
* ``garbage``: answer every request with bytes that are no Modbus frame.
* ``forward``: relay bytes both ways to the meter at ``backend_port`` (the meter is back).

Real sockets only; every loop is bounded by socket timeouts and the stop flag.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from contextlib import suppress

MODES = ("reset", "reset_on_accept", "garbage", "forward")
GARBAGE = bytes(range(0x80, 0xA0)) * 2  # neither a valid MBAP header nor a Modbus PDU


def _reset(conn: socket.socket) -> None:
    """Close so that the kernel sends RST instead of FIN."""
    with suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class FaultyGateway:
    """See the module docstring. Use as a context manager."""

    def __init__(self, mode: str, backend_port: int | None = None) -> None:
        self.mode = mode
        self.backend_port = backend_port
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, name="faulty-gateway", daemon=True)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}")
        self._mode = value

    def __enter__(self) -> FaultyGateway:
        self._accept_thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._accept_thread.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        mode = self.mode
        if mode == "reset_on_accept":
            _reset(conn)
            return
        if mode == "forward":
            self._forward(conn)
            return
        while not self._stop.is_set():
            try:
                request = conn.recv(260)
            except TimeoutError:
                continue
            except OSError:
                break
            if not request:
                break
            if mode == "reset":
                _reset(conn)
                return
            with suppress(OSError):
                conn.sendall(GARBAGE)
        conn.close()

    def _forward(self, conn: socket.socket) -> None:
        assert self.backend_port is not None, "forward mode needs a backend_port"
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=1)
        except OSError:
            _reset(conn)
            return
        peer = {conn: backend, backend: conn}
        try:
            while not self._stop.is_set() and self.mode == "forward":
                readable, _, _ = select.select(list(peer), [], [], 0.1)
                for source in readable:
                    data = source.recv(4096)
                    if not data:
                        return
                    peer[source].sendall(data)
            _reset(conn)  # switched away from forwarding: the gateway drops its clients
        except OSError:
            return
        finally:
            backend.close()
            conn.close()
