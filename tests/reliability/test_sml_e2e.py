"""SML end to end: two simulated German meters' optical ports (IR-head TCP bridges) -> real agents
reading them with SmlReader -> sequencer -> market app. The readings carry the meters' server ids,
which the genesis enrols, so trades settle; a CRC-garbled stretch is a meter fault the agents ride
out; money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import TcpTarget
from meter_agent.sml import PROFILE_NAME, SmlReader
from meter_agent.sml_simulator import SmlSimulator
from tests.support.meter_community import meter_community

pytestmark = pytest.mark.reliability
METER_NUMBERS = [31_000_001, 31_000_002]
SERIALS = [f"0A0150575400{n:08X}" for n in METER_NUMBERS]  # 0x0A 0x01 "PWT" block 0, number


def sml_meter(i, household, clock):
    sim = SmlSimulator(household, clock=clock, meter_number=METER_NUMBERS[i], interval_s=0.02).start()
    assert sim.serial == SERIALS[i]
    return sim, SmlReader(TcpTarget("127.0.0.1", sim.port), timeout_s=2.0, clock=clock.now)


def test_sml_meters_trade_and_settle(tmp_path):
    with meter_community(tmp_path, SERIALS, sml_meter, PROFILE_NAME) as m:
        m.ride_out_fault("crc")  # a garbled optical link for a few polls: faults, never readings
        m.assert_trades_settle("SML")
