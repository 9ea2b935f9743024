"""Read a Shelly Pro 3EM through its own HTTP RPC API (Gen2+), with the standard library only.

Each ``read()`` asks the device three RPC methods over plain HTTP (``GET /rpc/<Method>?id=0``):

* ``Shelly.GetDeviceInfo`` -> ``mac``: the **serial** (12 upper-case hex digits, the same MAC the
  ``shelly-pro-3em`` Modbus profile reports, printed on the device's label); ``model`` must
  start with ``SPEM-003`` (the Pro 3EM family), else the reading is refused;
* ``EM.GetStatus`` (id 0) -> ``total_act_power`` (W, > 0 imports when the clamps sit at the grid
  connection), per-phase ``a_/b_/c_voltage``, ``_current``, ``_act_power`` and ``a_freq``;
* ``EMData.GetStatus`` (id 0) -> ``total_act`` (import) and ``total_act_ret`` (export), the
  device's own cumulative counters in Wh, rounded half-even to whole Wh.

One attempt (the three calls) must be answered completely within ``timeout_s``: the deadline
bounds the whole exchange, not each socket read, so a device that trickles its answer (a byte a
second, endless chunks, one header line at a time) is a ``MeterTimeout`` after ``timeout_s``,
not a read that never returns.

Faults are the Modbus reader's ``MeterError`` subclasses: ``MeterTimeout`` (no complete answer in
time), ``MeterConnectionError`` (cannot connect, connection reset or closed without an
answer), ``MeterFramingError`` (an answer that is not HTTP or not JSON), ``ShellyRpcError`` (the
device answered an RPC with an error, e.g. 401 when authentication is enabled) and
``MeterValueUnavailable`` (a counter or the power missing, null, not a number, or a counter
negative or above 10 GWh, ``probe.MAX_COUNTER_WH``: the message says which). Devices with
authentication enabled are not supported yet: the error says so.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterError,
    MeterFramingError,
    MeterSample,
    MeterTimeout,
    MeterValueUnavailable,
)
from meter_agent.probe import counter_problem

PROFILE_NAME = "shelly-pro-3em-http"
DEFAULT_PORT = 80
PRO_3EM_MODEL_PREFIX = "SPEM-003"
MAX_BODY = 64 * 1024


class ShellyRpcError(MeterError):
    """The device answered an RPC call with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _DeadlineRaw(io.RawIOBase):
    """A connected socket's reads, each allowed only the time left until ``deadline``
    (``time.monotonic()``): a TimeoutError once it has passed."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._file = sock.makefile("rb", buffering=0)  # keeps the socket open until closed
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer took longer than the deadline")
        self._sock.settimeout(remaining)
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


class _DeadlineSocket:
    """The socket an ``http.client`` connection uses, with every read (status line, headers,
    body, chunks) ending by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to send the request")
        self._sock.settimeout(remaining)
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(_DeadlineRaw(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose connect, request and whole answer end by ``deadline``."""

    def __init__(self, host: str, port: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to connect")
        super().__init__(host, port, timeout=remaining)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self._deadline)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


class ShellyHttpReader:
    """Reads a Shelly Pro 3EM's RPC status over HTTP (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        retries: int = 1,
        em_id: int = 0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.clock = clock
        self.retries = retries
        self.em_id = em_id

    @property
    def where(self) -> str:
        return f"Shelly Pro 3EM at http://{self.host}:{self.port}"

    def read(self) -> MeterSample:
        """One reading, with at most ``retries`` further attempts after a timeout or a dropped
        connection."""
        for attempt in range(self.retries + 1):
            try:
                return self._read_once()
            except (MeterTimeout, MeterConnectionError):
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Nothing stays open between reads."""

    def __enter__(self) -> ShellyHttpReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- RPC

    def rpc(self, method: str, deadline: float | None = None, **params: int) -> dict[str, Any]:
        """``GET /rpc/<method>?k=v`` -> the JSON object it answers, complete by ``deadline``
        (``time.monotonic()``; default ``timeout_s`` from now)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        query = "&".join(f"{k}={v}" for k, v in params.items())
        path = f"/rpc/{method}" + (f"?{query}" if query else "")
        conn: _DeadlineConnection | None = None
        try:
            conn = _DeadlineConnection(self.host, self.port, deadline)
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(MAX_BODY + 1)
        except TimeoutError:
            raise MeterTimeout(
                f"{self.where}: no complete answer to {method} in time ({self.timeout_s:g} s for the "
                "three calls of a reading)"
            ) from None
        except http.client.RemoteDisconnected:
            raise MeterConnectionError(
                f"{self.where}: the device closed the connection without answering {method}",
                closed_by_peer=True,
            ) from None
        except ConnectionResetError:
            raise MeterConnectionError(
                f"{self.where}: connection reset during {method}", closed_by_peer=True
            ) from None
        except http.client.HTTPException as exc:
            raise MeterFramingError(f"{self.where}: no valid HTTP answer to {method} ({exc!r})") from None
        except OSError as exc:
            raise MeterConnectionError(
                f"{self.where}: cannot connect ({exc.strerror or type(exc).__name__}): check the address "
                "and that the device is on the network"
            ) from None
        finally:
            if conn is not None:
                conn.close()
        if len(body) > MAX_BODY:
            raise MeterFramingError(f"{self.where}: the answer to {method} is larger than {MAX_BODY} bytes")
        if response.status != 200:
            hint = (
                " (authentication is enabled on the device: not supported yet)"
                if response.status == 401
                else ""
            )
            raise ShellyRpcError(
                f"{self.where}: {method} answered HTTP {response.status}{hint}", response.status
            )
        try:
            result = json.loads(body)
        except ValueError:
            raise MeterFramingError(f"{self.where}: the answer to {method} is not JSON") from None
        if not isinstance(result, dict):
            raise MeterFramingError(f"{self.where}: the answer to {method} is not a JSON object")
        return result

    def _read_once(self) -> MeterSample:
        deadline = time.monotonic() + self.timeout_s  # the whole attempt: three calls
        info = self.rpc("Shelly.GetDeviceInfo", deadline)
        model, mac = info.get("model"), info.get("mac")
        if not isinstance(model, str) or not model.startswith(PRO_3EM_MODEL_PREFIX):
            raise MeterValueUnavailable(
                f"{self.where}: the device is a {model!r}, not a Shelly Pro 3EM ({PRO_3EM_MODEL_PREFIX}...)",
                ("model",),
            )
        em = self.rpc("EM.GetStatus", deadline, id=self.em_id)
        data = self.rpc("EMData.GetStatus", deadline, id=self.em_id)
        fields = (
            ("power_w", "EM.GetStatus total_act_power", em),
            ("import_wh", "EMData.GetStatus total_act", data),
            ("export_wh", "EMData.GetStatus total_act_ret", data),
        )
        values: dict[str, Decimal] = {}
        problems: list[str] = []
        for name, field, status in fields:
            raw = status.get(field.rsplit(" ", 1)[1])
            number = _number(raw)
            if raw is None:
                problems.append(f"{name} ({field}) is missing in the status")
            elif number is None:
                problems.append(f"{name} ({field}) is {json.dumps(raw)}, not a number")
            elif name != "power_w" and (wrong := counter_problem(number)) is not None:
                # (above the bound: 1e300, found in a QA pass)
                problems.append(f"{name} ({field}) is {raw}{'' if number < 0 else ' Wh'}: {wrong}")
            else:
                values[name] = number
        if problems:
            raise MeterValueUnavailable(
                f"{self.where}: {'; '.join(problems)}",
                tuple(name for name, _, _ in fields if name not in values),
            )
        power, imported, exported = values["power_w"], values["import_wh"], values["export_wh"]

        def phases(suffix: str) -> tuple[float | None, ...]:
            values = [_number(em.get(f"{p}_{suffix}")) for p in "abc"]
            while values and values[-1] is None:
                values.pop()
            return tuple(None if v is None else float(v) for v in values)

        frequency = _number(em.get("a_freq"))
        return MeterSample(
            time=int(self.clock()),
            power_w=_round(power),
            import_wh=_round(imported),
            export_wh=_round(exported),
            voltage_v=phases("voltage"),
            current_a=phases("current"),
            phase_power_w=phases("act_power"),
            frequency_hz=None if frequency is None else float(frequency),
            serial=mac.upper() if isinstance(mac, str) and mac else None,
            profile=PROFILE_NAME,
            unit_id=self.em_id,
        )


__all__ = ["ShellyHttpReader", "ShellyRpcError", "PROFILE_NAME", "DEFAULT_PORT"]
