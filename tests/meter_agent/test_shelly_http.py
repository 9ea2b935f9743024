"""Shelly Pro 3EM over its HTTP RPC API: the reader against the simulator (a real http.server on
loopback) and a hand-written device, every fault as a typed MeterError, and the CLI commands."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meter_agent.household import Household
from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterFramingError,
    MeterTimeout,
    MeterValueUnavailable,
)
from meter_agent.shelly_http import ShellyHttpReader, ShellyRpcError
from meter_agent.shelly_simulator import ShellySimulator
from tests.support.sim_meter import sim_meter_process

from .conftest import MIDDAY


@pytest.fixture
def shelly():
    started: list[ShellySimulator] = []

    def start(**options) -> ShellySimulator:
        options.setdefault("start_time", MIDDAY)
        sim = ShellySimulator(
            options.pop("household", Household(pv_kwp=5.0, annual_kwh=3500.0, seed=7)), **options
        )
        started.append(sim.start())
        sim.clock.pause()
        return sim

    yield start
    for sim in started:
        sim.stop()


class FixedDevice:
    """A loopback HTTP device answering fixed JSON per path (written by hand from Shelly's Gen2
    API field names, not by our simulator)."""

    def __init__(self, answers: dict[str, object]) -> None:
        device = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                device.paths.append(self.path)
                body = json.dumps(answers.get(self.path.split("?")[0], {})).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_hand_written_device_answers_are_read_in_wh_with_the_mac_as_serial():
    device = FixedDevice(
        {
            "/rpc/Shelly.GetDeviceInfo": {
                "id": "shellypro3em-c8f09e8a1b2c",
                "mac": "C8F09E8A1B2C",
                "model": "SPEM-003CEBEU",
                "gen": 2,
            },
            "/rpc/EM.GetStatus": {
                "id": 0,
                "a_voltage": 231.2,
                "a_current": 4.1,
                "a_act_power": -812.4,
                "b_voltage": 230.0,
                "b_current": 0.5,
                "b_act_power": 100.0,
                "c_voltage": 229.5,
                "c_current": 0.2,
                "c_act_power": 40.2,
                "a_freq": 50.01,
                "total_act_power": -672.2,
            },
            "/rpc/EMData.GetStatus": {"id": 0, "total_act": 1234567.45, "total_act_ret": 89012.55},
        }
    )
    try:
        sample = ShellyHttpReader("127.0.0.1", device.port, timeout_s=2).read()
    finally:
        device.close()
    assert sample.power_w == -672
    assert sample.import_wh == 1_234_567 and sample.export_wh == 89_013  # half-even on exact decimals
    assert sample.serial == "C8F09E8A1B2C" and sample.profile == "shelly-pro-3em-http"
    assert sample.voltage_v == (231.2, 230.0, 229.5) and sample.frequency_hz == 50.01
    assert device.paths == [
        "/rpc/Shelly.GetDeviceInfo",
        "/rpc/EM.GetStatus?id=0",
        "/rpc/EMData.GetStatus?id=0",
    ]


def test_another_shelly_model_is_refused():
    device = FixedDevice({"/rpc/Shelly.GetDeviceInfo": {"mac": "C8F09E8A1B2C", "model": "SNSW-001X16EU"}})
    try:
        with pytest.raises(MeterValueUnavailable, match="not a Shelly Pro 3EM"):
            ShellyHttpReader("127.0.0.1", device.port, timeout_s=2, retries=0).read()
    finally:
        device.close()


def test_reader_gets_the_simulators_truth(shelly):
    sim = shelly()
    reader = ShellyHttpReader("127.0.0.1", sim.port, timeout_s=2)
    sample = reader.read()
    truth = sim.truth()
    assert sample.import_wh == pytest.approx(truth["import_wh"], abs=1)
    assert sample.export_wh == pytest.approx(truth["export_wh"], abs=1)
    assert sample.power_w == pytest.approx(truth["power_w"], abs=1)
    assert sample.serial == sim.mac == truth["serial"]
    assert len(sample.voltage_v) == 3 and len(sample.phase_power_w) == 3
    sim.clock.advance(900)
    later = reader.read()
    assert later.export_wh > sample.export_wh  # midday: the household exports


def test_simulator_speaks_json_rpc_over_post_too(shelly):
    import http.client

    sim = shelly()
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=2)
    try:
        conn.request(
            "POST", "/rpc", body=json.dumps({"id": 7, "method": "EMData.GetStatus", "params": {"id": 0}})
        )
        answer = json.loads(conn.getresponse().read())
        conn.request("GET", "/rpc/EM.GetStatus?id=1")
        missing = conn.getresponse()
        missing.read()
    finally:
        conn.close()
    assert answer["id"] == 7 and answer["src"] == sim.device_id and answer["result"]["total_act"] > 0
    assert missing.status == 404


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("timeout", MeterTimeout),
        ("error", ShellyRpcError),
        ("auth", ShellyRpcError),
        ("disconnect", MeterConnectionError),
        ("garbage", MeterFramingError),
        ("missing", MeterValueUnavailable),
    ],
)
def test_faults_are_typed_meter_errors_and_recover(shelly, fault, error):
    sim = shelly()
    reader = ShellyHttpReader("127.0.0.1", sim.port, timeout_s=0.5, retries=0)
    reader.read()
    sim.inject(fault)
    with pytest.raises(error) as caught:
        reader.read()
    if fault == "auth":
        assert "authentication" in str(caught.value)
    sim.clear_faults()
    assert reader.read().serial == sim.mac


def test_swap_meter_changes_the_mac_and_restarts_the_counters(shelly):
    sim = shelly()
    reader = ShellyHttpReader("127.0.0.1", sim.port, timeout_s=2)
    before = reader.read()
    sim.swap_meter()
    after = reader.read()
    assert after.serial != before.serial and after.import_wh == 0


def test_nothing_listening_is_a_connection_error():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    with pytest.raises(MeterConnectionError, match="cannot connect"):
        ShellyHttpReader("127.0.0.1", port, timeout_s=0.5, retries=0).read()


def test_cli_sim_meter_shelly_http_and_meter_read():
    from tests.support.cli import peerwatt

    with sim_meter_process("--source", "shelly-http", "--seed", "5") as (proc, line, port):
        match = re.search(r", meter (\S+);", line)
        assert match, line
        args = ("--source", "shelly-http", "--host", "127.0.0.1", "--port", str(port), "--json")
        out = peerwatt("meter", "read", *args)
        assert out.returncode == 0, out.stderr
        reading = json.loads(out.stdout)
        assert reading["serial"] == match.group(1) and reading["import_wh"] > 0
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "sim-meter: stopped" in stdout and stderr == ""


def test_cli_meter_read_shelly_http_with_nothing_there_is_one_line():
    from tests.support.cli import peerwatt

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    out = peerwatt("meter", "read", "--source", "shelly-http", "--host", "127.0.0.1", "--port", str(port))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot connect" in out.stderr


def test_a_client_that_gave_up_is_no_traceback(shelly, capfd):
    """The simulator answered a request held by a "timeout" fault after the reader had given up,
    and the server thread printed a BrokenPipeError traceback (seen in a `make test` log)."""
    sim = shelly()
    reader = ShellyHttpReader("127.0.0.1", sim.port, timeout_s=0.3, retries=0)
    sim.inject("timeout")
    with pytest.raises(MeterTimeout):
        reader.read()
    sim.clear_faults()  # the held answer goes out now, to a closed connection
    assert ShellyHttpReader("127.0.0.1", sim.port, timeout_s=5).read().serial == sim.mac
    time.sleep(0.3)  # the held request's thread writes its answer
    assert "BrokenPipeError" not in capfd.readouterr().err
