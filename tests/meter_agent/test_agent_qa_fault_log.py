"""Found in a QA pass: a TCP RST fault was logged, then 'meter answers again', then the import
register read NaN from the next poll on for many minutes, and its text never appeared in the log:
one log key served every kind of fault, asked only when a fault started, so a fault held back
once (another was logged in that interval) was never logged later. The interval's missed reading
then said 'the meter did not answer at its end', although the meter answered every poll (with
NaN). Now a fault of another kind is logged when it starts (at most once an interval per kind,
at most MAX_FAULT_KINDS_LOGGED kinds an interval), one held back is logged in a later interval
while it lasts, and the missed-reading line names the fault."""

from __future__ import annotations

import logging

import pytest

from meter_agent.agent import Agent
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus
from tests.meter_agent.conftest import community_of

MORNING = 1750489200  # 2025-06-21 07:00 UTC: a sunny morning in Berlin


@pytest.fixture
def agent_and_sim(tmp_path, start_sim, reader_for, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt.agent")
    sim = start_sim("sdm630", start_time=MORNING)
    c = community_of(sim)
    agent = Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(MemoryBroker(), "agent"),
        reader=reader_for(sim),
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=sim.clock.now,
        profile="sdm630",
        heartbeat_s=3600,
    )
    agent.start()
    return agent, sim


def poll_until(agent, sim, end, step_s=5):
    while int(sim.clock.now()) + step_s <= end:
        sim.clock.advance(step_s)
        agent.poll()


def fault_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("meter fault")]


def test_a_fault_after_another_in_the_same_interval_is_logged_and_named_at_the_missed_reading(
    agent_and_sim, caplog
):
    agent, sim = agent_and_sim
    poll_until(agent, sim, MORNING + 300)
    sim.inject("disconnect")  # the gateway drops the connection: logged
    poll_until(agent, sim, MORNING + 305)
    sim.clear_faults()
    poll_until(agent, sim, MORNING + 310)
    assert "meter answers again" in caplog.text
    sim.inject("nan", values=("import_wh",))  # from the next poll on, for many minutes
    poll_until(agent, sim, MORNING + 600)
    faults = fault_lines(caplog)
    # (on a loaded machine a reconnection may also time out at the reader's 0.3 s: a third kind,
    # logged as it should be; seen in a full test run)
    assert "closed by the meter" in faults[0] and "import_wh not available" in faults[-1], faults
    assert sum("import_wh not available" in f for f in faults) == 1, faults
    poll_until(agent, sim, MORNING + 960)  # past the interval's end and its allowance
    missed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("no reading of meter")]
    assert len(missed) == 1 and f"for interval {MORNING}:" in missed[0], missed
    assert "import_wh not available" in missed[0] and "did not answer" not in missed[0], missed[0]
    assert agent.readings_withheld is None  # a fault, not unusable counters: offers resume with the meter


def test_a_fault_held_back_is_logged_in_the_next_interval_while_it_lasts(agent_and_sim, caplog):
    agent, sim = agent_and_sim
    poll_until(agent, sim, MORNING + 300)
    sim.inject("exception", code=4)
    poll_until(agent, sim, MORNING + 305)
    sim.clear_faults()
    poll_until(agent, sim, MORNING + 310)
    sim.inject("exception", code=4)  # the same fault again in this interval: held back for now
    poll_until(agent, sim, MORNING + 890)
    assert len(fault_lines(caplog)) == 1
    poll_until(agent, sim, MORNING + 910)  # it lasts into the next interval: logged there
    faults = fault_lines(caplog)
    assert len(faults) == 2 and "exception 4" in faults[1], faults
    poll_until(agent, sim, MORNING + 1700)
    assert len(fault_lines(caplog)) == 2  # once: not again every poll or every interval


def test_a_meter_flapping_between_faults_logs_a_bounded_number_of_lines(agent_and_sim, caplog):
    agent, sim = agent_and_sim
    poll_until(agent, sim, MORNING + 15)
    codes = (1, 2, 3, 4, 6)  # five faults of different kinds, changing at every poll (84 polls)
    for i in range(100):  # 500 s: within one interval
        if i % 6 == 5:
            sim.clear_faults()
        else:
            sim.clear_faults()
            sim.inject("exception", code=codes[i % 6])
        poll_until(agent, sim, sim.clock.now() + 5)
    faults = fault_lines(caplog)
    back = [r.getMessage() for r in caplog.records if r.getMessage() == "meter answers again"]
    assert len(faults) == 3 and len(back) == 1, (faults, back)
    sim.clear_faults()
    poll_until(agent, sim, MORNING + 905)  # the interval's end: one line counts the rest
    summary = [r.getMessage() for r in caplog.records if "not logged each time" in r.getMessage()]
    assert len(summary) == 1 and "meter fault 81 more time(s)" in summary[0], summary
