"""Found in a QA pass of the Modbus agent behind a misbehaving gateway: with a large `timeout_s`
and a gateway that accepts a request and never answers, the agent's status (the heartbeat, the
status saved in its state, the metrics) said `meter_ok: true` until the read finally failed, a
minute later at `timeout_s = 30` with a retry. A read outstanding longer than the poll interval
(at least 2 s) now makes the status say the meter does not answer while the read goes on; the
read's own result takes its place when it ends.

``HangingGateway`` is tests/meter_agent/gateway.py's FaultyGateway relaying to a simulated meter
(its ``forward`` mode) that, while ``hang`` is set, takes requests and holds them unanswered; it
passes them on when ``hang`` is cleared (a gateway whose RS-485 side came back)."""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time

from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.outbox import Outbox
from meter_agent.p1 import TELEGRAM_WAIT_S, P1Reader
from meter_agent.profile import find_profile
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from peerwatt.metrics import exposition, registry_for
from tests.meter_agent.conftest import community_of

from .gateway import FaultyGateway

MORNING = 1750489200  # 2025-06-21 07:00 UTC: a sunny morning in Berlin


class HangingGateway(FaultyGateway):
    """See the module docstring."""

    def __init__(self, backend_port: int) -> None:
        super().__init__("forward", backend_port)
        self.hang = False
        self.held = 0  # requests' bytes held unanswered so far

    def _forward(self, conn: socket.socket) -> None:
        backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=2)
        held = b""
        try:
            while not self._stop.is_set():
                if held and not self.hang:
                    backend.sendall(held)
                    held = b""
                for source in select.select([conn, backend], [], [], 0.05)[0]:
                    data = source.recv(4096)
                    if not data:
                        return
                    if source is backend:
                        conn.sendall(data)
                    elif self.hang:
                        held += data
                        self.held += len(data)
                    else:
                        backend.sendall(data)
        except OSError:
            return
        finally:
            backend.close()
            conn.close()


def _wait_for(condition, within_s: float) -> float:
    """Seconds until ``condition()`` held (polled every 20 ms); fails after ``within_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, f"not within {within_s} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_the_status_says_the_meter_does_not_answer_while_a_read_hangs(tmp_path, start_sim, caplog):
    sim = start_sim("sdm630", start_time=MORNING)
    c = community_of(sim)
    broker = MemoryBroker()
    statuses: list[tuple[float, dict]] = []
    watcher = MemoryBus(broker, "watcher")

    def heard(topic: str, payload: bytes) -> None:
        if payload != b"offline":
            statuses.append((time.monotonic(), json.loads(payload)))

    with HangingGateway(sim.port) as gateway:
        reader = MeterReader(
            find_profile("sdm630"), TcpTarget("127.0.0.1", gateway.port), timeout_s=30, clock=sim.clock.now
        )
        agent = Agent(
            key=c.meters[0].key,
            genesis=c.genesis,
            bus=MemoryBus(broker, "agent"),
            reader=reader,
            outbox=Outbox(tmp_path / "agent.sqlite"),
            strategy=StrategyConfig(),
            clock=sim.clock.now,
            profile="sdm630",
            heartbeat_s=0.2,
        )
        watcher.subscribe(agent.status_topic, heard)
        watcher.start()
        agent.start()
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop, 0.5), daemon=True)
        thread.start()
        metrics = registry_for("agent", agent.status)
        try:
            _wait_for(lambda: agent.last_sample is not None and agent.status()["meter_ok"], 5)
            errors = agent.meter_read_errors

            caplog.set_level(logging.INFO, logger="peerwatt.agent")
            gateway.hang = True
            hung = time.monotonic()
            _wait_for(lambda: gateway.held > 0, 2)  # a read waits for its answer
            time.sleep(max(0.0, hung + 1.0 - time.monotonic()))
            assert agent.status()["meter_ok"], "a read outstanding 1 s (< 2 s) is no fault yet"
            _wait_for(lambda: not agent.status()["meter_ok"], 5)
            flipped = time.monotonic() - hung
            assert 1.9 <= flipped <= 4.0, flipped
            status = agent.status()
            assert status["fault"].startswith(
                "the meter does not answer: a read has waited more than 2 s (polls every 0.5 s; it goes "
                "on up to timeout_s = 30 s a request)"
            ), status["fault"]
            assert b"peerwatt_agent_meter_ok 0.0" in exposition(metrics)
            # published (and saved in the state, for `peerwatt agent status`) within a heartbeat
            _wait_for(lambda: statuses and not statuses[-1][1]["meter_ok"], 1)
            assert statuses[-1][1]["fault"] == status["fault"]
            _wait_for(lambda: not agent.outbox.load("status", {}).get("meter_ok", True), 1)
            assert agent.meter_read_errors == errors  # the read has not failed (yet)
            assert any("meter fault: the meter does not answer" in r.getMessage() for r in caplog.records)
            assert thread.is_alive() and any(
                t.name == "meter-read" and t.is_alive() for t in threading.enumerate()
            )

            gateway.hang = False  # the held request is answered: the read ends with a sample
            _wait_for(lambda: agent.status()["meter_ok"], 3)
            assert agent.status()["fault"] is None and agent.meter_read_errors == errors
            _wait_for(lambda: statuses[-1][1]["meter_ok"], 1)
            assert any(r.getMessage() == "meter answers again" for r in caplog.records)
            assert agent.read_overdue_s() == 2.0  # poll_s 0.5 s: at least READ_OVERDUE_MIN_S
        finally:
            stop.set()
            thread.join(5)
            agent.stop()
            reader.close()
            watcher.stop()
    assert not thread.is_alive()


def test_a_meter_that_pushes_its_data_may_take_its_telegram_interval(tmp_path, start_sim):
    """A P1 read waits for the next telegram (every 10 s on DSMR 4): outstanding that long, it is
    the meter's pace, not a meter that does not answer."""
    sim = start_sim("sdm630", start_time=MORNING)
    c = community_of(sim)
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(MemoryBroker(), "agent"),
        reader=P1Reader(TcpTarget("127.0.0.1", 9)),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=sim.clock.now,
        profile="p1",
    )
    agent.poll_s = 5
    assert agent.read_overdue_s() == TELEGRAM_WAIT_S == 11
    agent.poll_s = 30
    assert agent.read_overdue_s() == 30
