"""`peerwatt node run` / `node status` as processes: the broker identity a node starts with, and
what `node status` says (and exits with) when the node is not running (QA pass with Mosquitto).

Mosquitto takes a client certificate's CN as the account and the client id
(``use_identity_as_username``, ``use_username_as_clientid``): a node given another validator's
certificate started without a word, then it and that validator pushed each other off the
broker every second and every publication was refused (Not authorized).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from peerwatt.ports import free_port
from tests.support.cli import peerwatt
from tests.support.http_peer import HttpPeer, send_body

FLAGS = [
    "--community", "oak-street", "--interval", "300", "--feed-in-price", "0.08", "--retail-price", "0.30",
    "--timezone", "UTC", "--broker-host", "127.0.0.1", "--validators", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def community(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("community") / "oak"
    made = peerwatt("community", "init", *FLAGS, "--out", str(out), stdin="")
    assert made.returncode == 0, made.stderr
    for i in range(1, 5):  # each node's store, so that a node that is not refused starts
        folder = out / f"validator-{i}"
        data = str(folder / "node-data")
        made = peerwatt("node", "init", "--genesis", str(folder / "genesis.toml"), "--data", data)
        assert made.returncode == 0, made.stderr
    return out


def _kid(folder: Path) -> str:
    return re.search(r'client_id = "node-([0-9a-f]{32})"', (folder / "node.toml").read_text()).group(1)


def _node_toml(folder: Path, name: str, **replace: str) -> Path:
    """A copy of the folder's node.toml, broker and API on free ports (nothing listens on the
    broker's), lines replaced."""
    text = (folder / "node.toml").read_text()
    text = re.sub(r'url = "mqtts://[^"]+"', f'url = "mqtts://127.0.0.1:{free_port()}"', text)
    text = re.sub(r'(?m)^http = "[^"]*"', f'http = "127.0.0.1:{free_port()}"', text)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


