"""A revoked meter's agent stops trading (found in a QA pass that followed the docs: after a
household left, `member leave` revoked its meter, and its agent kept signing buy orders every
interval, each refused by the ledger as `revoked`, and kept them pending in its outbox).

A revoked meter key is revoked for good (`enroll_meter` refuses a key enrolled or revoked
before), and the ledger takes none of its messages, orders or readings. Once the agent knows it
(from its own order withdrawn at gate closure as `meter_revoked`, a block booking one of its
messages as rejected `revoked`, or the validators' refusal notices `revoked`), it says so once,
signs no more orders or readings, keeps nothing in its outbox that can never be booked, and its
status says `revoked` (kept across a restart)."""

from __future__ import annotations

import json
import logging

from chain.notice import sign_notice
from meter_agent.agent import Agent
from meter_agent.modbus_reader import MeterSample
from meter_agent.outbox import Outbox
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from peerwatt.node.ledger_api import block_receipts
from tests.support.localnet import make_community
from tests.support.market_ledger import I1, PARAMS, T0, opening_orders


class _Meter:
    """A meter importing steadily, with the enrolled serial."""

    def __init__(self, clock: list[int], serial: str) -> None:
        self.clock, self.serial, self.import_wh = clock, serial, 1_000_000

    def read(self) -> MeterSample:
        self.import_wh += 3
        return MeterSample(
            time=self.clock[0], power_w=500, import_wh=self.import_wh, export_wh=20_000,
            voltage_v=(230.0,), current_a=(), phase_power_w=(), frequency_hz=50.0, serial=self.serial,
            profile="sdm630", unit_id=1,
        )  # fmt: skip


def _world(tmp_path, c):
    """(make, now, seen, node): make() -> a started agent of meter 0 that bids for 500 Wh a
    quarter (its history says so), reading _Meter at the clock ``now``; ``seen``: its orders and
    readings as published; ``node``: a bus on the same broker (sends receipts)."""
    meter = c.meters[0]
    broker = MemoryBroker()
    seen: list[tuple[str, bytes]] = []
    node = MemoryBus(broker, "node")
    node.subscribe(Topics.pattern(c.community), lambda t, p: seen.append((t, p)))
    node.start()
    now = [I1 - 200]

    def make() -> Agent:
        agent = Agent(
            key=meter.key, genesis=c.genesis, bus=MemoryBus(broker, "agent"),
            reader=_Meter(now, c.genesis.doc["meters"][meter.id]["serial"]),
            outbox=Outbox(tmp_path / "agent.sqlite"), strategy=StrategyConfig(), clock=lambda: now[0],
            heartbeat_s=0,
        )  # fmt: skip
        agent.history = {str(T0): -500, str(T0 + 900): -500}  # two quarters bought: a bid next
        agent.start()
        return agent

    return make, now, seen, node


def _signed(seen, kind: str) -> list[dict]:
    return [json.loads(p)["body"] for t, p in seen if f"/{kind}/" in t]


def _revoked_ledger(tmp_path):
    """A market community (3 validators) whose meter 0 ordered for I1, then was revoked by vote;
    the block at I1's gate closure withdraws its order as `meter_revoked`: (community, that
    order outcome's receipt)."""
    from market.app import MarketApp

    c = make_community(validators=3, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    t = T0 + 10
    c.run_block(opening_orders(c, t), t)
    meter = c.meters[0].id
    v = c.validators
    body = {"action": "revoke_meter", "args": {"meter": meter}, "deadline": t + 3600}
    proposal = v[0].sign(c.community, "propose", body, created=t + 1)
    votes = [
        p.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t + 1)
        for p in v[1:]
    ]
    c.run_block([proposal, *votes], t + 1)
    closure = c.run_block([], I1 - 300)
    (outcome,) = [r for m, r in block_receipts(c.ledgers[0].store, closure.height) if m == meter]
    assert outcome["result"].get("withdrawn") == "meter_revoked"
    return c, outcome


