"""The agent follows votes that change the validators, the quorum or the market's parameters, by
walking a validator's configuration history (chain/config_proof.py), checked step by step."""

from __future__ import annotations

import json
import logging

import pytest

from chain.canonical import dumps_checked, loads_strict
from chain.config_proof import TrustedConfig, config_entries, config_step
from chain.engine import Ledger
from chain.keys import generate_private_key
from market.app import MarketApp
from meter_agent.agent import Agent
from meter_agent.outbox import Outbox
from meter_agent.receipts import ReceiptError, follow_config, genesis_config, verify_receipt
from meter_agent.strategy import StrategyConfig
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from peerwatt.node.ledger_api import proof_json
from tests.support.localnet import Party, make_community

T0 = 1_750_489_200  # 2025-06-21 07:00 UTC


def _gov(c, party, action, args, t):
    return party.sign(
        c.community, "propose", {"action": action, "args": args, "deadline": t + 3600}, created=t
    )


def _vote(c, party, proposal, t):
    return party.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)


def _step(c, block):
    """What a validator publishes for ``block``: its header, seals and the proven entries."""
    store = c.ledgers[0].store
    seals = [loads_strict(bytes(env)) for _, env in store.seal_rows(block.height)]
    return config_step(c.ledgers[0].state, store.header(block.height), seals)


@pytest.fixture
def changed(tmp_path):
    """A market community of 3 validators that votes in a fourth, then a new retail price: the
    genesis, the two steps, and a receipt of a block sealed by the new set only."""
    c = make_community(validators=3, members=1, app="market", time=T0 - 86_400)
    c.open_ledgers(tmp_path, MarketApp)
    newcomer = Party(generate_private_key(), "validator-3")
    c.ledgers.append(Ledger.create(tmp_path / "validator-3", c.genesis, MarketApp()))
    c.validators.append(newcomer)
    before = config_entries(c.ledgers[0].state)

    add = _gov(c, c.validators[0], "add_validator", {"key": newcomer.sec1_hex, "name": "new"}, T0)
    first = c.run_block(
        [add, _vote(c, c.validators[1], add, T0), _vote(c, c.validators[2], add, T0)], T0, [0, 1, 2]
    )
    assert config_entries(c.ledgers[0].state) != before
    step1 = _step(c, first)

    price = _gov(c, c.members[0], "set_param", {"name": "retail_price", "value": 310_000}, T0 + 10)
    # sealed by the three the new quorum needs, one of them the newcomer: the old set alone has 2
    second = c.run_block([price], T0 + 10, [1, 2, 3])
    assert c.ledgers[0].chain_state["params"]["retail_price"] == 310_000
    step2 = _step(c, second)

    meter = c.meters[0]
    reading = meter.sign(
        c.community,
        "reading",
        {"interval": T0, "import_wh": 1, "export_wh": 2, "serial": "SN000000", "profile": "p"},
        created=T0 + 20,
    )
    later = c.run_block([reading], T0 + 20, [1, 2, 3])
    receipt = proof_json(c.ledgers[0].store, later.height, 0)
    return c, step1, step2, receipt


def test_a_history_takes_the_agent_from_the_genesis_to_the_voted_configuration(changed):
    c, step1, step2, receipt = changed
    start = genesis_config(c.genesis)
    with pytest.raises(ReceiptError, match="valid seals"):  # what every agent hit before
        verify_receipt(receipt, community=c.community, validators=start.validators, quorum=start.quorum)
    history = {"type": "config_history", "steps": [step1, step2]}
    reached, stopped = follow_config(json.loads(dumps_checked(history)), start, community=c.community)
    assert stopped is None
    assert (reached.height, reached.quorum, len(reached.validators)) == (2, 3, 4)
    assert reached.params["retail_price"] == 310_000
    verify_receipt(receipt, community=c.community, validators=reached.validators, quorum=reached.quorum)
    # followed again from where it stands: nothing to do
    assert follow_config(history, reached, community=c.community) == (reached, None)


