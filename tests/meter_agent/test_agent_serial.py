"""The agent offers nothing while the meter's serial is not the one the ledger enrolled for its
meter key (a QA pass: with the genesis enrolling "SN000000" and the meter reporting "20240000",
and again after the meter was swapped mid-run, or with the wrong unit read behind a gateway, the
agent kept offering: trades booked that the settlement leaves unsettled, `serial_not_enrolled` or
`meter_replaced`, the counterparties' too). Its readings are still signed as read (the ledger
flags them); an alarm in the status and one ERROR line say what differs and what to do, and
trading resumes by itself when the serial is the enrolled one again.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from tests.support.localnet import make_community

MORNING = 1750489200  # 2025-06-21 07:00 UTC: a sunny morning in Berlin
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80000, "retail_price": 300000}


@pytest.fixture
def world(tmp_path, start_sim, reader_for):
    """make(serials) -> (agent, sim, seen): the agent of a meter enrolled with ``serials[0]``
    (default: the simulated meter's own), reading the simulator."""
    sim = start_sim("sdm630", start_time=MORNING)
    broker = MemoryBroker()
    seen: list[tuple[str, bytes]] = []

    def make(enrolled: str | None = None, serial_from: str = "the genesis"):
        c = make_community(
            validators=1, members=1, meters_per_member=1, app="market", time=MORNING - 86400,
            app_params=PARAMS, serials=[enrolled or sim.meter_serial],
        )  # fmt: skip
        watcher = MemoryBus(broker, "watcher")
        watcher.subscribe(Topics.pattern(c.community), lambda t, p: seen.append((t, p)))
        watcher.start()
        agent = Agent(
            key=c.meters[0].key,
            genesis=c.genesis,
            bus=MemoryBus(broker, "agent"),
            reader=reader_for(sim),
            outbox=Outbox(tmp_path / "agent.sqlite"),
            strategy=StrategyConfig(),
            clock=sim.clock.now,
            profile="sdm630",
            serial_from=serial_from,
            heartbeat_s=0,
        )
        agent.start()
        return agent

    return make, sim, seen


def run(agent, sim, steps, step_s=60):
    for _ in range(steps):
        sim.clock.advance(step_s)
        agent.poll()


def bodies(seen, kind):
    return [json.loads(p)["body"] for t, p in seen if f"/{kind}/" in t]


def alarm_lines(caplog):
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    return [m for m in errors if "but the ledger enrolled" in m]


def test_a_meter_whose_serial_is_not_the_enrolled_one_offers_nothing(world, caplog):
    make, sim, seen = world
    agent = make(enrolled="SN000000")
    run(agent, sim, 4 * 15 + 1)  # an hour of a sunny morning: the old code offered energy
    assert bodies(seen, "orders") == []
    status = agent.status()
    assert status["meter_ok"] is True  # the meter answers: it is not the enrolled one
    assert "serial 20240000" in status["serial_mismatch"] and "serial SN000000" in status["serial_mismatch"]
    assert len(status["alarms"]) == 1 and "peerwatt member admit" in status["alarms"][0]
    assert len(alarm_lines(caplog)) == 1  # one line, not one a poll
    # the readings are the meter's truth, signed as read: the ledger flags them serial_not_enrolled
    readings = bodies(seen, "readings")
    assert len(readings) >= 3 and {r["serial"] for r in readings} == {"20240000"}
    published = [json.loads(p) for t, p in seen if t == agent.status_topic]
    assert published[-1]["serial_mismatch"] == status["serial_mismatch"]


def test_a_meter_swapped_mid_run_stops_the_offers_until_the_enrolled_one_is_back(world, caplog):
    make, sim, seen = world
    agent = make()
    enrolled = sim.meter_serial
    run(agent, sim, 40)
    assert [o for o in bodies(seen, "orders") if o["energy_wh"]], "a sunny morning produces offers"
    assert agent.status()["serial_mismatch"] is None
    before = len(bodies(seen, "orders"))
    sim.swap_meter()  # a new meter: new serial, counters from zero
    run(agent, sim, 30)
    during = bodies(seen, "orders")[before:]
    assert during and all(o["energy_wh"] == 0 for o in during)  # the open offer withdrawn, no new one
    assert f"but the ledger enrolled serial {enrolled}" in agent.status()["serial_mismatch"]
    assert len(alarm_lines(caplog)) == 1
    signed = bodies(seen, "readings")
    assert signed[-1]["serial"] == sim.meter_serial != enrolled  # signed as read
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peerwatt.agent"):
        sim.swap_meter(serial=enrolled)  # the enrolled meter is back (put back, or the right one)
        run(agent, sim, 30)
    assert agent.status()["serial_mismatch"] is None
    assert "the serial is the enrolled one again" in caplog.text
    after = bodies(seen, "orders")[before + len(during) :]
    assert [o for o in after if o["energy_wh"]], "trading resumes by itself"


def test_the_wrong_unit_behind_a_gateway_offers_nothing(world, start_sim, reader_for):
    """The agent reads another meter (the neighbour's unit on the same RS-485 bus): its serial
    differs, and nothing is offered on its energy."""
    make, sim, seen = world
    agent = make()
    neighbour = start_sim("sdm630", meter_serial="20249999", clock=sim.clock, seed=1)
    agent.reader = reader_for(neighbour)
    run(agent, sim, 4 * 15 + 1)
    assert [o for o in bodies(seen, "orders") if o["energy_wh"]] == []
    assert "serial 20249999" in agent.status()["serial_mismatch"]


class _NoSerialMeter:
    """A meter without a serial register (em340): counters rising, no serial."""

    def __init__(self, clock: list[int]) -> None:
        self.clock, self.import_wh = clock, 1_000_000

    def read(self) -> MeterSample:
        self.import_wh += 3
        return MeterSample(
            time=self.clock[0], power_w=500, import_wh=self.import_wh, export_wh=20_000,
            voltage_v=(230.0,), current_a=(), phase_power_w=(), frequency_hz=50.0, serial=None,
            profile="em340", unit_id=1,
        )  # fmt: skip


def test_a_typed_serial_that_is_not_the_enrolled_one_offers_nothing(tmp_path):
    """A meter that reports no serial signs agent.toml's [meter] serial: a typo there is a
    mismatch too, named as agent.toml's."""
    c = make_community(
        validators=1, members=1, meters_per_member=1, app="market", time=MORNING, app_params=PARAMS,
        serials=["EM340-1"],
    )  # fmt: skip
    now = [MORNING + 880]
    agent = Agent(
        key=c.meters[0].key, genesis=c.genesis, bus=MemoryBus(MemoryBroker(), "agent"),
        reader=_NoSerialMeter(now), outbox=Outbox(tmp_path / "agent.sqlite"), strategy=StrategyConfig(),
        clock=lambda: now[0], serial="EM340-7", heartbeat_s=0,
    )  # fmt: skip
    agent.start()
    now[0] += 5
    agent.poll()
    assert "agent.toml's [meter] serial is serial EM340-7" in agent.status()["serial_mismatch"]
    agent.serial = "EM340-1"  # as read at the next start once agent.toml is corrected
    now[0] += 5
    agent.poll()
    assert agent.status()["serial_mismatch"] is None


def test_agent_status_says_why_nothing_is_offered(tmp_path):
    from tests.meter_agent.test_agent_status_text import agent_with_status, status_text

    mismatch = "the meter reports serial 20240001, but the ledger enrolled serial 20240000 for meter key aa"
    text = status_text(agent_with_status(tmp_path, serial_mismatch=mismatch, time=int(time.time())))
    assert f"no offers: {mismatch}" in text.splitlines()


class _Meter:
    """A meter's reader as a test double: counters rising by 3 Wh a poll, the serial given."""

    def __init__(self, clock: list[int], serial: str) -> None:
        self.clock, self.serial, self.import_wh = clock, serial, 1_000_000

    def read(self) -> MeterSample:
        self.import_wh += 3
        return MeterSample(
            time=self.clock[0], power_w=500, import_wh=self.import_wh, export_wh=20_000,
            voltage_v=(230.0,), current_a=(), phase_power_w=(), frequency_hz=50.0, serial=self.serial,
            profile="sdm630", unit_id=1,
        )  # fmt: skip


def test_the_ledgers_flag_overrules_a_join_request_that_names_another_serial(tmp_path, caplog):
    """A meter enrolled after genesis: the agent takes the enrolled serial from its join request.
    Should the enroll_meter vote have carried another serial, the ledger flags the agent's first
    reading serial_not_enrolled, in a receipt the agent verifies: from then on it offers nothing
    with that serial (kept across a restart), as when the serial differs from the request's."""
    from chain.envelope import parse_envelope
    from chain.genesis import Genesis
    from market.app import MarketApp
    from peerwatt.node.ledger_api import block_receipts

    c = make_community(
        validators=1, members=1, meters_per_member=1, app="market", time=MORNING - 86400,
        app_params=PARAMS, serials=["SN-VOTED"],
    )  # fmt: skip
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    meter = c.meters[0]
    # what with_own_enrolment makes of a join request naming SN-REQUEST (peerwatt/commands/agent.py)
    own = {**c.genesis.doc["meters"][meter.id], "serial": "SN-REQUEST"}
    believed = Genesis({**c.genesis.doc, "meters": {meter.id: own}})
    broker = MemoryBroker()
    readings: list[bytes] = []
    node = MemoryBus(broker, "node")  # the validator's side: takes readings, sends receipts
    node.subscribe(Topics.readings(c.community, meter.id), lambda _t, p: readings.append(p))
    node.start()
    now = [MORNING + 880]

    def make() -> Agent:
        agent = Agent(
            key=meter.key, genesis=believed, bus=MemoryBus(broker, "agent"),
            reader=_Meter(now, "SN-REQUEST"), outbox=Outbox(tmp_path / "agent.sqlite"),
            strategy=StrategyConfig(), clock=lambda: now[0], heartbeat_s=0,
        )  # fmt: skip
        agent.start()
        return agent

    agent = make()
    for _ in range(6):  # across the interval end at MORNING + 900: its reading is signed
        now[0] += 5
        agent.poll()
    assert agent.last_reading["serial"] == "SN-REQUEST" and agent.status()["serial_mismatch"] is None
    c.run_block([parse_envelope(p, community=c.community, now=None) for p in readings], now[0])
    store = c.ledgers[0].store
    receipts = [r for m, r in block_receipts(store, store.height()) if m == meter.id]
    assert [r["result"]["flag"] for r in receipts] == ["serial_not_enrolled"]
    node.publish(Topics.receipts(c.community, meter.id), json.dumps(receipts[0]).encode())
    now[0] += 5
    agent.poll()
    mismatch = agent.status()["serial_mismatch"]
    assert "the ledger enrolled another serial than SN-REQUEST" in mismatch, mismatch
    assert f"interval {MORNING} serial_not_enrolled" in mismatch
    assert len(alarm_lines(caplog)) == 1
    agent.stop()
    agent.outbox.close()
    again = make()  # the ledger's word is kept in the state file
    now[0] += 5
    again.poll()
    assert "another serial than SN-REQUEST" in again.status()["serial_mismatch"]


def test_a_join_requests_serial_is_not_called_the_ledgers(world, caplog):
    """Found in a review: for a meter enrolled after genesis the agent knows only its join
    request's serial; the alarm said "the ledger enrolled serial X" although a vote proposed by
    hand may have enrolled the one the meter reports. It names the join request, and what to do."""
    make, sim, seen = world
    agent = make(enrolled="SN000000", serial_from="join-request.txt")
    with caplog.at_level(logging.ERROR):
        run(agent, sim, 2)
    assert agent.serial_mismatch == (
        f"the meter reports serial {sim.meter_serial}, but join-request.txt names serial SN000000 (if "
        f"the community's vote enrolled {sim.meter_serial}, make a new join request with it: `peerwatt "
        f"agent join-request`, the same keys) for meter key {agent.meter_id}: no offers while they differ "
        "(the ledger flags readings of a serial it did not enrol serial_not_enrolled and settles none of "
        "their trades)"
    )
    assert not bodies(seen, "orders") and not alarm_lines(caplog)
