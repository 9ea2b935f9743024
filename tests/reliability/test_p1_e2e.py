"""P1 (DSMR 5) end to end: two simulated P1 ports (TCP dongles) -> real agents reading them with
P1Reader -> sequencer -> market app. The readings carry the meters' equipment identifiers, which
the genesis enrols, so trades settle; a CRC-garbled stretch is a meter fault the agents ride
out; money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import TcpTarget
from meter_agent.p1 import PROFILE_NAME, P1Reader
from meter_agent.p1_simulator import P1Simulator
from tests.support.meter_community import meter_community

pytestmark = pytest.mark.reliability
SERIALS = ["E0031000000000001", "E0031000000000002"]


def p1_meter(i, household, clock):
    sim = P1Simulator(household, clock=clock, meter_serial=SERIALS[i], interval_s=0.02).start()
    return sim, P1Reader(TcpTarget("127.0.0.1", sim.port), timeout_s=2.0, clock=clock.now)


def test_p1_meters_trade_and_settle(tmp_path):
    with meter_community(tmp_path, SERIALS, p1_meter, PROFILE_NAME) as m:
        m.ride_out_fault("crc")  # a garbled P1 line for a few polls: faults, never readings
        m.assert_trades_settle("P1")
