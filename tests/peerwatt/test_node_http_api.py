"""The node's HTTP API (peerwatt.node.http_api) against hostile requests: query values out of
range, slow, many or vanishing clients."""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest

from chain.canonical import MAX_SAFE_INTEGER
from peerwatt.node.http_api import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, READ_DEADLINE_S, NodeHttpApi
from tests.support.market_ledger import closed_market_data


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    api = NodeHttpApi(closed_market_data(tmp_path_factory.mktemp("node")), dict, "127.0.0.1", 0)
    yield api
    api.server.server_close()


def _range(name: str, lo: int = 0) -> str:
    return f"{name} must be a whole number {lo}..{MAX_SAFE_INTEGER}"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/v1/blocks?from=99999999999999999999", _range("from")),
        ("/v1/blocks?from=" + "9" * 5000, _range("from")),
        ("/v1/blocks?from=" + "0" * 5000 + "1&limit=" + "9" * 5000, _range("limit", 1)),
        (f"/v1/blocks?from={MAX_SAFE_INTEGER + 1}", _range("from")),
        ("/v1/blocks?from=-5", _range("from")),
        ("/v1/blocks?from=1_0", _range("from")),
        ("/v1/blocks?from=%201%20", _range("from")),
        ("/v1/blocks?from=%D9%A1", _range("from")),  # ARABIC-INDIC DIGIT ONE: int() takes it
        ("/v1/blocks?from=0x10", _range("from")),
        ("/v1/blocks?limit=0", _range("limit", 1)),
        ("/v1/proof?height=99999999999999999999&index=0", _range("height")),
        ("/v1/proof?height=1&index=99999999999999999999", _range("index")),
        ("/v1/proof?height=1&index=-1", _range("index")),
        ("/v1/proof?height=1", "index is missing"),
        ("/v1/proof?index=0", "height is missing"),
    ],
)
def test_a_query_value_out_of_range_is_a_400_naming_it(api, path, error):
    assert api.handle(path) == (400, {"error": f"bad request: {error}"})


def test_values_at_the_bounds_are_served(api):
    assert api.handle(f"/v1/blocks?from={MAX_SAFE_INTEGER}&limit={MAX_SAFE_INTEGER}") == (200, {"blocks": []})
    assert api.handle(f"/v1/proof?height={MAX_SAFE_INTEGER}&index={MAX_SAFE_INTEGER}")[0] == 404
    code, body = api.handle("/v1/blocks?from=0001&limit=2")
    assert code == 200 and [b["header"]["height"] for b in body["blocks"]] == [1, 2]
    code, body = api.handle("/v1/proof?height=1&index=0")
    assert code == 200 and body["index"] == 0


# -- connections on loopback: bounded in number and in time, a gone client costs no traceback -------


@contextmanager
def _serving(tmp_path, status=dict):
    api = NodeHttpApi(tmp_path, status, "127.0.0.1", 0)  # /v1/status reads no store
    api.start()
    try:
        yield api.server.server_address[:2]
    finally:
        api.stop()


