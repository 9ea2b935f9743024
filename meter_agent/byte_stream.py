"""A meter that pushes bytes by itself (SML through an IR head): a TCP socket or a serial port.

``ByteStream.receive(wait_s)`` returns what arrived within ``wait_s`` seconds (None when nothing
did) and raises the Modbus reader's ``MeterConnectionError`` when the port cannot be opened or the
peer closed it, so every push source reports transport faults the same way. Used by
``meter_agent.sml`` and ``meter_agent.p1``; opened lazily, reopened after ``close()``.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass
from typing import Any

from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterFramingError,
    MeterSample,
    MeterTimeout,
    TcpTarget,
)


@dataclass(frozen=True)
class StreamSerialTarget:
    """A serial device that receives a meter's pushed data (an IR head on /dev/ttyUSB0, a pty in
    tests); 8N1 at ``baudrate``."""

    device: str
    baudrate: int

    def describe(self) -> str:
        return f"{self.device} ({self.baudrate} 8N1)"


StreamTarget = TcpTarget | StreamSerialTarget


class ByteStream:
    """One connection to ``target``; ``where`` names the meter and ``peer`` what it is reached
    through (an IR head's "bridge", a P1 "dongle") in error messages."""

    def __init__(
        self, target: StreamTarget, where: str, connect_timeout_s: float, peer: str = "bridge"
    ) -> None:
        self.target = target
        self.where = where
        self.peer = peer
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._port: Any = None  # serial.Serial

    @property
    def is_open(self) -> bool:
        return self._sock is not None or self._port is not None

    def open(self) -> None:
        if self.is_open:
            return
        if isinstance(self.target, TcpTarget):
            try:
                self._sock = socket.create_connection(
                    (self.target.host, self.target.port), timeout=self.connect_timeout_s
                )
            except OSError as exc:
                raise MeterConnectionError(
                    f"{self.where}: cannot connect ({exc.strerror or type(exc).__name__}): check the "
                    f"{self.peer}'s address and port"
                ) from None
            return
        import serial  # pyserial

        try:
            self._port = serial.Serial(
                self.target.device,
                baudrate=self.target.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=0,
            )
        except (OSError, serial.SerialException) as exc:
            raise MeterConnectionError(f"{self.where}: cannot open the serial port ({exc})") from None
        except (ValueError, OverflowError) as exc:  # pyserial: a baud rate it or the port refuses
            raise MeterConnectionError(
                f"{self.where}: cannot open the serial port at {self.target.baudrate} baud "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'refused'})"
            ) from None

    def receive(self, wait_s: float) -> bytes | None:
        """Up to 4 KiB that arrived within ``wait_s`` seconds, or None when nothing did."""
        self.open()
        handle = self._sock if self._sock is not None else self._port
        try:
            ready, _, _ = select.select([handle], [], [], max(0.0, wait_s))
            if not ready:
                return None
            data = self._sock.recv(4096) if self._sock is not None else self._port.read(4096)
        except (OSError, ValueError) as exc:
            self.close()
            raise MeterConnectionError(
                f"{self.where}: connection error ({exc})", closed_by_peer=True
            ) from None
        except Exception as exc:  # pyserial's SerialException (device unplugged)
            self.close()
            raise MeterConnectionError(
                f"{self.where}: serial port error ({exc})", closed_by_peer=True
            ) from None
        if not data:
            self.close()
            raise MeterConnectionError(
                f"{self.where}: the connection was closed by the {self.peer} or port", closed_by_peer=True
            )
        return bytes(data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._port is not None:
            self._port.close()
            self._port = None


class PushMeterReader:
    """What readers of meters that push data (P1, SML) share: a read with at most ``retries``
    further attempts after a timeout, a dropped connection or a frame with a bad CRC (closing
    the stream in between, except after a timeout while a frame has begun: the retry may complete
    it), ``close()``, and use as a context manager. A subclass sets ``retries`` and ``_stream``
    and implements :meth:`_read_newest`."""

    retries: int
    _stream: ByteStream

    def _read_newest(self) -> MeterSample:
        """The newest complete frame on the stream, as a sample."""
        raise NotImplementedError

    def _after_close(self) -> None:
        """Forget the parser state of a closed stream (a hook for subclasses)."""

    def _holds_partial_frame(self) -> bool:
        """True when the bytes read so far begin a frame (a hook for subclasses): a timeout then
        keeps the stream and those bytes for the retry and the next read."""
        return False

    def read(self) -> MeterSample:
        """The newest complete frame as a sample, retrying as the class docstring says."""
        for attempt in range(self.retries + 1):
            try:
                return self._read_newest()
            except (MeterTimeout, MeterConnectionError, MeterFramingError) as exc:
                begun = isinstance(exc, MeterTimeout) and self._stream.is_open and self._holds_partial_frame()
                if not begun:
                    self.close()
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the socket or serial port; the next read reopens it."""
        self._stream.close()
        self._after_close()

    def __enter__(self) -> PushMeterReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
