"""A meter publishing to MQTT like a Tasmota device with an SML script, simulated.

Every ``interval_s`` real seconds ``TasmotaPublisher`` publishes a telemetry message to
``tele/<device>/SENSOR`` (Tasmota's topic for sensor telemetry, sent every TelePeriod):
``{"Time": "<local ISO time>", "SML": {"Total_in": <kWh>, "Total_out": <kWh>, "Power_curr":
<W>}}``. The meter name (``SML``) and the variable names are what a Tasmota SML script defines
for itself; these are one common choice, so the matching [meter] paths are ``SML.Total_in``,
``SML.Total_out`` (kWh) and ``SML.Power_curr`` (W). Values come from a ``Household`` on a
``SimClock``, integrated as the Modbus simulator does.

Faults (``inject(kind)`` until ``clear_faults()``): ``silent`` (publish nothing: the reader
goes stale), ``garbage`` (a payload that is not JSON), ``missing`` (``Total_in`` left out).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.sim_counters import SimulatedMeter

FAULT_KINDS = ("silent", "garbage", "missing")


class TasmotaPublisher(SimulatedMeter):
    """Publishes Tasmota-style SML telemetry for a household to an MQTT broker."""

    FAULT_KINDS = FAULT_KINDS

    def __init__(
        self,
        household: Household,
        host: str,
        port: int,
        *,
        device: str = "tasmota_sml",
        interval_s: float = 10.0,
        speed: float = 1.0,
        start_time: float | None = None,
        clock: SimClock | None = None,
        seed: int = 0,
        import_wh: float | None = None,
        export_wh: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.host, self.port = host, port
        self.topic = f"tele/{device}/SENSOR"
        self.interval_s = interval_s
        self._init_meter(household, clock, start_time, speed, seed, import_wh, export_wh)
        self._client = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def start(self) -> TasmotaPublisher:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{self.topic}")
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-tasmota", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def __enter__(self) -> TasmotaPublisher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def describe(self) -> str:
        where = f"{self.host}:{self.port}"
        return f"Tasmota-style SML telemetry every {self.interval_s:g} s on {self.topic} at {where}"

    def payload(self) -> bytes | None:
        """The telemetry message now (faults applied), or None when silent."""
        with self._lock:
            faults = set(self._faults)
            if "silent" in faults:
                return None
            if "garbage" in faults:
                return b"Total_in=?"
            now = self.clock.now()
            self._advance_to(now)
            values: dict[str, float] = {
                "Total_in": round(self._import / 1000, 4),
                "Total_out": round(self._export / 1000, 4),
                "Power_curr": round(self.household.net_power_w(now)),
            }
            if "missing" in faults:
                del values["Total_in"]
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return json.dumps({"Time": stamp, "SML": values}).encode()

    def publish_now(self) -> bool:
        """Publish one message now (QoS 0); False when silent."""
        data = self.payload()
        if data is None or self._client is None:
            return False
        self._client.publish(self.topic, data, qos=0)
        self.published += 1
        return True

    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_send:
                next_send += self.interval_s
                self.publish_now()
            self._stop.wait(min(0.05, max(0.0, next_send - time.monotonic())))
