"""The community's broker, as docs/quickstart.md runs it (copied from ``broker-etc/`` with
``cp -a``, started by hand as root, dropping to ``mosquitto``), takes a new meter's and the
dashboard's ACL blocks after the restart `community add-meter` and `add-dashboard` print for a
broker started by hand, run as printed (with sh) against it.

Found in QA passes: they printed `systemctl restart mosquitto`, which restarts Debian's own broker,
not this one (the new meter's ACL block was never loaded); then a reload (SIGHUP to this config's
process), on which Debian's Mosquitto 2.0.11 died (``free(): invalid pointer``) after a
`remove-validator`. The printed restart stops exactly the broker running this config (SIGTERM:
it exits 0, having saved its persistence file), waits until it has exited, starts it again
daemonized (``-d``) and fails loudly when no such broker runs.
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from peerwatt.bus.mqtt import _PahoClient
from peerwatt.ports import free_port
from tests.peerwatt.test_cli_community_broker import FLAGS, join_request
from tests.support.cli import peerwatt
from tests.support.community_broker import GeneratedBroker, running_as_root

WAIT_S = 10.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="needs Debian's mosquitto"),
    pytest.mark.skipif(not running_as_root(), reason="starts Mosquitto as root, as the quickstart does"),
]


class Client:
    """A TLS client with an account's certificate; what it receives lands in ``inbox``."""

    def __init__(self, port: int, ca: Path, folder: Path, stem: str, name: str) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        # peerwatt's paho client: plain paho leaves its wake-up socket pair open after loop_stop()
        # (a ResourceWarning at exit, an error with warnings as errors)
        self.client = _PahoClient(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=str(ca), certfile=str(folder / f"{stem}.crt"), keyfile=str(folder / f"{stem}.key")
        )
        self.client.on_message = lambda _c, _u, msg: self.inbox.put((msg.topic, msg.payload))
        connected: queue.Queue[object] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert not connected.get(timeout=WAIT_S).is_failure

    def subscribe(self, topic: str) -> None:
        done: queue.Queue[object] = queue.Queue()
        self.client.on_subscribe = lambda *_a: done.put(True)
        self.client.subscribe(topic, qos=1)
        done.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def got(self, seconds: float) -> list[tuple[str, bytes]]:
        deadline, out = time.monotonic() + seconds, []
        while time.monotonic() < deadline:
            try:
                out.append(self.inbox.get(timeout=0.1))
            except queue.Empty:
                if out:
                    break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def quickstart_broker(root: Path) -> tuple[int, Path, GeneratedBroker]:
    """`community init` into ``root``/oak, its ``broker-etc`` copied and its Mosquitto started
    with the commands it printed, as docs/quickstart.md does: (port, community folder, broker)."""
    port, etc, out = free_port(), root / "etc-peerwatt", root / "oak"
    made = peerwatt(
        "community", "init", *FLAGS, "--broker-port", str(port), "--broker-etc", str(etc),
        "--broker-persistence", str(root / "var" / "oak-street"), "--out", str(out), stdin="",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    subprocess.run(["cp", "-a", str(out / "broker-etc"), str(etc)], check=True, timeout=30)
    start = next(x.strip() for x in made.stdout.splitlines() if x.strip().startswith("/usr/bin/install"))
    broker = GeneratedBroker(etc, port, [shlex.split(p) for p in start.split(" && ")], root / "mosquitto.log")
    try:
        broker.start()
    except BaseException:
        broker.stop()
        raise
    return port, out, broker


BY_HAND = "on the broker, started by hand: "


def restart(broker: GeneratedBroker, printed: str) -> None:
    """Run the printed line for a broker started by hand (its cp commands, then the restart) with
    sh; GeneratedBroker.restart_by_hand checks the broker it stopped exited 0 and that a new
    process runs the same config. Return once the new broker takes connections."""
    [line] = [x for x in printed.splitlines() if x.startswith(BY_HAND)]
    broker.restart_by_hand(line.removeprefix(BY_HAND))
    assert broker.uid() != 0  # dropped to mosquitto again
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"the restarted broker takes no connection on {broker.port}"
            time.sleep(0.1)


def close(clients: list[Client]) -> None:
    for client in clients:
        client.close()
    clients.clear()


def test_a_new_meter_and_the_dashboard_publish_and_read_after_the_printed_restart():
    root = Path(tempfile.mkdtemp(prefix="peerwatt-community-reload-"))
    root.chmod(0o755)  # Mosquitto, dropped to its own user, reads its files below this folder
    clients: list[Client] = []
    broker: GeneratedBroker | None = None
    try:
        port, out, broker = quickstart_broker(root)
        assert broker.uid() != 0  # dropped to mosquitto: it reads the copied files as that user
        first = broker.pid()

        community = "peerwatt/oak-street"
        certs = out / "broker" / "certs"
        ca = certs / "community-ca.crt"
        sequencer = next(p.stem for p in (certs / "clients").glob("node-*.crt"))

        def connect() -> tuple[Client, Client]:
            node = Client(port, ca, certs / "clients", sequencer, sequencer)
            clients.append(node)
            node.subscribe(f"{community}/readings/+")
            household = Client(port, root / "h1" / "community-ca.crt", root / "h1", "broker-client", meter)
            clients.append(household)
            return node, household

        request, meter = join_request(root, "h1")
        added = peerwatt("community", "add-meter", "--dir", str(out), str(request), "--out", str(root / "h1"))
        assert added.returncode == 0, added.stderr
        node, household = connect()
        household.publish(f"{community}/readings/{meter}", b"before the restart")
        assert node.got(1.5) == []  # the running broker has no ACL block for it yet
        restart(broker, added.stdout)  # with both clients connected
        assert broker.pid() != first
        close(clients)
        node, household = connect()
        household.publish(f"{community}/readings/{meter}", b"after the restart")
        assert node.got(WAIT_S) == [(f"{community}/readings/{meter}", b"after the restart")]
        household.publish(f"{community}/status/{meter}", b"online", retain=True)

        dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(root / "dash"))
        assert dash.returncode == 0, dash.stderr
        second = broker.pid()
        restart(broker, dash.stdout)  # the broker the first restart started (-d) is found too
        assert broker.pid() not in (first, second)
        close(clients)
        node, household = connect()
        dashboard = Client(
            port, root / "dash" / "community-ca.crt", root / "dash", "broker-client", "dashboard"
        )
        clients.append(dashboard)
        dashboard.subscribe(f"{community}/status/+")
        # published before the restart: the retained message survived it (persistence)
        assert dashboard.got(WAIT_S) == [(f"{community}/status/{meter}", b"online")]
        household.publish(f"{community}/readings/{meter}", b"still")  # the meter kept its block
        assert node.got(WAIT_S) == [(f"{community}/readings/{meter}", b"still")]

        close(clients)
        assert "Warning" not in broker.log(), broker.log()  # the first broker's: start to clean stop
    finally:
        close(clients)
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_printed_restart_fails_loudly_when_no_broker_runs_this_config():
    """pkill's exit status 1 said nothing when the broker was gone (QA): the restart says so."""
    root = Path(tempfile.mkdtemp(prefix="peerwatt-community-reload-"))
    root.chmod(0o755)
    broker: GeneratedBroker | None = None
    try:
        port, out, broker = quickstart_broker(root)
        broker.stop()
        dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(root / "dash"))
        assert dash.returncode == 0, dash.stderr
        [line] = [x for x in dash.stdout.splitlines() if x.startswith(BY_HAND)]
        r = subprocess.run(
            ["sh", "-c", line.removeprefix(BY_HAND)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert (
            r.stderr.strip()
            == f"peerwatt: no mosquitto is running {broker.out}/mosquitto.conf: nothing restarted"
        )
        assert broker.running() == {}  # and none started
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_printed_restart_finds_a_broker_started_as_mosquitto_on_the_path(monkeypatch):
    """Found in a docs walk-through: a broker started as `mosquitto -c .../mosquitto.conf` (found
    on the PATH, not by its full path) was "no mosquitto is running ...: nothing restarted"."""
    monkeypatch.setenv("PATH", "/usr/sbin:" + os.environ.get("PATH", ""))
    root = Path(tempfile.mkdtemp(prefix="peerwatt-community-reload-"))
    root.chmod(0o755)
    broker: GeneratedBroker | None = None
    try:
        port, out, broker = quickstart_broker(root)
        broker.stop()
        full = broker.start_commands[-1]
        broker.start_commands[-1] = ["mosquitto", *full[1:]]
        broker.start()
        dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(root / "dash"))
        assert dash.returncode == 0, dash.stderr
        [line] = [x for x in dash.stdout.splitlines() if x.startswith(BY_HAND)]
        r = subprocess.run(
            ["sh", "-c", line.removeprefix(BY_HAND)], capture_output=True, text=True, timeout=90
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert broker.process is not None and broker.process.wait(WAIT_S) == 0  # stopped cleanly
        broker.start_commands[-1] = full  # the restart starts it by its full path, with -d
        [(pid, argv)] = broker.running().items()
        assert argv == [*full, "-d"]
        broker.daemon_pid = pid
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_printed_restart_run_by_a_user_who_may_not_stop_the_broker_says_so():
    """A QA pass ran the restart as a user other than root: pkill could not signal the broker
    (Operation not permitted, exit status 1 as for no match) and the line said no broker was
    running. It says to run it as root, and the broker runs on untouched."""
    if subprocess.run(["id", "nobody"], capture_output=True, timeout=10).returncode != 0:
        pytest.fail("this test runs the printed line as the user nobody, which this machine lacks")
    root = Path(tempfile.mkdtemp(prefix="peerwatt-community-reload-"))
    root.chmod(0o755)
    broker: GeneratedBroker | None = None
    try:
        port, out, broker = quickstart_broker(root)
        first = broker.pid()
        dash = peerwatt("community", "add-dashboard", "--dir", str(out), "--out", str(root / "dash"))
        [line] = [x for x in dash.stdout.splitlines() if x.startswith(BY_HAND)]
        restart = line.removeprefix(BY_HAND).split(" && ", 1)[1]  # the restart, without the copy
        r = subprocess.run(
            ["su", "-s", "/bin/sh", "nobody", "-c", restart], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert (
            f"peerwatt: cannot stop the mosquitto running {broker.out}/mosquitto.conf (run this as root)"
            in r.stderr
        )
        assert broker.pid() == first
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