def test_a_step_sealed_by_validators_the_agent_does_not_know_yet_stops_the_walk(changed):
    c, step1, step2, _ = changed
    start = genesis_config(c.genesis)
    reached, stopped = follow_config(
        {"type": "config_history", "steps": [step2]}, start, community=c.community
    )
    assert reached == start
    assert "valid seals" in stopped


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: s["entries"][0]["value"].update({"f" * 32: {"key": "02" + "11" * 32, "name": "x"}}),
        lambda s: s["entries"][1].update(value=1),  # quorum 1: any one validator would do
        lambda s: s["entries"][2]["value"].update(retail_price=1),
        lambda s: s["header"].update(state_root="00" * 32),
        lambda s: s["entries"].pop(),
        lambda s: s.update(seals=s["seals"][:1]),
        lambda s: s["entries"][0].update(key="members"),
        lambda s: s.update(entries="nonsense"),
    ],
)
def test_a_forged_or_malformed_step_changes_nothing(changed, forge):
    c, step1, _, _ = changed
    start = genesis_config(c.genesis)
    forged = json.loads(dumps_checked(step1))
    forge(forged)
    reached, stopped = follow_config(
        {"type": "config_history", "steps": [forged]}, start, community=c.community
    )
    assert reached == start and stopped


@pytest.mark.parametrize(
    "history",
    [
        None,
        [],
        {"type": "config_history", "steps": "x"},
        {"type": "other"},
        {"type": "config_history", "steps": [{"header": []}]},  # raised AttributeError (helper review)
        {"type": "config_history", "steps": [None, 3, {"header": {"height": "1"}}]},
    ],
)
def test_what_is_not_a_history_changes_nothing(changed, history):
    c, *_ = changed
    start = genesis_config(c.genesis)
    reached, stopped = follow_config(history, start, community=c.community)
    assert reached == start and stopped


def _agent(c, tmp_path, broker):
    return Agent(
        key=c.meters[0].key,
        genesis=c.genesis,
        bus=MemoryBus(broker, "agent"),
        reader=None,
        outbox=Outbox(tmp_path / "agent.sqlite"),
        strategy=StrategyConfig(),
        clock=lambda: T0 + 30,
        heartbeat_s=0,
    )


def test_the_agent_follows_a_retained_history_keeps_it_and_checks_receipts_with_it(changed, tmp_path, caplog):
    c, step1, step2, receipt = changed
    caplog.set_level(logging.INFO, logger="peerwatt.agent")
    broker = MemoryBroker()
    publisher = MemoryBus(broker, "validator-1")
    publisher.start()
    topic = Topics.config(c.community, c.validators[1].id)
    publisher.publish(topic, dumps_checked({"type": "config_history", "steps": [step1, step2]}), retain=True)
    agent = _agent(c, tmp_path, broker)
    agent.start()
    assert agent.status()["config_height"] == 2
    assert (len(agent.validators), agent.quorum, agent.params["retail_price"]) == (4, 3, 310_000)
    verify_receipt(receipt, community=c.community, validators=agent.validators, quorum=agent.quorum)
    assert "configuration at height 2: 4 validators, quorum 3, new market parameters" in caplog.text
    agent.stop()
    again = _agent(c, tmp_path, MemoryBroker())  # no history on this broker: the saved one holds
    assert again.config == agent.config and again.params["retail_price"] == 310_000
    again.outbox.close()


