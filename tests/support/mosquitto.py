"""Pytest plugin: a real Mosquitto broker on a free loopback port (fixtures ``mosquitto``,
``mosquitto_factory``) and ``free_port()``.

The broker's config mirrors what production relies on (docs/bus.md): persistence on, saved every
second (``autosave_interval 1``: with the default, a SIGKILL loses the queued QoS 1 messages of
offline sessions) and a large ``max_queued_messages``. ``kill()`` is SIGKILL; ``start()`` /
``restart()`` reuse the same port and persistence directory, so a test can crash the broker and
bring it back. Every process is killed at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from peerwatt.ports import free_port

_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class Mosquitto:
    """One Mosquitto process with its config, persistence directory and log under ``workdir``."""

    host = "127.0.0.1"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        extra_config: Sequence[str] = (),
        config_text: str | None = None,
    ) -> None:
        """``config_text`` replaces the generated config (it must listen on ``port``); the log
        destination, and ``user root`` when running as root, are appended to it."""
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(self.host)
        self.persistence_dir = self.workdir / "data"
        self.persistence_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        if config_text is None:
            config_text = self._config_text(allow_anonymous, extra_config)
        else:
            config_text += "\n" + "\n".join(self._process_lines()) + "\n"
        self.config_path.write_text(config_text)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _config_text(self, allow_anonymous: bool, extra_config: Sequence[str]) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
            *self._process_lines(),
        ]
        return "\n".join([*lines, *extra_config]) + "\n"

    def _process_lines(self) -> list[str]:
        lines = [
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto' and cannot write tmp_path
        return lines

    def start(self) -> None:
        """Start the broker and wait (bounded) until its port accepts connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}: "
                    f"{stderr.strip()} {self.log_tail()}".strip()
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"mosquitto did not accept connections on port {self.port} within "
            f"{_READY_TIMEOUT_S} s: {self.log_tail()}"
        )

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto saves its persistence file on the way out."""
        self._end(signal.SIGTERM)

    def save(self) -> None:
        """Make the broker write its persistence file now (SIGUSR1) and wait (bounded) until the
        new file is in place: what it holds at this moment survives a later SIGKILL."""
        assert self._process is not None and self._process.poll() is None, "mosquitto is not running"
        db = self.persistence_dir / "mosquitto.db"

        def stamp() -> tuple[int, int] | None:
            try:
                st = db.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_mtime_ns

        before = stamp()
        self._process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while stamp() in (before, None):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not save {db} within {_READY_TIMEOUT_S} s")
            time.sleep(0.01)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): only what autosave already wrote survives."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop gracefully (if running) and start again on the same port and persistence."""
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT_S)
        if process.stderr:
            process.stderr.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 10) -> str:
        return " | ".join(self.log_text().splitlines()[-lines:])


def _mosquitto_binary() -> str:
    from tests.conftest import require_tool  # conftest imports this plugin: import late

    return require_tool("mosquitto", "/usr/sbin/mosquitto")


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Make (unstarted) brokers, optionally with extra config lines (TLS, password and ACL files)
    or a whole config of their own; all are killed at teardown."""
    binary = _mosquitto_binary()
    made: list[Mosquitto] = []

    def make(
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        extra_config: Sequence[str] = (),
        config_text: str | None = None,
    ) -> Mosquitto:
        broker = Mosquitto(
            binary,
            tmp_path / f"mosquitto-{len(made)}",
            port=port,
            allow_anonymous=allow_anonymous,
            extra_config=extra_config,
            config_text=config_text,
        )
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in made:
            broker.kill()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A running Mosquitto on a free loopback port (``.host``, ``.port``, ``.url``, ``.kill()``,
    ``.start()``, ``.restart()``, ``.stop()``); killed at teardown."""
    broker = mosquitto_factory()
    broker.start()
    return broker
