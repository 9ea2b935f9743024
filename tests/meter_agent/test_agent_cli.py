"""`peerwatt agent -c agent.toml` and `peerwatt agent status` as real processes (integration)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from chain.keys import public_key_sec1, save_private_key
from peerwatt.metrics import READ_DEADLINE_S
from peerwatt.ports import free_port
from tests.support.localnet import make_community
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration


def write_genesis_and_key(folder, c, meter) -> None:
    """A one-validator community's genesis.toml with this meter enrolled, and its meter.key."""
    (folder / "genesis.toml").write_text(
        f'[community]\nid = "{c.community}"\ntime = {c.genesis.time}\napp = "market"\n'
        f'[[validators]]\nkey = "{c.validators[0].sec1_hex}"\n'
        f'[[members]]\nkey = "{c.members[0].sec1_hex}"\n'
        f'[[meters]]\nkey = "{public_key_sec1(meter.key.public_key()).hex()}"\nserial = "SN1"\n'
        f'owner = "{c.members[0].id}"\ncapacity_w = 11000\n'
    )
    save_private_key(meter.key, folder / "meter.key")


@pytest.mark.parametrize("source", ["modbus", "p1"])
def test_agent_runs_sends_status_and_reports_it(tmp_path, mosquitto, start_sim, source):
    now = int(time.time())
    c = make_community(validators=1, members=1, app="market", time=now - now % 900 - 900)
    meter = c.meters[0]
    write_genesis_and_key(tmp_path, c, meter)
    if source == "modbus":
        sim = start_sim("sdm630", paused=False, start_time=now)
        meter_table = 'profile = "sdm630"\n'
    else:  # a DSMR meter's P1 port through a Wi-Fi dongle
        from meter_agent.household import Household
        from meter_agent.p1_simulator import P1Simulator

        sim = P1Simulator(Household(seed=3), start_time=now)
        sim.start()
        meter_table = 'source = "p1"\n'
    config = tmp_path / "agent.toml"
    metrics_port = free_port()
    config.write_text(
        f'community = "{c.community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f"heartbeat_s = 0.5\nmetrics_port = {metrics_port}\n"
        f'[meter]\n{meter_table}host = "127.0.0.1"\n'
        f"port = {sim.port}\npoll_s = 0.5\n"
        f'[broker]\nurl = "{mosquitto.url}"\n'
    )
    statuses: list[dict] = []
    from peerwatt.bus import BrokerConfig, MqttBus, Topics

    watcher = MqttBus(BrokerConfig.from_url(mosquitto.url), "watcher")
    watcher.subscribe(
        Topics.status(c.community, meter.id),
        lambda t, p: statuses.append({"raw": p}) if p == b"offline" else statuses.append(json.loads(p)),
    )
    watcher.start()
    agent = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(s.get("state") == "online" for s in statuses), 30, "an online status")
        assert any(s.get("meter_ok") for s in statuses if "meter_ok" in s)
        # a second agent on the same state refuses to start (it would sign with the same seqs and
        # push the first off the broker under the same client id, found in a QA pass)
        second = subprocess.run(
            [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f"error: another agent (pid {agent.pid}) is running on ")
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        # its metrics are served bounded (peerwatt.metrics.serve_metrics): a request that never
        # ends is closed after the read deadline (found in a QA pass: each such connection held
        # a thread for good), and a scrape meanwhile is answered
        idle = socket.create_connection(("127.0.0.1", metrics_port), timeout=READ_DEADLINE_S + 5)
        try:
            idle.sendall(b"GET /metrics HTTP/1.1\r\n")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
                assert b"peerwatt_agent_" in page.read()
            assert idle.recv(1024) == b""  # closed by the agent, not left open
        finally:
            idle.close()
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=30)
        if source == "p1":
            sim.stop()
    assert agent.returncode == 0, err
    assert "Traceback" not in err
    wait_for(lambda: statuses and statuses[-1] == {"raw": b"offline"}, 10, "offline status after stop")
    watcher.stop()
    status = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["meter"] == meter.id and info["outbox"] == 0 and info["meter_ok"] is True
    plain = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0 and "enrolled: " in plain.stdout and "last receipt: " in plain.stdout
    assert "chain configuration followed up to height 0" in plain.stdout  # the genesis's, no vote yet
    # the private key appears nowhere but in its own file: not in logs, output or the agent's state
    secret = meter.key.private_numbers().private_value
    needles = [
        secret.to_bytes(32, "big"),
        secret.to_bytes(32, "big").hex().encode(),
        (tmp_path / "meter.key").read_bytes().split(b"\n")[1],
    ]
    haystacks = [out.encode(), err.encode(), status.stdout.encode()]
    haystacks += [p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file()]
    assert not any(n in h for n in needles for h in haystacks)


def test_agent_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('community = "x"\n[meter]\nprofile = "sdm630"\n')
    res = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and "not found" in res.stderr


GOOD_AGENT_TOML = (
    'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\n{top}'
    '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n{meter}'
    '[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
)


def test_agent_config_takes_metrics_port_and_refuses_values_out_of_range(tmp_path):
    """Found in a QA pass: docs/operations.md says to set metrics_port in agent.toml, and the
    loader read it, but refused it as an unknown key; heartbeat_s = -5 and unit = 999 passed."""
    from meter_agent.config import load_agent_config
    from peerwatt.errors import UserError

    path = tmp_path / "agent.toml"
    path.write_text(GOOD_AGENT_TOML.format(top="metrics_port = 9101\n", meter="unit = 1\n"))
    assert load_agent_config(path).metrics_port == 9101
    for top, meter, said in (
        ("heartbeat_s = -5\n", "", "heartbeat_s must be 0.1 to 3600 seconds"),
        ("heartbeat_s = 0\n", "", "heartbeat_s must be 0.1 to 3600 seconds"),
        ("metrics_port = 70000\n", "", "metrics_port must be 1-65535"),
        ("", "unit = 999\n", "unit (the Modbus unit id) must be 0-255, not 999"),
        ("", "port = 0\n", "port must be 1-65535"),
        ("", "timeout_s = 0\n", "timeout_s must be 0.1 to 60 seconds"),
        ("", "baudrate = -9600\n", "baudrate must be positive"),
    ):
        path.write_text(GOOD_AGENT_TOML.format(top=top, meter=meter))
        with pytest.raises(UserError, match=re.escape(said)):
            load_agent_config(path)


def test_status_before_the_first_poll_says_so(tmp_path):
    """Found in a QA pass: before the agent's first poll `agent status` printed 'meter: None  ok:
    None  fault: None'."""
    from meter_agent.outbox import Outbox

    c = make_community(validators=1, members=1, app="market")
    meter = c.meters[0]
    write_genesis_and_key(tmp_path, c, meter)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'community = "{c.community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    (tmp_path / "state").mkdir()
    Outbox(tmp_path / "state" / "agent.sqlite").close()  # started, never polled
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "no status saved yet" in r.stdout and "None" not in r.stdout.splitlines()[0]
