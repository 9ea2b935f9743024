"""Found in a QA pass: with `[meter] timeout_s = 60` and a gateway that accepts and never
answers, the agent took 116 s to stop after SIGTERM and published no status for 2 minutes at
heartbeat_s = 2: the meter was read in the thread that waited for the stop and sent the
heartbeats (systemd's 90 s stop timeout would have killed it first: no energy saved, no
`offline`). The meter is now read in its own thread: stop and heartbeats do not wait for it, and
a read still running at stop is abandoned (nothing signed from it). The simulated meter's
`timeout` fault is a device that never answers."""

from __future__ import annotations

import json
import threading
import time

from meter_agent.agent import Agent
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from tests.meter_agent.conftest import community_of

MORNING = 1750489200  # 2025-06-21 07:00 UTC: a sunny morning in Berlin


def make_agent(tmp_path, start_sim, reader_for, heartbeat_s, **reader_options):
    sim = start_sim("sdm630", start_time=MORNING)
    c = community_of(sim)
    broker = MemoryBroker()
    seen: list[tuple[float, str, bytes]] = []
    watcher = MemoryBus(broker, "watcher")
    watcher.subscribe(Topics.pattern(c.community), lambda t, p: seen.append((time.monotonic(), t, p)))
    watcher.start()
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(broker, "agent"),
        reader=reader_for(sim, **reader_options),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=sim.clock.now,
        profile="sdm630",
        heartbeat_s=heartbeat_s,
    )
    return sim, agent, seen


def start_run(agent, stop, poll_s):
    thread = threading.Thread(target=agent.run, args=(stop, poll_s), name="agent-run", daemon=True)
    thread.start()
    return thread


def test_heartbeats_go_on_and_stop_is_prompt_while_the_meter_never_answers(tmp_path, start_sim, reader_for):
    sim, agent, seen = make_agent(tmp_path, start_sim, reader_for, heartbeat_s=0.2, timeout_s=30)
    agent.start()
    agent.poll()  # the meter answers once
    sim.inject("timeout")  # from now on it never answers: each read waits its 30 s timeout
    stop = threading.Event()
    thread = start_run(agent, stop, poll_s=0.1)
    reads_in_flight = []
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        reads_in_flight.append(sum(t.name == "meter-read" and t.is_alive() for t in threading.enumerate()))
        time.sleep(0.05)
    statuses = [p for at, t, p in seen if t == agent.status_topic and at > started + 0.3]
    assert len(statuses) >= 3, "a status every heartbeat_s while the meter read hangs"
    assert json.loads(statuses[-1])["state"] == "online"
    assert max(reads_in_flight) <= 1  # one read at a time, however short poll_s is
    stop.set()
    stopping = time.monotonic()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - stopping < 1.5
    agent.stop()
    assert [p for _, t, p in seen if t == agent.status_topic][-1] == b"offline"
    assert agent.outbox.load("counters") == agent.counters.to_dict()  # the energy state is saved


def test_a_read_that_ends_after_stop_signs_nothing(tmp_path, start_sim, reader_for):
    # the first attempt gets no answer (1.5 s), the retry is answered: the read ends 1.5 s
    # after it started, well after the stop
    sim, agent, seen = make_agent(tmp_path, start_sim, reader_for, heartbeat_s=3600, timeout_s=1.5, retries=1)
    agent.start()
    while int(sim.clock.now()) + 5 <= MORNING + 895:
        sim.clock.advance(5)
        agent.poll()
    sample, errors = agent.last_sample, agent.meter_read_errors
    sim.clock.advance(10)  # the interval ended: the next sample would be its reading
    sim.inject("timeout", duration_s=1.0)
    stop = threading.Event()
    thread = start_run(agent, stop, poll_s=5)
    time.sleep(0.5)
    stop.set()
    stopping = time.monotonic()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - stopping < 1.0
    agent.stop()
    time.sleep(2.0)  # the abandoned read has ended by now
    readings = [json.loads(p) for _, t, p in seen if "/readings/" in t]
    assert all(r["body"]["interval"] < MORNING for r in readings)
    assert agent.last_sample is sample and agent.meter_read_errors == errors
    assert agent.outbox.load("counters") == agent.counters.to_dict()
