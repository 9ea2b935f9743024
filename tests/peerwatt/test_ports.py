"""peerwatt.ports.free_port: ports for servers that child processes bind later."""

from __future__ import annotations

import socket

from peerwatt.ports import _ephemeral_range, free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low_ephemeral, _ = _ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < low_ephemeral for port in ports)  # no outgoing connection can take them
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports[-1]))

