"""Meter faults end to end: simulated meters (Modbus) -> real agents -> sequencer -> market app.
A meter is swapped mid-day (new serial, counters from zero): its agent keeps running, and the
settlement flags that meter's trades of the affected interval as unsettled rather than guessing;
money stays conserved and the ledger verifies."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from tests.support.meter_community import meter_community

pytestmark = pytest.mark.reliability
SERIALS = ["70000", "70001"]  # the simulators' own serials (a reading must carry the enrolled one)


def modbus_meter(i, household, clock):
    sim = MeterSimulator("sdm630", household, port=0, clock=clock, meter_serial=f"{70000 + i}")
    sim.start()
    reader = MeterReader(
        find_profile("sdm630"), TcpTarget("127.0.0.1", sim.port), timeout_s=0.5, clock=clock.now
    )
    return sim, reader


def test_meter_swap_is_flagged_not_guessed(tmp_path):
    with meter_community(tmp_path, SERIALS, modbus_meter, "sdm630") as m:
        m.run(150)
        swapped_at = m.clock.now()
        m.sims[0].swap_meter()  # the seller's meter is replaced: new serial, counters from zero
        m.run(90)
        assert m.agents[0].status()["meter_ok"] is True  # the agent kept running through it
        results = m.results()
        trades = [r for r in results if r["kind"] == "trade"]
        settlements = [r for r in results if r["kind"] == "settlement"]
        assert trades and any(s["status"] == "settled" for s in settlements)
        flagged = [s for s in settlements if s["flag"] == "meter_replaced"]
        assert flagged, "the swap must be flagged"
        assert all(s["status"] == "unsettled" and s["settled_wh"] == 0 and s["value"] == 0 for s in flagged)
        assert all(s["seller"] == m.c.meters[0].id for s in flagged)
        assert all(s["interval"] <= swapped_at < s["interval"] + 2 * 900 for s in flagged)
        m.assert_conserved_and_verified()