def test_a_hostile_validator_history_raises_an_alarm_and_an_honest_one_still_counts(changed, tmp_path):
    c, step1, step2, _ = changed
    broker = MemoryBroker()
    hostile, honest = MemoryBus(broker, "v0"), MemoryBus(broker, "v1")
    hostile.start()
    honest.start()
    forged = json.loads(dumps_checked(step1))
    forged["entries"][1]["value"] = 1
    hostile.publish(
        Topics.config(c.community, c.validators[0].id),
        dumps_checked({"type": "config_history", "steps": [forged]}),
        retain=True,
    )
    agent = _agent(c, tmp_path, broker)
    agent.start()
    assert agent.config == genesis_config(c.genesis)
    assert any("configuration history from validator" in a for a in agent.alarms)
    hostile.publish(Topics.config(c.community, c.validators[0].id), b"\xff" * 10, retain=True)
    honest.publish(
        Topics.config(c.community, c.validators[1].id),
        dumps_checked({"type": "config_history", "steps": [step1, step2]}),
        retain=True,
    )
    assert agent.config.height == 2 and agent.quorum == 3
    # an older history (a validator that lags) does not take the agent back
    hostile.publish(
        Topics.config(c.community, c.validators[0].id),
        dumps_checked({"type": "config_history", "steps": [step1]}),
        retain=True,
    )
    assert agent.config.height == 2
    agent.stop()


def test_a_damaged_saved_configuration_starts_from_the_genesis(changed, tmp_path, caplog):
    c, *_ = changed
    outbox = Outbox(tmp_path / "agent.sqlite")
    outbox.save("config", {"height": 5, "validators": {}, "quorum": 1, "params": {}})
    outbox.close()
    agent = _agent(c, tmp_path, MemoryBroker())
    assert agent.config == genesis_config(c.genesis)
    assert "saved chain configuration is unusable" in caplog.text
    agent.outbox.close()


def test_trusted_config_round_trips():
    config = TrustedConfig(height=3, validators={"a" * 32: "02" + "00" * 32}, quorum=1, params={"x": 1})
    assert TrustedConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError):
        TrustedConfig.from_json({"height": 3})


def test_a_step_is_built_only_from_the_state_its_header_commits_to(changed):
    c, step1, *_ = changed
    with pytest.raises(ValueError, match="not the state after block 1"):
        config_step(c.ledgers[0].state, step1["header"], step1["seals"])  # the state after block 3


class _Selling:
    """A meter that exports 2 kW and answers every poll."""

    def __init__(self) -> None:
        self.polls = 0

    def read(self):
        from meter_agent.modbus_reader import MeterSample

        self.polls += 1
        return MeterSample(
            time=0, power_w=-2000, import_wh=1000, export_wh=5000 + 6 * self.polls, voltage_v=(230.0,),
            current_a=(), phase_power_w=(), frequency_hz=50.0, serial=None, profile="sim", unit_id=1,
        )  # fmt: skip


def test_an_agent_on_a_running_network_follows_votes_that_replace_the_validators(tmp_path):
    """End to end on the node runtime: two of four validators are voted out and stop, so the
    genesis quorum (3) can no longer seal anything. The agent follows the history its validators
    publish, and its orders are confirmed by inclusion proofs sealed by the two that remain;
    with the genesis set alone (the old agent) every proof was an alarm and nothing was confirmed."""
    from tests.support.memory_net import T0 as NET_T0
    from tests.support.memory_net import Net, selling_agent, trade

    net = Net(tmp_path, app_factory=MarketApp, app="market", app_params={"interval_s": 900, "gate_s": 300})
    c = net.c
    agent = selling_agent(net, tmp_path, _Selling())
    v = c.validators
    for leaving, voters in ((3, (1, 2)), (2, (1, 2))):
        args = {"validator": v[leaving].id}
        body = {"action": "remove_validator", "args": args, "deadline": NET_T0 + 86_400}
        proposal = v[0].sign(c.community, "propose", body, NET_T0)
        net.publisher.publish(Topics.gov(c.community), proposal.to_bytes())
        for i in voters:
            vote = v[i].sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, NET_T0)
            net.publisher.publish(Topics.gov(c.community), vote.to_bytes())
        net.settle()
    assert sorted(net.nodes[0].ledger.validators()) == sorted([v[0].id, v[1].id])
    net.crash(3)
    net.crash(2)
    assert agent.quorum == 2 and sorted(agent.validators) == sorted([v[0].id, v[1].id])
    trade(net, agent, 120)
    assert agent.orders, "the agent placed no order"
    assert agent.outbox.awaiting_confirmation() == 0 and agent.outbox.depth() == 0
    assert not agent.alarms, agent.alarms
    agent.stop()


