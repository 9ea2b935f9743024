"""A community of `peerwatt node run` processes on one machine (integration tests, benchmarks)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from chain.engine import Ledger
from chain.keys import save_private_key
from chain.localnet import LocalCommunity

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


class NodeProcess:
    """One `peerwatt node run` subprocess with its config, store and log."""

    def __init__(self, index: int, workdir: Path, role: str, broker_url: str, peers: list[str]) -> None:
        self.index = index
        self.dir = workdir / f"node-{index}"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "node.toml"
        self.log_path = self.dir / "node.log"
        self.role = role
        self.broker_url = broker_url
        self.peers = peers
        self.proc: subprocess.Popen | None = None

    def write_config(self, block_s: float) -> None:
        peers = ", ".join(f'"{p}"' for p in self.peers)
        self.config.write_text(
            f'data = "data"\nrole = "{self.role}"\nkey = "validator.key"\nhttp = "127.0.0.1:{self.port}"\n'
            f'peers = [{peers}]\nblock_s = {block_s}\nclient_id = "node-{self.index}"\n'
            f'[broker]\nurl = "{self.broker_url}"\n'
        )

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peerwatt.cli", "node", "run", "-c", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode if self.proc else 0

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.api + "/v1/status", timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None


def launch_community(c: LocalCommunity, workdir: Path, broker_url: str, app_factory, block_s: float = 0.2):
    """Create stores and configs for every validator (node 0 is the sequencer) and start them."""
    nodes = []
    for i in range(len(c.validators)):
        nodes.append(NodeProcess(i, workdir, "sequencer" if i == 0 else "validator", broker_url, []))
    for node in nodes:
        node.peers = [other.api for other in nodes if other is not node]
        node.dir.mkdir(parents=True)
        Ledger.create(node.dir / "data", c.genesis, app_factory()).close()
        save_private_key(c.validators[node.index].key, node.dir / "validator.key")
        node.write_config(block_s)
        node.start()
    return nodes


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (bounded); AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