def _start(config: Path) -> subprocess.CompletedProcess:
    """`node run`; a node that starts (the old behaviour) is stopped after its start line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "node", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_node_with_another_validators_certificate_refuses_to_start(community):
    """Case A of the QA pass: validator-3's key with validator-4's certificate and key."""
    v3, v4 = community / "validator-3", community / "validator-4"
    (v3 / "v4.crt").write_bytes((v4 / "node-client.crt").read_bytes())
    (v3 / "v4.key").write_bytes((v4 / "node-client.key").read_bytes())
    (v3 / "v4.key").chmod(0o600)
    swap = {'"node-client.crt"': '"v4.crt"', '"node-client.key"': '"v4.key"'}
    config = _node_toml(v3, "v4cert.toml", **swap)
    r = _start(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: {config} [broker]: cert_file {v3 / 'v4.crt'} is the certificate of ")
    assert f"node-{_kid(v4)}" in line and f"node-{_kid(v3)}" in line and "validator.key" in line


def test_a_node_whose_certificate_and_key_do_not_match_says_which(community):
    v3, v4 = community / "validator-3", community / "validator-4"
    (v3 / "other.crt").write_bytes((v4 / "node-client.crt").read_bytes())
    config = _node_toml(v3, "mixed.toml", **{'"node-client.crt"': '"other.crt"'})
    r = _start(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    assert f"key_file {v3 / 'node-client.key'} is not the key of cert_file {v3 / 'other.crt'}" in line


def test_an_observer_with_a_meters_or_validators_certificate_refuses_to_start(community):
    v2 = community / "validator-2"
    config = _node_toml(v2, "observer.toml", **{'role = "validator"': 'role = "observer"'})
    config.write_text(re.sub(r"(?m)^key = .*$", "", config.read_text()))
    r = _start(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"node-{_kid(v2)}" in r.stderr and "observer" in r.stderr


def test_a_client_id_other_than_the_certificates_account_is_named_at_start(community):
    v1 = community / "validator-1"
    kid = _kid(v1)
    config = _node_toml(v1, "own.toml", **{f'client_id = "node-{kid}"': 'client_id = "my-node"'})
    r = _start(config)
    assert r.returncode == 0, (r.returncode, r.stderr)
    notes = [line for line in r.stderr.splitlines() if "client_id" in line]
    assert notes == [
        f'note: {config}: client_id "my-node" is not used: the broker takes the account of the '
        f"certificate, node-{kid}, as the client id"
    ]
    # the node.toml `community init` wrote (client_id = the certificate's account) starts with no note
    r = _start(_node_toml(v1, "same.toml"))
    assert r.returncode == 0 and "client_id" not in r.stderr, r.stderr


def test_node_status_of_a_node_not_running_exits_3(community):
    config = _node_toml(community / "validator-1", "status.toml")
    r = peerwatt("node", "status", "-c", str(config))
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "node not running (no answer at http://127.0.0.1:" in r.stdout + r.stderr
    assert "store height 0" in r.stdout + r.stderr


def test_governance_with_another_validators_operator_certificate_is_refused(community):
    """Left by the pass above: `gov propose`, `gov vote`, `member admit` publish with operator.toml's
    certificate; another validator's made the broker log this command in as that operator (and
    push it off) without a word. Refused in one line before anything is sent."""
    mine, theirs = community / "validator-1", community / "validator-2"
    text = (
        (mine / "operator.toml")
        .read_text()
        .replace('cert_file = "operator-client.crt"', f'cert_file = "{theirs / "operator-client.crt"}"')
        .replace('key_file = "operator-client.key"', f'key_file = "{theirs / "operator-client.key"}"')
    )
    (mine / "operator-wrong.toml").write_text(text)
    r = peerwatt(
        "gov", "propose", "-c", str(mine / "node.toml"),
        "--operator-config", str(mine / "operator-wrong.toml"),
        "--action", "set_param", "--arg", "name=retail_price", "--arg", "value=310000", "--wait", "1",
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"operator-{_kid(theirs)}" in lines[0] and "push each other off" in lines[0], r.stderr


def test_a_dashboard_with_a_nodes_certificate_is_refused(community, tmp_path):
    """The dashboard reads the agents' status with its own broker account (`dashboard`); given a
    validator's node certificate, the broker would log it in as that node and push the node off."""
    v1 = community / "validator-1"
    config = tmp_path / "dashboard.toml"
    config.write_text(
        f'data = "{v1 / "node-data"}"\ninstance = "{tmp_path / "inst"}"\n[broker]\n'
        f'url = "mqtts://127.0.0.1:{free_port()}"\nca_file = "{v1 / "community-ca.crt"}"\n'
        f'cert_file = "{v1 / "node-client.crt"}"\nkey_file = "{v1 / "node-client.key"}"\n'
    )
    r = peerwatt("dashboard", "-c", str(config), timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"node-{_kid(v1)}" in lines[0] and "push each other off" in lines[0], r.stderr


def _node_status_answered(config: Path, status: int, body: bytes):
    """`peerwatt node status` against a stand-in for the node's API at ``config``'s http address
    that answers every GET with ``status`` and ``body``."""
    port = int(re.search(r'(?m)^http = "127\.0\.0\.1:(\d+)"', config.read_text()).group(1))
    with HttpPeer(lambda handler: send_body(handler, body, status), port):
        return port, peerwatt("node", "status", "-c", str(config))


def test_node_status_of_a_busy_node_says_it_runs_and_exits_4(community):
    """Found in a review: with its 64 connections taken, a running node answers 503, and `node
    status` said `node not running` (exit 3), so monitoring restarted a running node."""
    port, r = _node_status_answered(_node_toml(community / "validator-1", "busy.toml"), 503, b"")
    assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
    assert f"node busy (HTTP 503 at http://127.0.0.1:{port}/v1/status" in r.stdout + r.stderr


def test_node_status_prints_every_field_of_the_status(community):
    """Found in a docs walk-through: `node status` left out store_error and quarantined, which
    docs/operations.md ("Full disk", "Quarantined messages") sends operators to."""
    body = json.dumps({"height": 7, "quarantined": 2, "store_error": "disk full", "stalled": None}).encode()
    _, r = _node_status_answered(_node_toml(community / "validator-1", "fields.toml"), 200, body)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert {"height: 7", "quarantined: 2", "store_error: disk full", "stalled: no"} <= set(lines), lines
