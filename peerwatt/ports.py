"""Free TCP ports for servers that a child process binds later (the demo's broker, nodes and
dashboard, and the tests' and benchmarks' processes).
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LISTEN_PORTS_FROM = 20000  # below the usual ephemeral range (32768-60999), above common services
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now, for a server that a child process binds later.

    Picked at random below the kernel's ephemeral port range, so no outgoing connection (which
    takes its local port from that range) can grab it between this call and the bind; and never
    the same port twice in one process. Falls back to the kernel's pick when no such range is left.
    """
    high = _ephemeral_range()[0] - 1
    rng = random.SystemRandom()
    tries = 200 if high > _LISTEN_PORTS_FROM else 0
    candidates = [rng.randint(_LISTEN_PORTS_FROM, high) for _ in range(tries)]
    with _handed_out_lock:
        for port in [*candidates, 0]:  # 0: the kernel's pick, the last resort
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
                port = int(probe.getsockname()[1])
            _handed_out.add(port)
            return port
    raise OSError(f"no free TCP port on {host}")
