"""Serve bytes a meter pushes by itself: to every TCP client, or to a pseudo-terminal.

``PushServer(make_data, interval_s)`` calls ``make_data()`` every ``interval_s`` real seconds in a
background thread and writes the bytes it returns (None: nothing this time) to every connected
TCP client, or to a pty whose slave side (``device``) a reader opens like a serial port. Used by
the SML and P1 simulators; ``close_clients()`` drops every connection (a "disconnect" fault).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable


class PushServer:
    def __init__(
        self,
        make_data: Callable[[], bytes | None],
        interval_s: float,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pty: bool = False,
        name: str = "push-server",
        refuse: Callable[[], bool] = lambda: False,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.make_data = make_data
        self.interval_s = interval_s
        self.host = host
        self.port = port
        self.use_pty = pty
        self.name = name
        self.refuse = refuse  # True: close new TCP clients at once
        self.device: str | None = None
        self.sent = 0
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        if self.use_pty:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.device = os.ttyname(self._slave)
        else:
            server = socket.create_server((self.host, self.port))
            server.setblocking(False)
            self._server = server
            self.port = server.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        self.close_clients()
        if self._server is not None:
            self._server.close()
            self._server = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def where(self) -> str:
        return self.device if self.use_pty else f"{self.host}:{self.port}"  # type: ignore[return-value]

    def close_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            self._accept()
            if time.monotonic() >= next_send:
                next_send += self.interval_s
                data = self.make_data()
                if data:
                    self._send(data)
            self._stop.wait(min(0.02, max(0.0, next_send - time.monotonic())))

    def _accept(self) -> None:
        if self._server is None:
            return
        for _ in range(100):  # bounded per pass
            try:
                client, _ = self._server.accept()
            except OSError:  # BlockingIOError: nobody waiting
                return
            if self.refuse():
                client.close()
                continue
            client.setblocking(False)
            with self._lock:
                self._clients.append(client)

    def _send(self, data: bytes) -> None:
        self.sent += 1
        if self._master is not None:
            with contextlib.suppress(OSError):  # nobody reading: the pty buffer is full
                os.write(self._master, data)
            return
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            try:
                _, writable, _ = select.select([], [client], [], 0)
                if writable:
                    client.send(data)
            except OSError:
                with self._lock:
                    if client in self._clients:
                        self._clients.remove(client)
                client.close()
