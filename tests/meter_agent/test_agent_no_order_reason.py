"""Why the agent placed no order (found in a QA pass that followed the docs with a 60 s interval:
after admission `peerwatt agent status` showed `enrolled: unknown` and no orders for minutes. The
real reason it never offered was its own rule, min_order_wh = 20 against 18-21 Wh an interval
(80 % of it offered), which nothing said).

The status's `no_order` says why the agent placed no order for the next interval when the reason
is its own (no forecast yet, below min_order_wh, no bid that can pay, revoked), and `peerwatt
agent status` prints it."""

from __future__ import annotations

import json

from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBus
from tests.support.one_meter import one_meter_market

MORNING = 1750489200  # 2025-06-21 07:00 UTC
PARAMS = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80000, "retail_price": 300000}


class _Meter:
    """A meter exporting 1 Wh every 10 reads (at 5 s polls, 18 Wh a quarter: below min_order_wh
    as in the QA pass)."""

    def __init__(self, clock: list[int], serial: str) -> None:
        self.clock, self.serial, self.reads = clock, serial, 0

    def read(self) -> MeterSample:
        self.reads += 1
        return MeterSample(
            time=self.clock[0], power_w=-100, import_wh=20_000, export_wh=1_000_000 + self.reads // 10,
            voltage_v=(230.0,), current_a=(), phase_power_w=(), frequency_hz=50.0, serial=self.serial,
            profile="sdm630", unit_id=1,
        )  # fmt: skip


def _world(tmp_path, strategy: StrategyConfig | None = None, params: dict | None = None):
    c, broker, seen, node = one_meter_market({**PARAMS, **(params or {})}, MORNING - 86400)
    now = [MORNING + 100]
    agent = Agent(
        key=c.meters[0].key, genesis=c.genesis, bus=MemoryBus(broker, "agent"), reader=_Meter(now, "SN1"),
        outbox=Outbox(tmp_path / "agent.sqlite"), strategy=strategy or StrategyConfig(),
        clock=lambda: now[0], heartbeat_s=0,
    )  # fmt: skip
    agent.start()
    return c, agent, now, seen, node


def _orders(seen) -> list[dict]:
    return [json.loads(p)["body"] for t, p in seen if "/orders/" in t]


def test_below_min_order_wh_is_said_in_the_status(tmp_path):
    c, agent, now, seen, _node = _world(tmp_path)
    agent.history = {str(MORNING - 900): 21}  # the last quarter exported 21 Wh: 16 Wh to offer
    agent.poll()
    assert _orders(seen) == []
    note = agent.status()["no_order"]
    assert note.startswith(f"no order for interval {MORNING + 900}: "), note
    assert "forecast surplus 21 Wh" in note and "sell_share 0.8" in note and "16 Wh" in note, note
    assert "below min_order_wh = 20" in note, note
    # a deficit below it, too
    agent.history = {str(MORNING - 900): -12}
    agent.poll()
    assert "forecast deficit 12 Wh" in agent.status()["no_order"] and _orders(seen) == []
    # with an order placed there is nothing to explain
    agent.history = {str(MORNING - 900): 500}
    agent.poll()
    assert [o["energy_wh"] for o in _orders(seen)] == [400]
    assert agent.status()["no_order"] is None


def test_no_forecast_yet_is_said_in_the_status(tmp_path):
    c, agent, now, seen, _node = _world(tmp_path)
    agent.poll()
    note = agent.status()["no_order"]
    assert "no forecast yet" in note and "whole interval" in note, note


def test_no_bid_that_can_pay_is_said_in_the_status(tmp_path):
    params = {"grid_fee_per_kwh": 150_000, "levies_per_kwh": 100_000}  # retail - both < feed-in
    c, agent, now, seen, _node = _world(tmp_path, params=params)
    agent.history = {str(MORNING - 900): -500}
    agent.poll()
    note = agent.status()["no_order"]
    assert "no bid can pay" in note and "feed-in price" in note, note


def test_agent_status_prints_it(tmp_path):
    import time

    from tests.meter_agent.test_agent_status_text import agent_with_status, status_text

    note = (
        "no order for interval 1796643480: forecast surplus 21 Wh, of which sell_share 0.8 is 16 Wh to "
        "offer: below min_order_wh = 20 (agent.toml [market])"
    )
    out = status_text(agent_with_status(tmp_path, time=int(time.time()), enrolled="unknown", no_order=note))
    assert note in out.splitlines(), out


def test_trading_turned_off_places_no_order_says_so_and_keeps_sending_readings(tmp_path):
    """`[market] trade = false`: a household that leaves stops ordering while its agent still reads
    the meter and sends its readings, so its last trades settle before the votes (docs/quickstart.md,
    "Leaving"; before, the docs had it set min_order_wh to 1000000000)."""
    c, agent, now, seen, _node = _world(tmp_path, StrategyConfig(trade=False))
    agent.history = {str(MORNING - 900): 5_000}  # a surplus worth offering
    agent.poll()
    assert _orders(seen) == []
    note = agent.status()["no_order"]
    assert "trading is off" in note and "trade = false" in note, note
    now[0] = MORNING + 900 + 5  # the interval ends: its reading is still signed and sent
    agent.poll()
    assert [t for t, _p in seen if "/readings/" in t], seen
    assert _orders(seen) == []


def test_trade_is_read_from_agent_toml(tmp_path):
    from meter_agent.config import load_agent_config
    from tests.meter_agent.test_config_strict import refused, write

    assert load_agent_config(write(tmp_path, market="trade = false\n")).strategy.trade is False
    assert load_agent_config(write(tmp_path)).strategy.trade is True
    refused(write(tmp_path, market='trade = "no"\n'), "[market]", "trade")


def test_trading_turned_off_withdraws_an_order_whose_gate_is_still_open_within_the_margin(tmp_path):
    """A QA pass: an agent restarted with trade = false 45 s before an interval's gate closed left
    its 2,500 Wh offer standing (the agent plans only beyond its order margin), while its status
    said trading was off. Every standing order whose gate is still open is withdrawn."""
    c, agent, now, seen, _node = _world(tmp_path)
    agent.history = {str(MORNING - 900): 5_000}
    agent.poll()
    [offer] = _orders(seen)
    interval = offer["interval"]
    assert offer["energy_wh"] > 0
    now[0] = interval - PARAMS["gate_s"] - 45  # within the margin: the next plans are for later
    agent.strategy = StrategyConfig(trade=False)
    agent.poll()
    withdrawn = [o for o in _orders(seen) if o["interval"] == interval and o["energy_wh"] == 0]
    assert len(withdrawn) == 1, _orders(seen)
    agent.poll()
    assert len([o for o in _orders(seen) if o["interval"] == interval]) == 2  # once
