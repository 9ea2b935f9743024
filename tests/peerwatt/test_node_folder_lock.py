"""`peerwatt node run` and `peerwatt node erase` hold the node's data folder while they run (an
flock on node.lock in it): `node erase` refuses a folder a running node holds, and `node run` one
`node erase` holds, each with one line naming the folder and the holder. A node that crashed
(SIGKILL) leaves no stale lock. As real processes, with no broker listening (a node starts
anyway and retries it in the background)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerwatt.commands.node import LOCK_FILE, holding_data_folder
from peerwatt.ports import free_port
from tests.support.cli import peerwatt

FLAGS = [
    "--community", "oak-street", "--interval", "300", "--feed-in-price", "0.08", "--retail-price", "0.30",
    "--timezone", "UTC", "--broker-host", "127.0.0.1", "--validators", "1",
]  # fmt: skip


@pytest.fixture
def validator(tmp_path) -> Path:
    """A one-validator community's validator folder, its store made, node.toml on free ports."""
    out = tmp_path / "oak"
    made = peerwatt("community", "init", *FLAGS, "--out", str(out), stdin="")
    assert made.returncode == 0, made.stderr
    folder = out / "validator-1"
    made = peerwatt(
        "node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "node-data")
    )
    assert made.returncode == 0, made.stderr
    config = folder / "node.toml"
    text = re.sub(r'url = "mqtts://[^"]+"', f'url = "mqtts://127.0.0.1:{free_port()}"', config.read_text())
    config.write_text(re.sub(r'(?m)^http = "[^"]*"', f'http = "127.0.0.1:{free_port()}"', text))
    return folder


def erase(data: Path) -> subprocess.CompletedProcess:
    return peerwatt("node", "erase", "--data", str(data))


def test_node_erase_refuses_the_folder_of_a_running_node_and_a_crashed_one_leaves_no_lock(validator):
    data = validator / "node-data"
    log = (validator / "node.log").open("w")
    node = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "node", "run", "-c", str(validator / "node.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "of oak-street at height" not in (validator / "node.log").read_text():
            assert node.poll() is None, (validator / "node.log").read_text()
            assert time.monotonic() < deadline, (validator / "node.log").read_text()
            time.sleep(0.1)
        refused = erase(data)
        assert refused.returncode != 0 and refused.stdout == ""
        assert refused.stderr.strip().splitlines() == [
            f"error: {data} is in use by `peerwatt node run` (pid {node.pid}): stop it first"
            " (one process writes a data folder)"
        ]
    finally:
        node.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
        node.wait(timeout=30)
        log.close()
    assert (data / LOCK_FILE).exists()  # left behind, but nothing holds it
    done = erase(data)
    assert done.returncode == 0 and done.stdout.startswith("erased 0 payload(s)"), done.stderr
    assert not (data / LOCK_FILE).exists()


def test_node_run_refuses_a_folder_node_erase_holds(validator):
    data = validator / "node-data"
    with holding_data_folder(data, "peerwatt node erase"):
        refused = peerwatt("node", "run", "-c", str(validator / "node.toml"), timeout=60)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"error: {data} is in use by `peerwatt node erase` (pid {os.getpid()}): stop it first"
        " (one process writes a data folder)"
    ]
    assert sorted(os.listdir(data)) == ["ledger.sqlite"]  # no mempool made; the lock file gone
