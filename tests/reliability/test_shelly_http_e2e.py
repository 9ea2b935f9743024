"""Shelly Pro 3EM over HTTP RPC end to end: two simulated devices (http.server on loopback) ->
real agents reading them with ShellyHttpReader -> sequencer -> market app. The readings carry the
devices' MACs, which the genesis enrols, so trades settle; a stretch of HTTP 500 answers is a
meter fault the agents ride out; money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from meter_agent.shelly_http import PROFILE_NAME, ShellyHttpReader
from meter_agent.shelly_simulator import ShellySimulator
from tests.support.meter_community import meter_community

pytestmark = pytest.mark.reliability
SERIALS = ["C8F09E000001", "C8F09E000002"]


def shelly_meter(i, household, clock):
    sim = ShellySimulator(household, clock=clock, mac=SERIALS[i]).start()
    return sim, ShellyHttpReader("127.0.0.1", sim.port, timeout_s=2.0, clock=clock.now)


def test_shelly_http_meters_trade_and_settle(tmp_path):
    with meter_community(tmp_path, SERIALS, shelly_meter, PROFILE_NAME) as m:
        m.ride_out_fault("error")  # the device fails for a few polls: faults, never readings
        m.assert_trades_settle("Shelly")
