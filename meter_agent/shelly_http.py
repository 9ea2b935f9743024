"""Read a Shelly Pro 3EM through its own HTTP RPC API (Gen2+), with the standard library only.

Each ``read()`` asks the device three RPC methods over plain HTTP (``GET /rpc/<Method>?id=0``):

* ``Shelly.GetDeviceInfo`` -> ``mac``: the **serial** (12 upper-case hex digits, the same MAC the
  ``shelly-pro-3em`` Modbus profile reports, printed on the device's label); ``model`` must
  start with ``SPEM-003`` (the Pro 3EM family), else the reading is refused;
* ``EM.GetStatus`` (id 0) -> ``total_act_power`` (W, > 0 imports when the clamps sit at the grid
  connection), per-phase ``a_/b_/c_voltage``, ``_current``, ``_act_power`` and ``a_freq``;
* ``EMData.GetStatus`` (id 0) -> ``total_act`` (import) and ``total_act_ret`` (export), the
  device's own cumulative counters in Wh, rounded half-even to whole Wh.

Faults are the Modbus reader's ``MeterError`` subclasses: ``MeterTimeout`` (no answer in
time), ``MeterConnectionError`` (cannot connect, connection reset or closed without an
answer), ``MeterFramingError`` (an answer that is not HTTP or not JSON), ``ShellyRpcError`` (the
device answered an RPC with an error, e.g. 401 when authentication is enabled) and
``MeterValueUnavailable`` (a counter or the power missing, null or not a number). Devices with
authentication enabled are not supported yet: the error says so.
"""

from __future__ import annotations

import http.client
import json
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

PROFILE_NAME = "shelly-pro-3em-http"
DEFAULT_PORT = 80
PRO_3EM_MODEL_PREFIX = "SPEM-003"
MAX_BODY = 64 * 1024


class ShellyRpcError(MeterError):
    """The device answered an RPC call with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


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

    def rpc(self, method: str, **params: int) -> dict[str, Any]:
        """``GET /rpc/<method>?k=v`` -> the JSON object it answers."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        path = f"/rpc/{method}" + (f"?{query}" if query else "")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read(MAX_BODY + 1)
        except TimeoutError:
            raise MeterTimeout(f"{self.where}: no answer to {method} within {self.timeout_s:g} s") from None
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
        info = self.rpc("Shelly.GetDeviceInfo")
        model, mac = info.get("model"), info.get("mac")
        if not isinstance(model, str) or not model.startswith(PRO_3EM_MODEL_PREFIX):
            raise MeterValueUnavailable(
                f"{self.where}: the device is a {model!r}, not a Shelly Pro 3EM ({PRO_3EM_MODEL_PREFIX}...)",
                ("model",),
            )
        em = self.rpc("EM.GetStatus", id=self.em_id)
        data = self.rpc("EMData.GetStatus", id=self.em_id)
        power = _number(em.get("total_act_power"))
        imported = _number(data.get("total_act"))
        exported = _number(data.get("total_act_ret"))
        missing = [
            name
            for name, value in (("power_w", power), ("import_wh", imported), ("export_wh", exported))
            if value is None or (name != "power_w" and value < 0)
        ]
        if missing:
            raise MeterValueUnavailable(
                f"{self.where}: {', '.join(missing)} missing in the status (EM.GetStatus total_act_power, "
                "EMData.GetStatus total_act / total_act_ret)",
                tuple(missing),
            )
        assert power is not None and imported is not None and exported is not None

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
