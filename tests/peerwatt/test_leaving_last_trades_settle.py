"""docs/quickstart.md, "Leaving" (a QA pass): a household whose meter was revoked while a trade of
it was cleared but its reading not yet booked left that trade unsettled for good (the revoked
meter's later readings are refused), the seller unpaid. The docs now have the household stop
ordering first, its agent still reading (`[market] trade = false`, the agent restarted), and
wait until its last cleared interval has its reading booked before the revocation. This checks
that step with the real agent: after the switch the agent places no order for an interval whose
gate was still open, and every trade it had is settled within gate_s + one interval (+ the
settlement's block)."""

from __future__ import annotations

from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from meter_agent.strategy import StrategyConfig
from tests.support.meter_community import PARAMS, meter_community

SERIALS = ["71000", "71001"]


def modbus_meter(i, household, clock):
    sim = MeterSimulator("sdm630", household, port=0, clock=clock, meter_serial=SERIALS[i])
    sim.start()
    reader = MeterReader(
        find_profile("sdm630"), TcpTarget("127.0.0.1", sim.port), timeout_s=0.5, clock=clock.now
    )
    return sim, reader


def test_a_household_that_stops_ordering_has_every_trade_settled_before_it_leaves(tmp_path):
    interval, gate = PARAMS["interval_s"], PARAMS["gate_s"]
    with meter_community(tmp_path, SERIALS, modbus_meter, "sdm630") as m:
        m.run(100)
        seller = m.c.meters[0].id
        before = [r for r in m.results() if r["kind"] == "trade" and r["seller"] == seller]
        assert before, "the seller must have traded before it stops"
        switched = m.clock.now()
        # `[market] trade = false` and the agent restarted: its strategy is the config's
        m.agents[0].strategy = StrategyConfig(trade=False)
        m.run((gate + interval) // 60 + 5)
        results = m.results()
        trades = [r for r in results if r["kind"] == "trade" and seller in (r["seller"], r["buyer"])]
        # no interval whose gate was still open at the switch was traded
        assert all(t["interval"] - gate <= switched for t in trades), trades
        settled = {
            (s["interval"], s["trade"])
            for s in results
            if s["kind"] == "settlement" and s["status"] == "settled"
        }
        unsettled = [
            t
            for t in trades
            if (t["interval"], f"{t['sell_order'][:24]}:{t['buy_order'][:24]}") not in settled
        ]
        assert not unsettled, unsettled
        # what the docs say to look at: `agent status` has no "traded, not settled yet" line
        totals = m.agents[0].status()["totals"]
        assert totals["sold_pending_wh"] == 0 and totals["bought_pending_wh"] == 0, totals
        assert totals["sold_wh"] > 0
        assert m.agents[0].status()["meter_ok"] is True  # it went on reading the meter
        m.assert_conserved_and_verified()