def _wait_for(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _handler_threads() -> int:
    return sum(t.name.endswith("(process_request_thread)") for t in threading.enumerate())


def _from(i: int) -> tuple[str, int]:
    """The i-th loopback source address (Linux answers on all of 127.0.0.0/8)."""
    return (f"127.0.{i // 250}.{2 + i % 250}", 0)


def _status_line(address, source=None) -> bytes:
    with socket.create_connection(address, timeout=5, source_address=source) as s:
        s.sendall(b"GET /v1/status HTTP/1.0\r\n\r\n")
        return s.makefile("rb").readline()


def test_a_request_trickling_in_is_cut_at_the_read_deadline(tmp_path):
    with _serving(tmp_path) as address:
        start = time.monotonic()
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(b"GET /v1/status HTTP/1.0\r\n")
            closed = False
            while not closed and time.monotonic() - start < READ_DEADLINE_S + 5:
                try:
                    s.sendall(b"X")  # a header line that never ends, one byte at a time
                    closed = select.select([s], [], [], 0.2)[0] != [] and s.recv(100) == b""
                except ConnectionError:
                    closed = True
        elapsed_s = time.monotonic() - start
        assert closed and READ_DEADLINE_S <= elapsed_s < READ_DEADLINE_S + 3, elapsed_s
        assert _status_line(address).startswith(b"HTTP/1.0 200")


def test_connections_beyond_the_bound_are_refused_and_held_ones_freed(tmp_path):
    before = _handler_threads()
    with _serving(tmp_path) as address:
        per = MAX_CONNECTIONS_PER_ADDRESS
        held = [
            socket.create_connection(address, timeout=5, source_address=_from(i // per))
            for i in range(MAX_CONNECTIONS)
        ]
        try:
            for s in held:
                s.sendall(b"GET /v1/status HTTP/1.0\r\nHost: x\r\n")  # no end of headers
            # a thread per held connection, and none for the one beyond them
            assert _wait_for(lambda: _handler_threads() >= before + MAX_CONNECTIONS, 3)
            assert _status_line(address).startswith(b"HTTP/1.0 503")
            assert _handler_threads() <= before + MAX_CONNECTIONS
            for s in held:  # each is closed by the server at the read deadline
                s.settimeout(READ_DEADLINE_S + 3)
                assert s.recv(100) == b""
            assert _status_line(address).startswith(b"HTTP/1.0 200")
            assert _wait_for(lambda: _handler_threads() <= before, 3)
        finally:
            for s in held:
                s.close()


def test_one_address_cannot_hold_every_connection(tmp_path):
    """Found in a review: one client holding all 64 connections (reopened within the read deadline)
    made every peer's catch-up from this node a 503; one address now holds at most
    MAX_CONNECTIONS_PER_ADDRESS of them."""
    before = _handler_threads()
    with _serving(tmp_path) as address:
        held = [socket.create_connection(address, timeout=5, source_address=_from(0)) for _ in range(64)]
        try:
            for s in held:
                s.sendall(b"G")
            assert _status_line(address, _from(0)).startswith(b"HTTP/1.0 503")
            assert _status_line(address, _from(1)).startswith(b"HTTP/1.0 200")  # another peer
        finally:
            for s in held:
                s.close()
        assert _wait_for(lambda: _handler_threads() <= before, READ_DEADLINE_S + 3)


def test_clients_that_hang_up_cost_no_traceback(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="peerwatt")
    before = _handler_threads()
    big = {"pad": "x" * 4_000_000}  # more than the socket buffers hold: the write meets the hang-up
    with _serving(tmp_path, lambda: big) as address:
        for _ in range(5):
            s = socket.create_connection(address, timeout=5)
            s.sendall(b"GET /v1/status HTTP/1.0\r\n\r\n")
            assert s.recv(12) == b"HTTP/1.0 200"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            s.close()
        assert _wait_for(lambda: _handler_threads() <= before, 5)
    assert "Traceback" not in capfd.readouterr().err
    for record in caplog.records:
        assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    assert 1 <= len(caplog.records) <= 5  # a line at DEBUG at most per client


def _answer(address, request: bytes) -> bytes:
    with socket.create_connection(address, timeout=READ_DEADLINE_S + 3) as s:
        s.sendall(request)
        return b"".join(iter(lambda: s.recv(65536), b""))


@pytest.mark.parametrize(
    "request_line",
    [b"GET  HTTP/1.0", b"GET \t HTTP/1.0", b"GET /v1/status", b"POST /v1/status"],  # no path, HTTP/0.9
)
def test_a_request_line_without_path_or_version_is_a_400_with_a_status_line(tmp_path, request_line):
    with _serving(tmp_path) as address:
        answer = _answer(address, request_line + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400 "), answer[:80]
