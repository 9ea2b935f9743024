"""The agent's Prometheus metrics server (peerwatt.metrics.serve_metrics) is bounded, and
``name[]`` filtering answers the metrics named. Found in a QA pass: 300 connections that sent
only ``GET /metrics HTTP/1.1`` were each held on a thread of prometheus_client's
``start_http_server`` and still there 20 s later; ``?name[]=peerwatt_agent_power_watts`` got an
empty answer (the registry knew no names)."""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import start_http_server

from peerwatt.metrics import registry_for, serve_metrics
from tests.peerwatt.test_node_http_api import _handler_threads, _wait_for

STATUS = {
    "outbox": 0, "meter_ok": False, "broker_connected": True, "state_error": None, "power_w": -431,
    "meter_read_errors": 3, "totals": {"sold_wh": 2500, "bought_wh": 1500, "earnings": -1250000,
               "sold_pending_wh": 0, "bought_pending_wh": 72},
}  # fmt: skip


def _get(address, path: str) -> str:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=5) as answer:
        return answer.read().decode()


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_name_filter_on_prometheus_clients_server_answers_the_metric_named():
    """As the agent serves its metrics before it uses serve_metrics: the registry is the fix."""
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry_for("agent", lambda: STATUS))
    try:
        text = _get(server.server_address, "/metrics?name[]=peerwatt_agent_power_watts")
    finally:
        server.shutdown()
        server.server_close()
    assert _samples(text) == ["peerwatt_agent_power_watts -431.0"], text


@pytest.fixture
def metrics():
    servers = []

    def start(status=lambda: STATUS, **bounds):
        server = serve_metrics(0, "127.0.0.1", registry_for("agent", status), **bounds)
        servers.append(server)
        return server.server_address[:2]

    yield start
    for server in servers:
        server.stop()


def test_name_filter_takes_family_and_sample_names(metrics):
    address = metrics()
    text = _get(
        address, "/metrics?name[]=peerwatt_agent_meter_read_errors&name[]=peerwatt_agent_outbox_depth"
    )
    assert _samples(text)[:2] == [
        "peerwatt_agent_outbox_depth 0.0",
        "peerwatt_agent_meter_read_errors_total 3.0",
    ]
    assert _samples(_get(address, "/?name[]=peerwatt_agent_meter_read_errors_total")) == [
        "peerwatt_agent_meter_read_errors_total 3.0"
    ]
    assert _samples(_get(address, "/metrics?name[]=no_such_metric")) == []
    whole = _get(address, "/metrics")
    assert "peerwatt_agent_power_watts -431.0" in whole and "peerwatt_agent_p2p_sold_wh 2500.0" in whole
    assert "peerwatt_agent_p2p_bought_pending_wh 72.0" in whole


def _recv_all(s: socket.socket) -> bytes:
    return b"".join(iter(lambda: s.recv(65536), b""))


def test_requests_that_never_finish_are_bounded_in_number_and_time(metrics, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="peerwatt")
    before = _handler_threads()
    address = metrics(read_deadline_s=1.0, max_connections=4)
    start = time.monotonic()
    held = [socket.create_connection(address, timeout=5) for _ in range(30)]
    try:
        for s in held:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the end of the headers
        assert _wait_for(lambda: _handler_threads() >= before + 4, 3)
        assert _handler_threads() <= before + 4  # a thread for each of 4, none for the others
        answers = [_recv_all(s) for s in held]
        assert answers[:4] == [b""] * 4  # closed at the read deadline
        assert all(a.startswith(b"HTTP/1.0 503 ") for a in answers[4:]), answers[4]
        assert 1.0 <= time.monotonic() - start < 4
        assert _wait_for(lambda: _handler_threads() <= before, 3)
        assert "peerwatt_agent_power_watts -431.0" in _get(address, "/metrics")  # served again
    finally:
        for s in held:
            s.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one line for the episode
    assert "more than 4 connections at once" in warnings[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err
    for record in caplog.records:
        assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()


def test_each_episode_is_logged_once(metrics, caplog):
    caplog.set_level(logging.WARNING, logger="peerwatt")
    before = _handler_threads()
    address = metrics(read_deadline_s=0.3)
    for _ in range(2):  # two episodes, each of three stalled connections
        held = [socket.create_connection(address, timeout=5) for _ in range(3)]
        for s in held:
            s.sendall(b"GET /metr")
        assert [_recv_all(s) for s in held] == [b""] * 3
        for s in held:
            s.close()
        assert _wait_for(lambda: _handler_threads() <= before, 3)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("no complete request within 0.3 s" in m for m in said), said


def test_a_status_that_fails_is_a_500_and_one_line_until_it_works_again(metrics, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="peerwatt")
    broken = [True]

    def status() -> dict:
        if broken[0]:
            raise KeyError("power_w")
        return STATUS

    address = metrics(status=status)
    for attempt in range(7):
        broken[0] = attempt != 3  # works once in between
        if broken[0]:
            with pytest.raises(urllib.error.HTTPError) as caught:
                _get(address, "/metrics")
            caught.value.close()  # it holds the connection
            assert caught.value.code == 500
        else:
            assert "peerwatt_agent_power_watts" in _get(address, "/metrics")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # once before it worked, once after
    assert all("the metrics cannot be collected: KeyError: 'power_w'" in m for m in said), said
    assert "Traceback" not in capfd.readouterr().err
