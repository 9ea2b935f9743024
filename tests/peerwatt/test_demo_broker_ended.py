"""`peerwatt demo` and its broker. Found in a QA pass: `kill -KILL` of the Mosquitto that `peerwatt
demo --mosquitto` runs left it a zombie (`[mosquitto] <defunct>`: the demo looked at its child only
at start), the status line kept printing the same height with nothing about the broker, and the
summary blamed the machine's speed for the messages that expired meanwhile ("this machine did not
keep up with --speed 300: 130 messages expired ... try a lower --speed")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from peerwatt.commands.demo import falling_behind, status_line
from peerwatt.demo_community import ConnectionLog, Stats


def _children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command name) of ``pid``'s child processes."""
    ps = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,stat=,comm="], capture_output=True, text=True)
    rows = []
    for line in ps.stdout.splitlines():
        child, state, name = line.split(None, 2)
        rows.append((int(child), state, name.strip()))
    return rows


@pytest.mark.integration
def test_the_demo_notices_its_mosquitto_ended_says_how_and_stops_with_its_stores_verified(tmp_path):
    from tests.conftest import require_tool

    require_tool("mosquitto", "/usr/sbin/mosquitto")
    data = tmp_path / "demo"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    command = [
        sys.executable, "-m", "peerwatt.cli", "demo", "--mosquitto", "--headless", "--homes", "2",
        "--speed", "300", "--data", str(data),
    ]  # fmt: skip
    with open(out, "w") as stdout, open(err, "w") as stderr:
        demo = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    broker = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Ctrl-C stops" not in out.read_text():
            assert demo.poll() is None, out.read_text() + err.read_text()
            time.sleep(0.2)
        assert "Ctrl-C stops" in out.read_text(), out.read_text() + err.read_text()
        time.sleep(2)  # a few blocks
        broker = next(pid for pid, _state, name in _children(demo.pid) if name == "mosquitto")
        os.kill(broker, signal.SIGKILL)
        try:
            demo.wait(45)  # the old demo never ended (no --hours) and never reaped its child
        except subprocess.TimeoutExpired:
            zombie = [row for row in _children(demo.pid) if row[0] == broker]
            pytest.fail(f"the demo went on without its broker; its child: {zombie}\n{out.read_text()}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    stdout_text, stderr_text = out.read_text(), err.read_text()
    assert demo.returncode == 2, stdout_text + stderr_text
    assert "Traceback" not in stderr_text
    said = [line for line in stderr_text.splitlines() if "Mosquitto" in line and "SIGKILL" in line]
    assert len(said) == 1, stderr_text
    assert f"(pid {broker})" in said[0] and "no broker" in said[0] and "stopping the demo" in said[0]
    assert "did not keep up" not in stdout_text
    verified = [line for line in stdout_text.splitlines() if line.startswith("verify ")]
    assert len(verified) == 4 and all(": ok:" in line for line in verified), stdout_text
    assert "summary:" in stdout_text


def test_expiries_while_the_broker_was_out_of_reach_do_not_blame_the_speed():
    line = falling_behind(300, {"expired": 130}, 200, broker_down_s=45)
    assert line is not None and "130 messages expired" in line
    assert "MQTT broker was out of reach for 45 s" in line
    assert "did not keep up" not in line and "lower --speed" not in line
    # without an outage the speed is still what the line names (test_demo.py)
    assert "did not keep up with --speed 300" in falling_behind(300, {"expired": 130}, 200, broker_down_s=0)
    assert falling_behind(300, {"expired": 3}, 3000, broker_down_s=45) is None


def test_the_connection_log_times_how_long_any_client_was_without_its_broker():
    now = [100.0]
    log = ConnectionLog(clock=lambda: now[0])
    a, b = log.watch("node-a"), log.watch("meter-b")
    a(True)
    b(True)
    assert log.down() == (0, 0.0) and log.down_s() == 0.0 and log.clients == 2
    now[0] = 110.0
    a(False)
    now[0] = 112.0
    b(False)
    now[0] = 130.0
    assert log.down() == (2, 20.0) and log.down_s() == 20.0
    a(True)
    now[0] = 135.0
    b(True)
    assert log.down() == (0, 0.0) and log.down_s() == 25.0  # the span while any one was down
    log.close()  # the demo stops its clients: no outage
    a(False)
    now[0] = 200.0
    assert log.down() == (0, 0.0) and log.down_s() == 25.0


def test_a_never_connected_client_is_no_outage():
    log = ConnectionLog(clock=lambda: 5.0)
    log.watch("late")(False)
    assert log.down() == (0, 0.0) and log.down_s() == 0.0


def test_the_status_line_says_when_the_broker_is_out_of_reach():
    stats = Stats(height=12, intervals=6, trades=6)
    assert status_line(stats, None) == "height 12, 6 intervals, 6 trades"
    line = status_line(stats, "the MQTT broker out of reach of 8 of 8 clients for 25 s")
    assert line == "height 12, 6 intervals, 6 trades; the MQTT broker out of reach of 8 of 8 clients for 25 s"