def test_an_agent_whose_saved_configuration_was_lost_walks_the_histories_again(changed, tmp_path):
    """Found in a QA run: after its saved configuration was damaged, an agent started over from
    the genesis, but its resumed broker session sent no retained history again: it stayed at
    height 0 with an alarm on every receipt until a validator restarted."""
    c, step1, step2, _ = changed
    broker = MemoryBroker()
    validator = MemoryBus(broker, "v1")
    validator.start()
    topic = Topics.config(c.community, c.validators[1].id)
    validator.publish(topic, dumps_checked({"type": "config_history", "steps": [step1, step2]}), retain=True)
    agent = _agent(c, tmp_path, broker)
    agent.start()
    assert agent.config.height == 2
    agent.stop()
    agent.outbox.close()
    outbox = Outbox(tmp_path / "agent.sqlite")
    outbox.save("config", {"height": "damaged"})
    outbox.close()
    again = _agent(c, tmp_path, broker)  # the same client id: the broker resumes its session
    again.start()
    assert again.config.height == 2 and again.quorum == 3
    again.stop()


def test_the_block_that_changed_the_validators_is_checked_with_the_set_that_sealed_it(tmp_path):
    """Found in a QA run: a fifth validator was voted in (quorum 3 of 4 -> 4 of 5), the history
    reached the agent before the proof of its message in that very block, and the agent checked
    that block's three seals against the new quorum of 4: an ALARM, and the message stayed
    unconfirmed. A block is sealed by the validators in force before it."""
    from chain.envelope import parse_envelope
    from peerwatt.node.ledger_api import block_inclusions

    c = make_community(validators=4, members=1, app="market", time=T0 - 86_400)
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    newcomer = Party(generate_private_key(), "validator-4")
    c.ledgers.append(Ledger.create(tmp_path / "ledgers" / "validator-4", c.genesis, MarketApp()))
    c.validators.append(newcomer)
    broker = MemoryBroker()
    agent = _agent(c, tmp_path, broker)
    agent.start()
    body = {"interval": T0 - 900, "import_wh": 1, "export_wh": 2, "serial": "SN000000", "profile": "p"}
    seq = agent._send("reading", Topics.readings(c.community, agent.meter_id), body, 86_400)
    ((_, _, payload),) = agent.outbox.messages([seq])
    reading = parse_envelope(payload, community=c.community, now=None, interval_s=None)
    add = _gov(c, c.validators[0], "add_validator", {"key": newcomer.sec1_hex, "name": "new"}, T0)
    votes = [_vote(c, c.validators[i], add, T0) for i in (1, 2)]
    block = c.run_block([add, *votes, reading], T0, [0, 1, 2])  # 3 seals: the quorum of 4
    assert c.ledgers[0].quorum() == 4
    validator = MemoryBus(broker, "v1")
    validator.start()
    validator.publish(
        Topics.config(c.community, c.validators[1].id),
        dumps_checked({"type": "config_history", "steps": [_step(c, block)]}),
        retain=True,
    )
    assert agent.config.height == 1 and agent.quorum == 4  # the history came first
    store = c.ledgers[0].store
    seals = [loads_strict(bytes(env)) for _, env in store.seal_rows(block.height)]
    ((_, included),) = block_inclusions(block, {agent.meter_id: {}}, store.header(block.height), seals)
    validator.publish(Topics.receipts(c.community, agent.meter_id), dumps_checked(included))
    assert not agent.alarms, agent.alarms
    assert agent.outbox.messages([seq]) == []  # confirmed
    agent.stop()


