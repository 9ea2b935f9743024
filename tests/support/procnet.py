"""A community of `peerwatt node run` processes on one machine (integration tests, benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chain.engine import Ledger
from chain.keys import save_private_key
from peerwatt.ports import free_port
from tests.support.localnet import LocalCommunity


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
