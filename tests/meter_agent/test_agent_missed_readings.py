"""An agent that was not polling across several interval ends says in one line which intervals
got no reading: the first and last of them and how many (found in a QA pass: an agent stopped
for 90 s with SIGSTOP across three 30 s interval ends logged one line, for the last interval,
while the ledger lacked the readings of all three; the earlier two were dropped in silence)."""

from __future__ import annotations

import json
import logging

import pytest

from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBus
from tests.support.one_meter import one_meter_market

MORNING = 1750489200  # 2025-06-21 07:00 UTC
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80000, "retail_price": 300000}


class _Meter:
    def __init__(self, clock: list[int]) -> None:
        self.clock = clock

    def read(self) -> MeterSample:
        return MeterSample(
            time=self.clock[0], power_w=-2000, import_wh=20_000, export_wh=self.clock[0] - MORNING + 10**6,
            voltage_v=(230.0,), current_a=(), phase_power_w=(), frequency_hz=50.0, serial="SN1",
            profile="sdm630", unit_id=1,
        )  # fmt: skip


@pytest.fixture
def world(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt.agent")
    c, broker, seen, _node = one_meter_market(PARAMS, MORNING - 86400)
    now = [MORNING + 5]

    def make(bus_id: str = "agent") -> Agent:
        agent = Agent(
            key=c.meters[0].key, genesis=c.genesis, bus=MemoryBus(broker, bus_id), reader=_Meter(now),
            outbox=Outbox(tmp_path / "agent.sqlite"), strategy=StrategyConfig(trade=False),
            clock=lambda: now[0], heartbeat_s=0,
        )  # fmt: skip
        agent.start()
        return agent

    def signed() -> list[int]:
        return [json.loads(p)["body"]["interval"] for t, p in seen if "/readings/" in t]

    return make, now, signed, c.meters[0].id


def _poll_until(agent, now, until: int) -> None:
    while now[0] < until:
        now[0] += 5
        agent.poll()


def _missed(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("no reading of meter")]


def test_one_line_names_every_interval_that_ended_while_the_agent_was_stopped(world, caplog):
    make, now, signed, meter = world
    agent = make()
    _poll_until(agent, now, MORNING + 1300)  # in the interval after MORNING, its reading signed
    assert signed() == [MORNING]
    now[0] = MORNING + 4 * 900 + 22  # stopped across three ends, back 22 s after the last
    agent.poll()
    _poll_until(agent, now, MORNING + 4 * 900 + 300)
    (line,) = _missed(caplog)
    first, last = MORNING + 900, MORNING + 3 * 900
    assert f"no reading of meter {meter} for intervals {first}..{last} (3 intervals): " in line, line
    assert "the end of the last was 22 s before the first poll after it" in line, line
    assert "the settlement flags them as missing" in line, line
    assert signed() == [MORNING]


def test_the_newest_is_signed_and_the_earlier_ones_are_named_in_one_line(world, caplog):
    make, now, signed, meter = world
    agent = make()
    _poll_until(agent, now, MORNING + 1300)
    now[0] = MORNING + 4 * 900 + 3  # back in time for the reading of the last interval that ended
    agent.poll()
    assert signed() == [MORNING, MORNING + 3 * 900]
    (line,) = _missed(caplog)
    first, last = MORNING + 900, MORNING + 2 * 900
    assert f"for intervals {first}..{last} (2 intervals): " in line, line


def test_one_interval_missed_before_the_newest_is_named_alone(world, caplog):
    make, now, signed, meter = world
    agent = make()
    _poll_until(agent, now, MORNING + 1300)
    now[0] = MORNING + 3 * 900 + 3
    agent.poll()
    assert signed() == [MORNING, MORNING + 2 * 900]
    (line,) = _missed(caplog)
    assert f"no reading of meter {meter} for interval {MORNING + 900}: its end was " in line, line


def test_a_reading_left_pending_by_a_crash_is_in_the_same_line(world, caplog, monkeypatch):
    """The state held a pending reading that no poll tried (the agent died between closing the
    interval and signing it); restarted after more ends, one line names them all."""
    make, now, signed, meter = world
    agent = make()
    _poll_until(agent, now, MORNING + 895)
    monkeypatch.setattr(agent, "_sign_pending", lambda now, sample: None)
    now[0] = MORNING + 902
    agent.poll()  # closes MORNING, and "dies" before signing it
    assert agent.outbox.load("pending_reading") == MORNING
    agent.outbox.close()
    now[0] = MORNING + 3 * 900 + 40
    restarted = make("restarted")
    restarted.poll()
    (line,) = _missed(caplog)
    assert f"for intervals {MORNING}..{MORNING + 2 * 900} (3 intervals): " in line, line
    assert "the end of the last was 40 s before the first poll after it" in line, line
    assert signed() == []
