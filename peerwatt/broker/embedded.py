"""The embedded MQTT broker of the one-command demo: amqtt running in a thread of our process.

amqtt speaks MQTT 3.1.1 only (``MqttBus`` falls back to it by itself, or pass
``protocol=EmbeddedBroker.protocol``). It listens on loopback by default and accepts every client:
it is for the demo and tests, never for a community (that runs Mosquitto, see docs/bus.md).

amqtt must be created and started inside a running asyncio loop, gets an explicit plugin list
(its defaults load logging and $SYS plugins we do not want), and the loop is closed on shutdown
so no task or socket leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from types import TracebackType

from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from peerwatt.errors import UserError

log = logging.getLogger("peerwatt.broker")  # its name before the broker became a package

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_FREE_PORT_ATTEMPTS = 3


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in, without marking it anonymous.

    amqtt's own AnonymousAuthPlugin marks clients without a user name "anonymous" and then drops
    their sessions when they disconnect; this broker should keep persistent sessions (QoS 1
    messages queued for a client that is away), as Mosquitto does.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        return True


class EmbeddedBroker:
    """amqtt in its own thread and asyncio loop: ``start()``, ``.port``, ``.url``, ``stop()``.

    ``port=0`` picks a free port. Also a context manager. A port already in use raises
    :class:`peerwatt.errors.UserError` naming the port.
    """

    protocol = "3.1.1"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, session_expiry_s: int = 86400) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"broker port {port!r} is outside 0..65535")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._session_expiry_s = session_expiry_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the embedded broker is not running")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start listening; returns once clients can connect."""
        if self.running:
            return
        if self._requested_port:
            self._check_port_free(self._requested_port)
            self._start_on(self._requested_port)
            return
        for attempt in range(_FREE_PORT_ATTEMPTS):
            try:
                self._start_on(self._pick_free_port())
                return
            except UserError:  # another process took the port in between: pick again
                if attempt == _FREE_PORT_ATTEMPTS - 1:
                    raise

    def stop(self) -> None:
        """Shut the broker down, close its loop and join its thread."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the embedded MQTT broker did not stop within {_STOP_TIMEOUT_S} s")
        self._thread = self._loop = self._stop_event = None
        self._port = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _in_use(self, port: int) -> UserError:
        return UserError(
            f"cannot start the embedded MQTT broker: port {port} on {self.host} is already in use "
            "(stop the program using it or choose another port)"
        )

    def _check_port_free(self, port: int) -> None:
        """Fail with one clear line before amqtt would log a traceback for a busy port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as amqtt binds
            try:
                probe.bind((self.host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise self._in_use(port) from None
                raise UserError(
                    f"cannot start the embedded MQTT broker on {self.host}:{port}: {exc.strerror}"
                ) from None

    def _pick_free_port(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.host, 0))
            except OSError as exc:
                raise UserError(
                    f"cannot start the embedded MQTT broker on {self.host}: {exc.strerror}"
                ) from None
            return int(probe.getsockname()[1])

    def _start_on(self, port: int) -> None:
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._run, args=(port,), name="peerwatt-embedded-broker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self.stop()
            raise UserError(f"the embedded MQTT broker did not start within {_START_TIMEOUT_S} s")
        if self._start_error is not None:
            error = self._start_error
            self._thread.join(_STOP_TIMEOUT_S)
            self._thread = None
            if _is_address_in_use(error):
                raise self._in_use(port)
            raise UserError(f"cannot start the embedded MQTT broker: {error}")
        self._port = port
        log.info("embedded MQTT broker listening on %s", self.url)

    def _config(self, port: int) -> dict[str, object]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "session_expiry_interval": self._session_expiry_s,
            "plugins": {f"{__name__}.OpenAuthPlugin": {}},
        }

    def _run(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_client_errors)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(port))
        except BaseException as exc:  # reported to start(); never lost in this thread
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                log.exception("the embedded MQTT broker failed")
        finally:
            _close_loop(loop)

    async def _serve(self, port: int) -> None:
        broker = Broker(self._config(port))  # inside the running loop, as amqtt requires
        self._stop_event = asyncio.Event()
        try:
            await broker.start()
        except BrokerError as exc:
            self._start_error = exc.__cause__ or exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await broker.shutdown()


def _quiet_client_errors(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Log a client that vanished mid-handshake as debug, not as an asyncio error with traceback.

    amqtt lets an OSError escape its connection callback when a client closes the socket while
    amqtt is still reading or refusing its CONNECT (e.g. an MQTT 5 probe, see MqttBus).
    """
    if isinstance(context.get("exception"), OSError) and "client_connected_cb" in str(
        context.get("message", "")
    ):
        log.debug("a client left during its CONNECT: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


def _is_address_in_use(error: BaseException | None) -> bool:
    for _depth in range(10):  # follow the chain of causes, boundedly
        if error is None:
            return False
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            return True
        error = error.__cause__ or error.__context__
    return False


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left, let it finish, and close the loop (no leaked tasks or sockets)."""
    try:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
