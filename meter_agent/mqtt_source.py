"""A meter whose values are already on the household's own MQTT broker: Tasmota (SML or energy
telemetry), Shelly Gen2 status topics, Home Assistant's MQTT statestream, or anything else that
publishes numbers.

Each quantity (import, export, power) names a **topic**, a **path** into the JSON payload
(dotted, list indices as numbers: ``SML.Total_in``, ``ENERGY.Total``, ``emeters.0.total``; an
empty path takes the whole payload as a number, as Home Assistant's statestream sends a
sensor's state) and its **unit** (energy ``Wh`` or ``kWh``, power ``W`` or ``kW``; power may
be ``invert``-ed for devices that report export as positive). Examples:

* Tasmota SML: ``tele/<device>/SENSOR``, paths ``<meter name>.<variable>`` as named in the
  device's SML script (e.g. ``SML.Total_in``, kWh), sent every TelePeriod;
* Shelly Pro 3EM (Gen2 MQTT): ``<prefix>/status/emdata:0`` paths ``total_act`` and
  ``total_act_ret`` (Wh), ``<prefix>/status/em:0`` path ``total_act_power`` (W);
* Home Assistant statestream: ``<base_topic>/sensor/<object_id>/state``, empty path, the
  sensor's unit.

``read()`` returns the newest value of each quantity as a ``MeterSample``. **Staleness**: a
quantity that received no live message during ``stale_polls`` consecutive polls is a
``MeterTimeout`` naming its topic (the publisher stopped or the meter went away); it recovers
with the next live message. Every poll counts, also one while the broker is away (found in a QA
pass: polls during an outage did not count, and the values from before it read as fresh after
the reconnect). A retained message the broker delivers on subscribe (after a start or a
reconnect; MQTT marks it with the retain flag) updates the value but is no proof that the
publisher is alive, so it does not restart the count: after a reconnect a dead publisher's
retained values stay stale, and after a start they are served for at most ``stale_polls`` - 1
polls unless a live message confirms them. A payload that is not JSON (with a path) is a
``MeterFramingError``; a missing path, a non-number, NaN, a number of 10**15 or more (in any
unit) or a counter negative or above 10 GWh (``probe.MAX_COUNTER_WH``) a
``MeterValueUnavailable``; no broker a ``MeterConnectionError``
(naming the broker's reason when it refused the connection: bad user name or password, not
authorised). Nothing on these topics identifies the meter: the **serial** is the
one configured (the meter's nameplate serial), and the community must check it by other means
(docs/meters.md). paho-mqtt is imported when the first read connects.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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

PROFILE_NAME = "mqtt"
ENERGY_UNITS = {"Wh": 1, "kWh": 1000}
POWER_UNITS = {"W": 1, "kW": 1000}
QUANTITIES = ("import_wh", "export_wh", "power_w")
MAX_PAYLOAD = 64 * 1024
# a payload's number has fewer digits before the point than this (1 PWh or 1 TW in any unit):
# larger ones are no meter's and overflowed the scaling (found in a QA pass: "1e999999")
MAX_DIGITS = 15
# stale_polls: at most the polls in a day at the shortest poll_s (0.1 s, meter_agent/config.py
# POLL_S); 10**9 was accepted, a staleness check that never fires (found in a QA pass)
MAX_STALE_POLLS = 864_000


@dataclass(frozen=True)
class MqttQuantity:
    """Where one quantity is published: topic, JSON path ('' = the whole payload), unit."""

    topic: str
    path: str
    unit: str
    invert: bool = False

    def check(self, name: str) -> None:
        units = POWER_UNITS if name == "power_w" else ENERGY_UNITS
        if self.unit not in units:
            raise ValueError(f"{name}: unit must be one of {', '.join(units)}, not {self.unit!r}")
        if not self.topic or any(c in self.topic for c in "+#"):
            raise ValueError(f"{name}: topic must be one topic without wildcards, not {self.topic!r}")
        if self.invert and name != "power_w":
            raise ValueError(f"{name}: invert applies to power only")
        if self.path and "" in self.path.split("."):  # "SML..x" read "no 'SML..x' in the payload"
            raise ValueError(
                f"{name}: path {self.path!r} has an empty part (dotted keys, e.g. 'SML.Total_in'; "
                "'' takes the whole payload)"
            )


@dataclass(frozen=True)
class MqttSourceConfig:
    host: str
    port: int
    quantities: dict[str, MqttQuantity]  # import_wh, export_wh, power_w
    serial: str
    stale_polls: int = 12
    username: str | None = None
    password: str | None = None
    client_id: str | None = None

    def __post_init__(self) -> None:
        missing = [q for q in QUANTITIES if q not in self.quantities]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        for name, quantity in self.quantities.items():
            quantity.check(name)
        seen: dict[tuple[str, str], str] = {}
        for name in QUANTITIES:  # one value read as two quantities (e.g. import and export)
            quantity = self.quantities[name]
            other = seen.setdefault((quantity.topic, quantity.path), name)
            if other != name:
                raise ValueError(
                    f"{other} and {name} read the same value (topic {quantity.topic!r}, path "
                    f"{quantity.path!r}): give each its own topic or path"
                )
        if not 1 <= self.stale_polls <= MAX_STALE_POLLS:
            raise ValueError(
                f"stale_polls must be 1 to {MAX_STALE_POLLS} (the polls in a day at poll_s = 0.1), "
                f"not {self.stale_polls}"
            )
        if not self.serial:
            raise ValueError("serial is required (nothing on MQTT identifies the meter)")


def extract(payload: bytes, path: str) -> Decimal:
    """The number at ``path`` in ``payload``; raises MeterFramingError (not JSON) or
    MeterValueUnavailable (no such path, not a finite number)."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not path:
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, str):
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise MeterValueUnavailable(f"payload {text[:40]!r} is not a number", ()) from None
            if not number.is_finite():
                raise MeterValueUnavailable(f"payload {text[:40]!r} is not a finite number", ())
            return _bounded(number, path)
    else:
        try:
            value = json.loads(text)
        except ValueError:
            raise MeterFramingError(f"payload is not JSON ({text[:40]!r})") from None
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise MeterValueUnavailable(f"no {path!r} in the payload", ())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MeterValueUnavailable(f"{path or 'payload'} is {value!r:.40}, not a number", ())
    return _bounded(Decimal(str(value)), path)


