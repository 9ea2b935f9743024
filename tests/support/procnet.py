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
from dataclasses import dataclass
from pathlib import Path

from chain.engine import Ledger
from chain.keys import save_private_key
from peerwatt.ports import free_port
from tests.support.localnet import LocalCommunity


class NodeProcess:
    """One `peerwatt node run` subprocess with its config, store and log."""

    def __init__(
        self,
        index: int,
        workdir: Path,
        role: str,
        broker_url: str,
        peers: list[str],
        *,
        failover_s: float | None = None,
        code: Path | None = None,
    ) -> None:
        """``failover_s``: written into node.toml (the propose timeout; unset: the default).
        ``code``: another checkout of peerwatt to run (e.g. an older commit, for a benchmark's
        same-run baseline): the process imports it first (PYTHONPATH) and starts in it."""
        self.index = index
        self.dir = workdir / f"node-{index}"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "node.toml"
        self.log_path = self.dir / "node.log"
        self.role = role
        self.broker_url = broker_url
        self.peers = peers
        self.failover_s = failover_s
        self.code = code
        self.proc: subprocess.Popen | None = None

    def write_config(self, block_s: float) -> None:
        peers = ", ".join(f'"{p}"' for p in self.peers)
        self.config.write_text(
            f'data = "data"\nrole = "{self.role}"\nkey = "validator.key"\nhttp = "127.0.0.1:{self.port}"\n'
            f'peers = [{peers}]\nblock_s = {block_s}\nclient_id = "node-{self.index}"\n'
            + ("" if self.failover_s is None else f"failover_s = {self.failover_s}\n")
            + f'[broker]\nurl = "{self.broker_url}"\n'
        )

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peerwatt.cli", "node", "run", "-c", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=code_env(self.code),
            cwd=self.code,
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
                # where it hangs, into its log (the node dumps its threads' stacks on SIGUSR1)
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
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


def code_env(code: Path | None) -> dict[str, str]:
    """The environment of a process that runs the peerwatt checkout ``code`` (None: this one)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def create_store(data_dir: Path, c: LocalCommunity, app_factory, code: Path | None = None) -> None:
    """A node's store from ``c``'s genesis, made by this code or by the checkout ``code`` (whose
    store layout may differ; its app is the one the genesis names)."""
    if code is None:
        Ledger.create(data_dir, c.genesis, app_factory()).close()
        return
    script = (
        "import sys\n"
        "from chain.engine import Ledger, genesis_from_dict_bytes\n"
        "from market.apps import load_app\n"
        "g = genesis_from_dict_bytes(sys.stdin.buffer.read())\n"
        "Ledger.create(sys.argv[1], g, load_app(g.app_name)).close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        input=c.genesis.to_bytes(),
        env=code_env(code),
        cwd=code,
        check=True,
        timeout=60,
    )


def launch_community(
    c: LocalCommunity,
    workdir: Path,
    broker_url: str,
    app_factory,
    block_s: float = 0.2,
    *,
    failover_s: float | None = None,
    code: Path | None = None,
):
    """Create stores and configs for every validator (node 0 is the sequencer) and start them.
    ``failover_s`` goes into every node.toml; ``code``: run another checkout (see NodeProcess)."""
    nodes = []
    for i in range(len(c.validators)):
        role = "sequencer" if i == 0 else "validator"
        nodes.append(NodeProcess(i, workdir, role, broker_url, [], failover_s=failover_s, code=code))
    for node in nodes:
        node.peers = [other.api for other in nodes if other is not node]
        node.dir.mkdir(parents=True)
        create_store(node.dir / "data", c, app_factory, code)
        save_private_key(c.validators[node.index].key, node.dir / "validator.key")
        node.write_config(block_s)
        node.start()
    return nodes


@dataclass
class Failover:
    """What ``kill_proposer`` saw: the dead validator, the live ones, and the first block after
    the kill made by another validator."""

    dead: NodeProcess
    live: list[NodeProcess]
    sequencer: str  # the dead validator's key id
    height_at_kill: int
    failover_height: int
    kill_to_final_s: float
    killed_at: float  # time.monotonic() of the SIGKILL


def kill_proposer(nodes: list[NodeProcess], key_ids: list[str], timeout_s: float = 60.0) -> Failover:
    """SIGKILL the validator that proposes now (``sequencer`` in its peers' status; ``key_ids``
    in node order) and time it until a block made by another validator is final on a live node."""
    sequencer = next(s["sequencer"] for s in (n.status() for n in nodes) if s)
    dead = nodes[key_ids.index(sequencer)]
    live = [n for n in nodes if n is not dead]
    dead.kill()
    killed_at = time.monotonic()
    height_at_kill = max((n.status() or {}).get("height", 0) for n in live)

    def next_final() -> int | None:
        for node in live:
            s = node.status() or {}
            if s.get("height", 0) > height_at_kill and s.get("sequencer") != sequencer:
                return s["height"]
        return None

    height = wait_for(next_final, timeout_s, "a final block after the proposer's death", interval_s=0.02)
    return Failover(dead, live, sequencer, height_at_kill, height, time.monotonic() - killed_at, killed_at)


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (bounded); AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def write_operator_config(folder: Path, broker_url: str, client_id: str = "operator") -> Path:
    """operator.toml in ``folder`` (beside a node.toml), as `peerwatt community init` writes it: the
    broker account `peerwatt member admit|leave` and `peerwatt gov vote -c node.toml` publish with
    (here on a test broker that takes anonymous clients)."""
    path = folder / "operator.toml"
    path.write_text(f'client_id = "{client_id}"\n[broker]\nurl = "{broker_url}"\n')
    return path


def with_founding_members(c: LocalCommunity) -> LocalCommunity:
    """``c`` with its validators' keys also founding members (before its own members), as
    `peerwatt community init` makes a community: the validators vote households in and out."""
    from dataclasses import replace

    from chain.engine import _doc_to_toml_shape
    from chain.genesis import genesis_from_dict

    shape = _doc_to_toml_shape(c.genesis.doc)
    shape["members"] = [{"key": v.sec1_hex, "name": v.name} for v in c.validators] + shape["members"]
    return replace(c, genesis=genesis_from_dict(shape))