def test_repeated_seals_are_refused_or_checked_once(changed, monkeypatch):
    """Found in a QA run: a hostile validator published a history whose step carried 3 real
    seals 4,000 times; the agent verified every copy, 2 s of CPU per message on a PC (tens on a
    Raspberry Pi), again at every connect. Now a list longer than any block's is refused before
    any check, and one signer's seal of a round is verified once."""
    import meter_agent.receipts as receipts

    c, step1, _, receipt = changed
    start = genesis_config(c.genesis)
    verified: list[str] = []
    real = receipts.verify_envelope
    monkeypatch.setattr(
        receipts, "verify_envelope", lambda env, *a, **k: (verified.append(env.signer), real(env, *a, **k))[1]
    )
    flood = dict(step1, seals=step1["seals"] * 4000)
    reached, stopped = follow_config(
        {"type": "config_history", "steps": [flood]}, start, community=c.community
    )
    assert reached == start and "more than any block has" in stopped and verified == []
    twice = dict(step1, seals=step1["seals"] * 2)
    reached, stopped = follow_config(
        {"type": "config_history", "steps": [twice]}, start, community=c.community
    )
    assert stopped is None and reached.height == 1
    assert len(verified) == len(step1["seals"]) == 3


def test_a_removed_validators_broken_retained_history_is_no_alarm(changed, tmp_path):
    """Found in a QA run: garbage left retained on a removed validator's config topic stays on
    the broker for good (nobody can clear it), and raised an alarm at every session of every
    agent. Only the histories of validators in force raise alarms; any history still counts."""
    c, step1, step2, _ = changed
    broker = MemoryBroker()
    other = MemoryBus(broker, "gone")
    other.start()
    gone = "e" * 32  # no validator the agent knows
    other.publish(Topics.config(c.community, gone), b"\xff" * 100, retain=True)
    forged = json.loads(dumps_checked(step1))
    forged["entries"][1]["value"] = 1
    other.publish(
        Topics.config(c.community, "f" * 32),
        dumps_checked({"type": "config_history", "steps": [forged]}),
        retain=True,
    )
    agent = _agent(c, tmp_path, broker)
    agent.start()
    assert agent.alarms == [] and agent.config == genesis_config(c.genesis)
    # a history from a validator the agent does not know yet still takes it on
    other.publish(
        Topics.config(c.community, "d" * 32),
        dumps_checked({"type": "config_history", "steps": [step1, step2]}),
        retain=True,
    )
    assert agent.config.height == 2 and agent.alarms == []
    agent.stop()


@pytest.mark.parametrize("header", [[], "x", None, {"height": "2"}])
def test_a_receipt_or_proof_with_a_malformed_header_is_an_alarm(changed, tmp_path, header):
    """Hostile input on the receipts topic: a header that is no object went into the lookup of
    the configuration that sealed it (AttributeError in the bus thread) before any check."""
    c, _, _, receipt = changed
    broker = MemoryBroker()
    agent = _agent(c, tmp_path, broker)
    agent.start()
    node = MemoryBus(broker, "node")
    node.start()
    topic = Topics.receipts(c.community, agent.meter_id)
    for message in (
        dict(receipt, header=header, result={"kind": "trade"}),
        {
            "type": "included",
            "meter": agent.meter_id,
            "header": header,
            "seals": [],
            "txs": [],
            "tree_size": 1,
        },
    ):
        node.publish(topic, json.dumps(message).encode())
    assert len(agent.alarms) == 2, agent.alarms
    agent.stop()


def test_with_one_order_per_interval_the_agent_places_it(tmp_path):
    """Found in a QA pass: after a vote of max_orders_per_interval = 1 (which the ledger takes), no
    agent placed another order: the one order allowed was kept back for a cancellation."""
    from tests.support.memory_net import Net, selling_agent, trade

    params = {"interval_s": 900, "gate_s": 300, "max_orders_per_interval": 1}
    net = Net(tmp_path, app_factory=MarketApp, app="market", app_params=params)
    agent = selling_agent(net, tmp_path, _Selling())
    trade(net, agent, 60)
    assert agent.orders and all(o["count"] == 1 for o in agent.orders.values()), agent.orders
    assert net.nodes[0].status()["rejected"].get("too_many_orders", 0) == 0
    agent.stop()
