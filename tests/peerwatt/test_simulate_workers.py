"""`peerwatt simulate` on worker processes: a worker that dies, hangs or answers garbage ends the
study with one line naming its node and leaves no process behind; Ctrl-C and a killed coordinator
end the workers too; the exchange routes in a fixed order; the nodes' timers run on virtual time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

import peerwatt.sim_host as sim_host
import peerwatt.simulation as simulation
from chain.verify_workers import default_workers
from peerwatt.sim_bus import HostExchange, Router
from peerwatt.sim_community import SimOptions, start_time


def children(pid: int | str = "self") -> set[int]:
    """The child processes of ``pid`` (zombies included)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def state(pid: int) -> str:
    """The process's state letter (R, S, Z, ...), or "gone" once reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def gone(pid: int) -> bool:
    """Ended and reaped: neither running nor a zombie."""
    return state(pid) in ("gone", "X")


def node_of(pid: int) -> str | None:
    """The node whose store the worker ``pid`` has open."""
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.endswith("ledger.sqlite"):
                return Path(target).parent.name
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


# `peerwatt` with Ctrl-C live, as in a terminal: a suite run as a background job (`make test &`,
# a CI runner) starts with SIGINT ignored, which Python and its children then keep
AS_IN_A_TERMINAL = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from peerwatt.cli import main; main()"
)


def start_study(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", AS_IN_A_TERMINAL, "simulate", "--homes", "4", "--days", "20"]
        + ["--validators", "1", "--workers", "2", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )


def workers_running(proc: subprocess.Popen) -> dict[str, int]:
    """Wait until both workers have their node's store open: node name -> pid."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = {node_of(pid): pid for pid in children(proc.pid)}
        found.pop(None, None)
        if len(found) == 2:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the workers did not start")


def reaped(pids) -> None:
    """Ended, and reaped by the coordinator before it exited (else, its parent gone, a worker
    would be a zombie until init reaps it)."""
    assert all(gone(p) for p in pids), {p: state(p) for p in pids}


def test_a_dead_worker_ends_the_study_with_one_line_naming_its_node(tmp_path):
    proc = start_study(tmp_path / "study")
    try:
        workers = workers_running(proc)
        time.sleep(0.3)  # into the study
        os.kill(workers["validator-1"], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    reaped(workers.values())
    assert proc.returncode == 1, (out, err)
    assert err == "error: the worker process of validator-1 died (exit code -9); the study stopped\n"


def test_ctrl_c_ends_the_workers(tmp_path):
    proc = start_study(tmp_path / "study")
    try:
        workers = workers_running(proc)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole group
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            left = {"coordinator": state(proc.pid), **{n: state(p) for n, p in workers.items()}}
            raise AssertionError(f"no exit 60 s after Ctrl-C; process states: {left}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)  # reaped here, not left to warn in a later test
    reaped(workers.values())
    assert proc.returncode == 130 and err.split() == ["aborted"], (out, err)  # the CLI's answer


def test_workers_end_when_the_coordinator_is_killed(tmp_path):
    proc = start_study(tmp_path / "study")
    try:
        workers = workers_running(proc)
        proc.kill()  # no chance to clean up: the workers see their stdin end and exit
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while any(state(p) not in ("gone", "X", "Z") for p in workers.values()):
            assert time.monotonic() < deadline, {p: state(p) for p in workers.values()}
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the study's group
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "import sys; sys.stdout.write('garbage' * 10); sys.stdout.flush(); import time; time.sleep(60)",
            "answered garbage",
        ),
        ("import time; time.sleep(60)", "did not answer within 1 s"),
        ("import sys; sys.exit(3)", "died (exit code 3)"),
    ],
)
def test_a_worker_that_answers_garbage_or_nothing_is_named_and_reaped(tmp_path, monkeypatch, code, expected):
    started: list[int] = []
    real_init = sim_host.SubprocessHost.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self.proc.pid)

    monkeypatch.setattr(sim_host.SubprocessHost, "__init__", init)
    monkeypatch.setattr(sim_host, "WORKER_CODE", code)
    monkeypatch.setattr(simulation, "WORKER_TIMEOUT_S", 1.0)
    options = SimOptions(homes=2, days=0.05, validators=1, workers=2, out=tmp_path / "study")
    with pytest.raises(simulation.WorkerError) as failed:
        simulation.run_simulation(options)
    assert str(failed.value) == f"the worker process of sequencer {expected}; the study stopped"
    assert len(started) == 2 and all(gone(pid) for pid in started)  # killed and reaped


def test_the_router_orders_by_client_then_publish_order_and_keeps_retained():
    router = Router(["node-0", "agent-0", "agent-1"])
    assert router.route([], [("agent-1", "t/#"), ("node-0", "t/+")]) == []
    published = [
        ("agent-1", "t/b", b"1", 1, False),
        ("agent-0", "t/a", b"2", 1, True),
        ("agent-1", "t/c", b"3", 0, False),
    ]
    assert router.route(published, []) == [
        ("node-0", "t/a", b"2"),
        ("agent-1", "t/a", b"2"),
        ("node-0", "t/b", b"1"),
        ("agent-1", "t/b", b"1"),
        ("node-0", "t/c", b"3"),
        ("agent-1", "t/c", b"3"),
    ]
    # a new subscription gets the retained message; an empty retained payload deletes it
    assert router.route([], [("agent-0", "t/a")]) == [("agent-0", "t/a", b"2")]
    assert router.route([("node-0", "t/a", b"", 1, True)], [("agent-0", "t/#")]) == [
        ("agent-0", "t/a", b"2"),  # retained, for the new subscription: before this step's messages
        ("node-0", "t/a", b""),
        ("agent-0", "t/a", b""),  # once, though two of its subscriptions match
        ("agent-1", "t/a", b""),
    ]
    assert router.route([], [("agent-1", "t/+")]) == []


def test_acks_fire_once_the_coordinator_routed_the_message():
    exchange = HostExchange()
    bus = exchange.bus("agent-0")
    acked: list[str] = []
    bus.start()
    bus.publish("t/a", b"x", on_ack=lambda: acked.append("a"))
    exchange.routed()
    assert acked == []  # not handed to the coordinator yet
    published, _ = exchange.take()
    bus.publish("t/b", b"y", on_ack=lambda: acked.append("b"))
    exchange.routed()  # the coordinator routed what take() gave it: "a", not "b"
    assert [p[1] for p in published] == ["t/a"] and acked == ["a"]


def test_the_nodes_timers_run_on_the_study_clock_not_the_machines(tmp_path):
    options = SimOptions(homes=2, days=0.05, validators=0, workers=1, out=tmp_path / "study")
    host = sim_host.StudyHost(options, sim_host.HostSpec((0,), ()))
    try:
        (node,) = host.nodes
        t = start_time(options) + 3 * options.step_s
        host.handle(("tick", t))
        assert node._mono() == t == node.clock.now()
        time.sleep(0.01)
        assert node._mono() == t  # the machine's time passing changes nothing
    finally:
        host.close()


def test_a_small_study_runs_in_one_process_unless_told_otherwise(tmp_path):
    """Without --workers a study below SMALL_STUDY_HOMES homes stays in this process (crossing
    processes costs it more than it gains); from there on it takes one worker per core."""
    small = simulation.SMALL_STUDY_HOMES
    assert simulation.default_study_workers(small - 1) == 1
    assert simulation.default_study_workers(small) == default_workers()
    options = SimOptions(homes=4, days=0.05, start=date(2026, 6, 21), validators=1, out=tmp_path / "s")
    assert options.workers is None
    assert simulation.run_simulation(options).workers == 0