def _bounded(number: Decimal, path: str) -> Decimal:
    if number.adjusted() >= MAX_DIGITS:  # adjusted(): no arithmetic that could overflow
        raise MeterValueUnavailable(
            f"{path or 'payload'} is {number:.3e}: implausible for a meter (10**{MAX_DIGITS} or more)", ()
        )
    return number


class _Latest:
    """The newest message state of one quantity."""

    def __init__(self) -> None:
        self.value: Decimal | None = None
        self.error: MeterError | None = None
        self.updates = 0  # live messages since the last poll (not retained ones: see the module)
        self.idle_polls = 0  # polls since the last live message, also those without the broker


class MqttSource:
    """Reads a meter's values from MQTT topics (see the module docstring)."""

    def __init__(
        self, config: MqttSourceConfig, timeout_s: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.config = config
        self.timeout_s = timeout_s
        self.clock = clock
        self._cond = threading.Condition()
        self._latest = {name: _Latest() for name in QUANTITIES}
        self._client: Any = None
        self._connected = False
        self._subscribed = False
        self._refused: str | None = None  # the broker's reason when it refused the last connect

    @property
    def where(self) -> str:
        return f"MQTT meter at {self.config.host}:{self.config.port}"

    # ---------------------------------------------------------------- connection

    def _connect(self) -> None:
        if self._client is not None:
            return
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id or f"peerwatt-meter-{id(self):x}",
            clean_session=True,
        )
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 10)
        try:
            client.connect(self.config.host, self.config.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise MeterConnectionError(
                f"{self.where}: cannot connect to the broker ({getattr(exc, 'strerror', None) or exc}): "
                "check its address and port"
            ) from None
        self._client = client
        client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._connected = not reason_code.is_failure
            self._refused = str(reason_code).lower() if reason_code.is_failure else None
            self._cond.notify_all()
        if reason_code.is_failure:
            return
        topics = sorted({q.topic for q in self.config.quantities.values()})
        client.subscribe([(topic, 0) for topic in topics])
        with self._cond:
            self._subscribed = True

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            self._connected = False

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = bytes(message.payload)[: MAX_PAYLOAD + 1]
        with self._cond:
            for name, quantity in self.config.quantities.items():
                if quantity.topic != message.topic:
                    continue
                latest = self._latest[name]
                if not message.retain:  # a retained one is the broker's copy, of unknown age
                    latest.updates += 1
                if len(payload) > MAX_PAYLOAD:
                    latest.value, latest.error = None, MeterFramingError(f"payload over {MAX_PAYLOAD} bytes")
                    continue
                try:
                    latest.value, latest.error = extract(payload, quantity.path), None
                except MeterError as exc:
                    latest.value, latest.error = None, exc
            self._cond.notify_all()

    # ---------------------------------------------------------------- public

    def read(self) -> MeterSample:
        """The newest value of each quantity (waits up to ``timeout_s`` for the first ones)."""
        self._connect()
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while not self._connected or any(
                v.value is None and v.error is None for v in self._latest.values()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            for latest in self._latest.values():  # every poll counts, also one without the broker
                if latest.updates:
                    latest.idle_polls, latest.updates = 0, 0
                else:
                    latest.idle_polls += 1
            if not self._connected:
                if self._refused is not None:
                    raise MeterConnectionError(
                        f"{self.where}: the broker refused the connection: {self._refused} (check "
                        "username and password_file in [meter], and the broker's accounts; retrying)"
                    )
                raise MeterConnectionError(
                    f"{self.where}: not connected to the broker (lost or not answering; retrying)",
                    closed_by_peer=True,
                )
            values: dict[str, Decimal] = {}
            stale: list[str] = []
            never: list[str] = []
            for name, latest in self._latest.items():
                topic = self.config.quantities[name].topic
                if latest.value is None and latest.error is None:
                    never.append(topic)
                elif latest.idle_polls >= self.config.stale_polls:
                    stale.append(topic)
            if never:
                raise MeterTimeout(f"{self.where}: no message yet on {', '.join(sorted(set(never)))}")
            if stale:
                raise MeterTimeout(
                    f"{self.where}: no update on {', '.join(sorted(set(stale)))} for "
                    f"{self.config.stale_polls} polls (stale)"
                )
            for name, latest in self._latest.items():
                if latest.error is not None:
                    topic = self.config.quantities[name].topic
                    error = type(latest.error)
                    message = f"{self.where}: {name} on {topic}: {latest.error}"
                    if error is MeterValueUnavailable:
                        raise MeterValueUnavailable(message, (name,))
                    raise error(message)
                assert latest.value is not None
                values[name] = latest.value
        scaled = {}
        for name, value in values.items():
            quantity = self.config.quantities[name]
            factor = (POWER_UNITS if name == "power_w" else ENERGY_UNITS)[quantity.unit]
            number = value * factor * (-1 if quantity.invert else 1)
            if name != "power_w" and number < 0:
                raise MeterValueUnavailable(f"{self.where}: {name} is negative ({number})", (name,))
            wrong = None if name == "power_w" else counter_problem(number)
            if wrong is not None:
                raise MeterValueUnavailable(f"{self.where}: {name} is {number:.4E} Wh: {wrong}", (name,))
            scaled[name] = int(number.to_integral_value(rounding=ROUND_HALF_EVEN))
        return MeterSample(
            time=int(self.clock()),
            power_w=scaled["power_w"],
            import_wh=scaled["import_wh"],
            export_wh=scaled["export_wh"],
            voltage_v=(),
            current_a=(),
            phase_power_w=(),
            frequency_hz=None,
            serial=self.config.serial,
            profile=PROFILE_NAME,
            unit_id=0,
        )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._cond:
            self._connected = self._subscribed = False
            self._refused = None
            self._latest = {name: _Latest() for name in QUANTITIES}

    def __enter__(self) -> MqttSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["MqttSource", "MqttSourceConfig", "MqttQuantity", "extract", "PROFILE_NAME"]
