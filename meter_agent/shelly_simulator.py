"""A Shelly Pro 3EM's HTTP RPC API, simulated: a small ``http.server`` on loopback answering
``Shelly.GetDeviceInfo``, ``EM.GetStatus`` and ``EMData.GetStatus`` from a ``Household``.

Requests are served as the device serves them: ``GET /rpc/<Method>?id=0`` answers the result
object itself; ``POST /rpc`` with a JSON-RPC frame ``{"id": 1, "method": ..., "params": {...}}``
answers ``{"id": 1, "src": <device id>, "result": {...}}``. The status objects carry the
field names of Shelly's Gen2 API documentation (EM: ``a_current``, ``a_voltage``,
``a_act_power``, ``a_aprt_power``, ``a_pf``, ``a_freq``, the same for b and c, ``n_current``,
``total_current``, ``total_act_power``, ``total_aprt_power``; EMData: per-phase
``*_total_act_energy`` / ``*_total_act_ret_energy`` and ``total_act`` / ``total_act_ret`` in Wh);
the device info has ``id``, ``mac``, ``model`` (``SPEM-003CEBEU``), ``gen``, ``fw_id``,
``ver``, ``app``, ``auth_en``. Unknown methods get HTTP 404 with a JSON error.

Counters integrate the household's net power as the Modbus simulator does (import and export
only grow); the per-phase counters split them 40/33/27 %. Faults (``inject(kind)`` until
``clear_faults()``): ``timeout`` (answers are held back ~5 s), ``error`` (HTTP 500),
``disconnect`` (the connection is closed without an answer), ``garbage`` (a body that is not
JSON), ``missing`` (the counters read null), ``auth`` (HTTP 401 as with authentication on).
``swap_meter()`` replaces the device: a new MAC, counters from zero.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from meter_agent.clock import SimClock
from meter_agent.household import Household
from meter_agent.sim_counters import SimulatedMeter

FAULT_KINDS = ("timeout", "error", "disconnect", "garbage", "missing", "auth")
PHASE_SHARES = (0.40, 0.33, 0.27)
MODEL = "SPEM-003CEBEU"
HOLD_S = 5.0  # how long a "timeout" fault holds an answer back (bounded)


class ShellySimulator(SimulatedMeter):
    """See the module docstring. Context manager or start/stop."""

    FAULT_KINDS = FAULT_KINDS

    def __init__(
        self,
        household: Household,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        speed: float = 1.0,
        start_time: float | None = None,
        clock: SimClock | None = None,
        seed: int = 0,
        mac: str | None = None,
        import_wh: float | None = None,
        export_wh: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self._init_meter(household, clock, start_time, speed, seed, import_wh, export_wh)
        self._release = threading.Event()
        self.mac = (mac or f"A8032A{seed % 0x1000000:06X}").upper()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ShellySimulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                if not url.path.startswith("/rpc/"):
                    self._answer(404, {"code": 404, "message": f"no handler for {url.path}"})
                    return
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                status, result = simulator.call(url.path[len("/rpc/") :], params)
                self._answer(status, result)

            def do_POST(self) -> None:  # noqa: N802
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                try:
                    frame = json.loads(self.rfile.read(length) or b"{}")
                    method, params = str(frame["method"]), dict(frame.get("params") or {})
                except (ValueError, KeyError, TypeError):
                    self._answer(400, {"code": -103, "message": "invalid JSON-RPC frame"})
                    return
                status, result = simulator.call(method, params)
                if status == 200:
                    result = {"id": frame.get("id"), "src": simulator.device_id, "result": result}
                self._answer(status, result)

            def _answer(self, status: int, payload: object) -> None:
                faults = simulator.faults()
                simulator.requests += 1
                if "timeout" in faults:
                    simulator._release.wait(HOLD_S)
                if "disconnect" in faults:
                    self.close_connection = True
                    return
                if "auth" in faults:
                    status, payload = 401, {"code": 401, "message": "unauthorized"}
                elif "error" in faults:
                    status, payload = 500, {"code": -114, "message": "internal error"}
                body = b"<html>not json" if "garbage" in faults else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # the client gave up (after a "timeout" fault, as a reader does): a device
                    # does not print a traceback for it
                    self.close_connection = True

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def __enter__(self) -> ShellySimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def describe(self) -> str:
        return f"Shelly Pro 3EM RPC on http://{self.host}:{self.port}, meter {self.mac}"

    # ---------------------------------------------------------------- control

    @property
    def device_id(self) -> str:
        return f"shellypro3em-{self.mac.lower()}"

    def faults(self) -> set[str]:
        with self._lock:
            return set(self._faults)

    def _fault_started(self, kind: str) -> None:
        if kind == "timeout":
            self._release.clear()

    def _faults_cleared(self) -> None:
        self._release.set()

    def _serial(self) -> str:
        return self.mac

    def swap_meter(self, mac: str | None = None) -> str:
        """Replace the device: a new MAC, counters from zero."""
        with self._lock:
            self._advance_to(self.clock.now())
            self.mac = (mac or f"{int(self.mac, 16) + 1:012X}").upper()
            self._import = self._export = 0.0
            return self.mac

    # ---------------------------------------------------------------- RPC

    def call(self, method: str, params: dict) -> tuple[int, dict]:
        """(HTTP status, result) of one RPC method."""
        if method == "Shelly.GetDeviceInfo":
            return 200, {
                "name": None,
                "id": self.device_id,
                "mac": self.mac,
                "slot": 0,
                "model": MODEL,
                "gen": 2,
                "fw_id": "20250101-000000/1.4.4-peerwatt-sim",
                "ver": "1.4.4",
                "app": "Pro3EM",
                "auth_en": False,
                "auth_domain": None,
                "profile": "triphase",
            }
        if method in ("EM.GetStatus", "EMData.GetStatus"):
            if str(params.get("id", "0")) != "0":
                return 404, {"code": -105, "message": f"Argument 'id', value {params.get('id')} not found!"}
            with self._lock:
                now = self.clock.now()
                self._advance_to(now)
                power = self.household.net_power_w(now)
                imported, exported = self._import, self._export
                missing = "missing" in self._faults
            if method == "EM.GetStatus":
                return 200, self._em_status(power)
            return 200, self._emdata_status(None if missing else imported, None if missing else exported)
        return 404, {"code": 404, "message": f"No handler for {method}"}

    @staticmethod
    def _em_status(power: float) -> dict:
        status: dict[str, object] = {"id": 0}
        for i, phase in enumerate("abc"):
            phase_power = power * PHASE_SHARES[i]
            voltage = 230.0 + 1.5 * (i - 1)
            status |= {
                f"{phase}_current": round(abs(phase_power) / voltage, 3),
                f"{phase}_voltage": round(voltage, 1),
                f"{phase}_act_power": round(phase_power, 1),
                f"{phase}_aprt_power": round(abs(phase_power), 1),
                f"{phase}_pf": 1.0,
                f"{phase}_freq": 50.0,
            }
        status |= {
            "n_current": None,
            "total_current": round(abs(power) / 230.0, 3),
            "total_act_power": round(power, 3),
            "total_aprt_power": round(abs(power), 3),
            "user_calibrated_phase": [],
        }
        return status

    @staticmethod
    def _emdata_status(imported: float | None, exported: float | None) -> dict:
        status: dict[str, object] = {"id": 0}
        for i, phase in enumerate("abc"):
            share = PHASE_SHARES[i]
            status[f"{phase}_total_act_energy"] = None if imported is None else round(imported * share, 2)
            status[f"{phase}_total_act_ret_energy"] = None if exported is None else round(exported * share, 2)
        status["total_act"] = None if imported is None else round(imported, 2)
        status["total_act_ret"] = None if exported is None else round(exported, 2)
        return status
