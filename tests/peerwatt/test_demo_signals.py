"""`peerwatt demo --mosquitto`: its Mosquitto never outlives the demo, whatever stops it. Found in a
QA pass of cc7f946 (which started Mosquitto in a session of its own, so that a terminal's Ctrl-C
stops the demo and not the broker under it): Mosquitto was left running after a Ctrl-C during
startup (the demo printed 'stores kept in ...' and exited 0), after a second Ctrl-C while stopping
('aborted', 130), after SIGKILL to the demo's process group, after SIGTERM to the demo during
startup, and after SIGHUP to the group (the demo had no SIGHUP handler)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peerwatt.demo_community import Demo, DemoMosquitto, DemoOptions

RUNNING = "Ctrl-C stops"  # the intro's last line: the demo has started


def _brokers(conf: Path) -> list[int]:
    """The pids of the processes run with ``conf`` as an argument (Mosquitto, from /proc)."""
    wanted = os.fsencode(conf)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if wanted in args:
            pids.append(int(entry))
    return pids


def _wait_for(condition, timeout_s: float, step_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


class DemoRun:
    """`peerwatt demo --mosquitto --headless --homes 3` in a process group of its own (as a
    terminal runs a foreground job), its output in files."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "demo"
        self.conf = self.data / "broker" / "mosquitto.conf"
        self.out_path, self.err_path = tmp_path / "out.txt", tmp_path / "err.txt"
        command = [
            sys.executable, "-m", "peerwatt.cli", "demo", "--mosquitto", "--headless", "--homes", "3",
            "--speed", "300", "--data", str(self.data),
        ]  # fmt: skip
        with open(self.out_path, "w") as stdout, open(self.err_path, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_until(self, condition, what: str, timeout_s: float = 30) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"the demo ended before {what}:\n{self.out}{self.err}"
            return condition()

        assert _wait_for(ready, timeout_s), f"no {what} within {timeout_s} s:\n{self.out}{self.err}"

    def wait_running(self) -> None:
        self.wait_until(lambda: RUNNING in self.out, "start")
        assert _brokers(self.conf), "no Mosquitto runs with the demo's config"

    def group_signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def ended(self, timeout_s: float = 30) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not end within {timeout_s} s:\n{self.out}{self.err}")

    def assert_no_broker_left(self) -> None:
        # Mosquitto ends on SIGTERM at once; a second or two for a loaded machine
        left = [] if _wait_for(lambda: not _brokers(self.conf), 5, 0.05) else _brokers(self.conf)
        assert not left, f"Mosquitto still runs after the demo ended (pids {left}):\n{self.out}{self.err}"

    def close(self) -> None:
        """Whatever the test saw: end the demo and any Mosquitto this test's demo left."""
        if self.process.poll() is None:
            try:
                self.group_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        for pid in _brokers(self.conf):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def demo_run(tmp_path):
    from tests.conftest import require_tool

    require_tool("mosquitto", "/usr/sbin/mosquitto")
    runs: list[DemoRun] = []

    def start() -> DemoRun:
        runs.append(DemoRun(tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def _assert_interrupted_during_startup(run: DemoRun, code: int) -> None:
    out, err = run.out, run.err
    assert RUNNING not in out, f"the signal came after the start, not during it:\n{out}{err}"
    assert code == 130, out + err
    assert "Traceback" not in err
    assert "interrupted during startup" in err, err
    assert "stores kept" not in out + err and "summary:" not in out, out + err


@pytest.mark.integration
def test_a_ctrl_c_during_startup_stops_the_started_mosquitto_and_says_the_demo_did_not_run(demo_run):
    run = demo_run()
    # Mosquitto has started; the demo waits for it to listen, then makes and connects its nodes
    run.wait_until(lambda: bool(_brokers(run.conf)), "Mosquitto")
    run.group_signal(signal.SIGINT)  # a terminal's Ctrl-C: to the foreground process group
    code = run.ended()
    run.assert_no_broker_left()
    _assert_interrupted_during_startup(run, code)


@pytest.mark.integration
def test_sigterm_to_the_demo_during_startup_stops_its_mosquitto(demo_run):
    run = demo_run()
    # later in the startup: the nodes' stores and HTTP servers are made (not all serving yet)
    run.wait_until(lambda: (run.data / "validator-3" / "ledger.sqlite").exists(), "node stores")
    run.process.send_signal(signal.SIGTERM)  # to the demo alone (kill PID, systemd)
    code = run.ended()
    run.assert_no_broker_left()
    _assert_interrupted_during_startup(run, code)


@pytest.mark.integration
def test_a_second_ctrl_c_while_stopping_aborts_and_still_stops_mosquitto(demo_run):
    run = demo_run()
    run.wait_running()
    run.group_signal(signal.SIGINT)
    run.wait_until(lambda: "stopping" in run.err, "'stopping…'", timeout_s=10)
    run.group_signal(signal.SIGINT)  # impatient: the demo stops its agents and nodes meanwhile
    code = run.ended()
    run.assert_no_broker_left()
    assert code == 130, run.out + run.err
    assert "Traceback" not in run.err


@pytest.mark.integration
def test_sigkill_to_the_demos_process_group_takes_its_mosquitto_with_it(demo_run):
    run = demo_run()
    run.wait_running()
    run.group_signal(signal.SIGKILL)  # nothing of the demo runs after this
    assert run.ended() == -signal.SIGKILL
    run.assert_no_broker_left()


@pytest.mark.integration
def test_sighup_stops_the_demo_cleanly_like_ctrl_c(demo_run):
    run = demo_run()
    run.wait_running()
    time.sleep(1)  # a few blocks
    run.group_signal(signal.SIGHUP)  # the terminal closed
    code = run.ended()
    run.assert_no_broker_left()
    out, err = run.out, run.err
    assert code == 0, out + err
    assert "Traceback" not in err and "stopping…" in err
    assert "summary:" in out
    verified = [line for line in out.splitlines() if line.startswith("verify ")]
    assert len(verified) == 4 and all(": ok:" in line for line in verified), out


def test_an_interrupted_mosquitto_stop_kills_it_and_a_second_stop_reaps_it(tmp_path):
    broker = DemoMosquitto(tmp_path, "demo-street", [])
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands in for Mosquitto
    try:
        broker.process = process
        real_wait, waits = process.wait, []

        def wait(timeout=None):
            waits.append(timeout)
            if len(waits) == 1:
                raise KeyboardInterrupt  # a second Ctrl-C while the demo stops its broker
            return real_wait(timeout)

        process.wait = wait
        with pytest.raises(KeyboardInterrupt):
            broker.stop()
        assert broker.process is process  # not forgotten: killed, still to reap
        broker.stop()
        assert broker.process is None and process.returncode in (-signal.SIGTERM, -signal.SIGKILL)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(5)


def test_the_demo_stops_its_broker_whatever_stopping_the_rest_raised(tmp_path):
    the_demo = Demo(DemoOptions(homes=2, headless=True, mosquitto=True, data=tmp_path / "demo"))
    stopped = []

    class Broker:
        def stop(self):
            stopped.append(True)

    class Connections:
        def close(self):  # the first thing the demo's stop does
            raise KeyboardInterrupt  # a second Ctrl-C

    the_demo.mosquitto, the_demo.connections = Broker(), Connections()
    with pytest.raises(KeyboardInterrupt):
        the_demo.stop()
    assert stopped == [True]