def test_a_withdrawn_order_stops_the_orders_and_readings_for_good(tmp_path, caplog):
    c, outcome = _revoked_ledger(tmp_path)
    make, now, seen, node = _world(tmp_path, c)
    agent = make()
    receipts = Topics.receipts(c.community, c.meters[0].id)
    try:
        agent.poll()
        assert [o["side"] for o in _signed(seen, "orders")] == ["buy"]  # it bids, as before
        assert agent.outbox.depth() + agent.outbox.awaiting_confirmation() == 1
        with caplog.at_level(logging.INFO, logger="peerwatt.agent"):
            node.publish(receipts, json.dumps(outcome).encode())
            node.publish(receipts, json.dumps(outcome).encode())  # told twice: said once
            orders_before, readings_before = len(_signed(seen, "orders")), len(_signed(seen, "readings"))
            for _ in range(60):  # across the end of interval I1 - 900 and more: 5 minutes
                now[0] += 5
                agent.poll()
        assert len(_signed(seen, "orders")) == orders_before  # no order, not even a cancellation
        assert len(_signed(seen, "readings")) == readings_before  # the ledger refuses them too
        assert agent.outbox.depth() == agent.outbox.awaiting_confirmation() == 0  # nothing pending
        status = agent.status()
        assert status["enrolled"] is False
        assert "revoked" in status["revoked"], status["revoked"]
        assert status["orders"] == {}
        lines = [r.getMessage() for r in caplog.records if "revoked" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "signs no more orders or readings" in lines[0] and "left the community" in lines[0]
        assert "no order for interval" in status["no_order"] and "revoked" in status["no_order"]
    finally:
        agent.stop()
        agent.outbox.close()
        for ledger in c.ledgers:
            ledger.close()
    again = make()  # kept in the state file
    try:
        now[0] += 900
        again.poll()
        assert again.status()["revoked"] == status["revoked"]
        assert len(_signed(seen, "orders")) == orders_before
    finally:
        again.stop()
        again.outbox.close()


def test_the_validators_refusals_as_revoked_stop_the_orders(tmp_path):
    c = make_community(validators=3, members=1, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    make, now, seen, node = _world(tmp_path, c)
    agent = make()
    try:
        agent.poll()
        seq = agent.outbox.last_seq()  # its bid, kept until the ledger confirms it
        for validator in c.validators:  # as many as two quorums share: believed
            node.publish(
                Topics.receipts(c.community, c.meters[0].id),
                sign_notice(
                    validator.key, community=c.community, meter=c.meters[0].id, seqs=[seq],
                    created=now[0], seq=1, refused="revoked",
                ),
            )  # fmt: skip
        orders_before = len(_signed(seen, "orders"))
        for _ in range(200):  # into the next interval, whose bid the agent would sign
            now[0] += 5
            agent.poll()
        assert len(_signed(seen, "orders")) == orders_before
        assert agent.status()["revoked"]
    finally:
        agent.stop()
        agent.outbox.close()


def test_a_meter_not_enrolled_yet_keeps_ordering(tmp_path):
    """Not enrolled yet is not revoked: the agent may start before the votes, and the ledger
    books its messages from the block that enrols the meter."""
    c = make_community(validators=3, members=1, meters_per_member=1, app="market", app_params=PARAMS, time=T0)
    make, now, seen, node = _world(tmp_path, c)
    agent = make()
    try:
        agent.poll()
        seq = agent.outbox.last_seq()
        for validator in c.validators:
            node.publish(
                Topics.receipts(c.community, c.meters[0].id),
                sign_notice(
                    validator.key, community=c.community, meter=c.meters[0].id, seqs=[seq],
                    created=now[0], seq=1, refused="not_enrolled",
                ),
            )  # fmt: skip
        assert agent.status()["enrolled"] is False and agent.status()["revoked"] is None
        for _ in range(200):  # into the next interval: its bid is signed
            now[0] += 5
            agent.poll()
        assert len({o["interval"] for o in _signed(seen, "orders")}) >= 2
    finally:
        agent.stop()
        agent.outbox.close()
