"""The agent as a light client of the ledger: what it believes of the messages validators send on
its receipts topic (any validator may write there), found in a QA pass of the agent as a light
client. Receipts come from a real market ledger through the node's own builders."""

from __future__ import annotations

import json

from chain.canonical import dumps_checked, loads_strict
from peerwatt.bus import MemoryBus, Topics
from tests.meter_agent.test_agent import run, setup  # noqa: F401 (fixture)
from tests.meter_agent.test_agent_receipts_status import NoMeter, _agent, _receipts, market  # noqa: F401 (fixture)
from tests.meter_agent.test_config_follow import T0, _gov, _step, _vote


def test_an_alarm_names_a_missing_field_in_words(market, tmp_path):  # noqa: F811 (fixture)
    """Found in a QA pass: an inclusion message without ``txs`` raised the alarm "an inclusion
    proof does not verify: 'txs'" (a KeyError's text)."""
    c = market
    agent, node, topic = _agent(c, tmp_path)
    node.publish(topic, json.dumps({"type": "included", "meter": agent.meter_id}).encode())
    (receipt,) = [r for r in _receipts(c, c.meters[0].id) if r["result"]["kind"] == "trade"][:1]
    node.publish(topic, json.dumps({k: v for k, v in receipt.items() if k != "seals"}).encode())
    assert agent.alarms == [
        "ALARM: an inclusion proof does not verify: the field 'txs' is missing",
        "ALARM: a receipt does not verify: malformed or forged receipt: the field 'seals' is missing",
    ]


def test_a_proof_without_results_makes_the_agent_forget_nothing(setup, tmp_path):  # noqa: F811 (fixture)
    """Found in a QA pass: an inclusion message carried results for the rejected transactions only,
    and the agent took a transaction without one for booked; so one validator (any may write to
    receipts topics) that dropped the result of a reading the ledger booked as reading_too_early
    made the agent forget it for good. Every transaction now comes with its proven result, and one
    without (that validator, or a node older than the agent) is kept, with one alarm."""
    from market.app import MarketApp
    from peerwatt.node.ledger_api import block_inclusions

    c, meter, sim, make_agent, seen = setup
    agent = make_agent()
    agent.start()
    run(agent, sim, 20)
    sent = {json.loads(p)["seq"]: p for t, p in seen if "/readings/" in t or "/orders/" in t}
    (ledger,) = c.open_ledgers(tmp_path / "ledgers", MarketApp)
    now = int(sim.clock.now())
    booked = [ledger.intake(sent[seq], now) for seq in sorted(sent)]
    (last,) = [env for env in booked if env.type == "reading"]
    block = c.run_block(booked, last.body["interval"] + c.genesis.doc["app"]["interval_s"] - 61)
    seals = [json.loads(bytes(env)) for _, env in ledger.store.seal_rows(block.height)]
    header = ledger.store.header(block.height)
    ((_, message),) = block_inclusions(block, c.genesis.doc["meters"], header, seals)
    assert len(booked) >= 2 and {tx["seq"]: tx["result"].get("reason") for tx in message["txs"]} == {
        env.seq: "reading_too_early" if env is last else None for env in booked
    }  # the orders booked ok, the reading not yet
    stripped = json.loads(json.dumps(message))
    for tx in stripped["txs"]:
        for field in ("result", "result_index", "result_proof"):
            del tx[field]
    del stripped["result_tree_size"]
    validator = MemoryBus(agent.bus.broker, "validator-x")
    validator.start()
    topic = Topics.receipts(c.community, meter.id)
    for _ in range(2):
        validator.publish(topic, json.dumps(stripped).encode())
    assert {s for s, _t, _p in agent.outbox.messages(sorted(sent))} == set(sent)  # nothing forgotten
    (alarm,) = agent.alarms  # said once
    assert f"in block {block.height} without their results" in alarm and "stay in the outbox" in alarm
    validator.publish(topic, json.dumps(message).encode())  # the proof with the results
    kept = {s for s, _t, _p in agent.outbox.messages(sorted(sent))}
    assert kept == {last.seq}  # until signed again
    run(agent, sim, 1)
    again = [p for t, p in seen if "/readings/" in t and json.loads(p)["seq"] not in sent]
    assert last.body in [json.loads(p)["body"] for p in again]


def _other_places(receipt: dict) -> list[tuple[int, int]]:
    """(index, tree_size) pairs other than the receipt's own at which its result's audit path
    also verifies against its header's result_root (RFC 6962 paths carry no tree size)."""
    from chain.block import result_leaves
    from chain.merkle import proof_from_hex, verify_inclusion

    leaf = result_leaves([receipt["result"]])[0]
    proof, root = proof_from_hex(receipt["proof"]), bytes.fromhex(receipt["header"]["result_root"])
    n = receipt["tree_size"]
    return [
        (j, m)
        for m in range(1, 2 * n + 2)
        for j in range(m)
        if (j, m) != (receipt["index"], n) and verify_inclusion(leaf, j, m, proof, root)
    ]


def test_a_genuine_receipt_re_sent_under_another_index_counts_once(tmp_path):
    """Found in a QA pass: the agent kept adjustments by (height, index), and a genuine adjustment
    receipt re-sent with another (index, tree_size) at which its audit path also verifies counted
    twice in the totals. Adjustments are now kept by their content; trades and settlements are
    kept by trade, their figures replaced, so a re-indexed copy of any receipt changes nothing,
    after a restart either."""
    from tests.support.market_ledger import (
        I1,
        SETTLED_AT,
        build_market,
        order,
        reading,
        reading_values,
    )

    c = build_market(tmp_path / "ledgers")
    _start_imp, _start_exp, end_imp, end_exp = reading_values(0)
    t = SETTLED_AT + 60
    later = SETTLED_AT + 900 * 8 - SETTLED_AT % 900
    others = [order(c, 3, "buy", 100 + k, 150_000, t, interval=later) for k in range(5)]
    c.run_block([*others, reading(c, 0, I1, end_imp, end_exp - 500, t)], t)  # a correction: adjustments
    receipts = _receipts(c, c.meters[0].id)
    copies = [dict(r, index=j, tree_size=m) for r in receipts for j, m in _other_places(r)]
    assert {r["result"]["kind"] for r in copies} >= {"adjustment"}  # the block's shape allows it
    agent, node, topic = _agent(c, tmp_path)
    for r in receipts:
        node.publish(topic, json.dumps(r).encode())
    honest = agent.totals()
    for r in copies:
        node.publish(topic, json.dumps(r).encode())
    assert agent.totals() == honest and not agent.alarms
    agent.stop()
    again, node, topic = _agent(c, tmp_path)
    for r in receipts + copies:
        node.publish(topic, json.dumps(r).encode())
    assert again.totals() == honest
    for ledger in c.ledgers:
        ledger.close()


def test_adjustments_kept_by_an_older_agent_count_once(tmp_path):
    """An older agent kept adjustments as height:index; the same receipt heard again after the
    update replaces that entry rather than adding a second one."""
    from tests.support.market_ledger import I1, SETTLED_AT, build_market, reading, reading_values

    c = build_market(tmp_path / "ledgers")
    _start_imp, _start_exp, end_imp, end_exp = reading_values(0)
    c.run_block([reading(c, 0, I1, end_imp, end_exp - 500, SETTLED_AT + 60)], SETTLED_AT + 60)
    receipts = _receipts(c, c.meters[0].id)
    agent, node, topic = _agent(c, tmp_path)
    for r in receipts:
        node.publish(topic, json.dumps(r).encode())
    honest = agent.totals()
    adjustments = [r for r in receipts if r["result"]["kind"] == "adjustment"]
    assert adjustments
    for r in adjustments:  # as an older agent kept them
        kept = agent.trades[r["result"]["trade"]]["adjustments"]
        (key,) = [k for k in kept if k.startswith(f"{r['header']['height']}:")]
        kept[f"{r['header']['height']}:{r['index']}"] = kept.pop(key)
    for r in adjustments:
        node.publish(topic, json.dumps(r).encode())
    assert agent.totals() == honest
    for ledger in c.ledgers:
        ledger.close()


def _grown_from_one_validator(tmp_path):
    """A market community whose genesis has one validator (quorum 1) and whose votes then add three
    (quorum 3 of 4): the community, and the configuration steps of heights 1 to 3."""
    from chain.engine import Ledger
    from chain.keys import generate_private_key
    from market.app import MarketApp
    from tests.support.localnet import Party, make_community

    c = make_community(validators=1, members=1, app="market", time=T0 - 86_400)
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    steps = []
    for k in (1, 2, 3):
        newcomer = Party(generate_private_key(), f"validator-{k}")
        c.ledgers.append(Ledger.create(tmp_path / "ledgers" / f"validator-{k}", c.genesis, MarketApp()))
        args = {"key": newcomer.sec1_hex, "name": newcomer.name}
        add = _gov(c, c.validators[0], "add_validator", args, T0 + k)
        votes = [_vote(c, v, add, T0 + k) for v in c.validators[1:]]
        ledger = c.ledgers[0]
        block = ledger.propose([add, *votes], T0 + k)
        ledger.commit(block, [ledger.seal(block, v.key, now=T0 + k) for v in c.validators])
        c.validators.append(newcomer)
        steps.append(_step(c, block))
    return c, steps


def _light_agent(c, tmp_path):
    """An agent of ``c``'s first meter that only listens, a validator's bus beside it, and a
    reading it signed (seq) that no block of the community holds."""
    from meter_agent.agent import Agent
    from meter_agent.outbox import Outbox
    from meter_agent.strategy import StrategyConfig
    from peerwatt.bus import MemoryBroker

    broker = MemoryBroker()
    agent = Agent(key=c.meters[0].key, genesis=c.genesis, bus=MemoryBus(broker, "agent"), reader=NoMeter(),
                  outbox=Outbox(tmp_path / "agent.sqlite"), strategy=StrategyConfig(),
                  clock=lambda: T0 + 30, heartbeat_s=0)  # fmt: skip
    agent.start()
    validator = MemoryBus(broker, "validator")
    validator.start()
    body = {"interval": T0 - 900, "import_wh": 1, "export_wh": 2, "serial": "SN000000", "profile": "p"}
    seq = agent._send("reading", Topics.readings(c.community, agent.meter_id), body, 86_400)
    return agent, validator, seq


def _forked_inclusion(c, tmp_path, agent, seq):
    """The genesis's lone validator forks from the genesis: a block at height 1 holding the agent's
    reading ``seq``, sealed by that validator alone; its inclusion message, and the fork's ledger."""
    from chain.engine import Ledger
    from chain.envelope import parse_envelope
    from market.app import MarketApp
    from peerwatt.node.ledger_api import block_inclusions

    ((_, _, payload),) = agent.outbox.messages([seq])
    fork = Ledger.create(tmp_path / "fork", c.genesis, MarketApp())
    fake = fork.propose([parse_envelope(payload, community=c.community, now=None, interval_s=None)], T0 + 1)
    fork.commit(fake, [fork.seal(fake, c.validators[0].key, now=T0 + 1)])
    seals = [loads_strict(bytes(env)) for _, env in fork.store.seal_rows(fake.height)]
    ((_, included),) = block_inclusions(fake, {agent.meter_id: {}}, fork.store.header(fake.height), seals)
    return dumps_checked(included), fork


def _history(steps) -> bytes:
    return dumps_checked({"type": "config_history", "steps": steps})


def test_a_block_sealed_again_at_an_old_height_by_an_earlier_set_is_refused(tmp_path):
    """Found in a QA pass: with a genesis of one validator and votes that added three, that first
    validator alone forked from the genesis and sealed another block at height 1 (the set in force
    there had a quorum of 1): an up-to-date agent forgot a reading on its proof, and counted a
    trade that never was. The agent now remembers the header it accepted at each height (here from
    the configuration steps it followed) and refuses another one sealed there, with an alarm."""
    from chain.block import header_hash, result_leaves
    from chain.merkle import merkle_root

    c, steps = _grown_from_one_validator(tmp_path)
    agent, validator, seq = _light_agent(c, tmp_path)
    validator.publish(Topics.config(c.community, c.validators[1].id), _history(steps), retain=True)
    assert agent.quorum == 3 and len(agent.validators) == 4 and not agent.alarms
    included, fork = _forked_inclusion(c, tmp_path, agent, seq)
    topic = Topics.receipts(c.community, agent.meter_id)
    validator.publish(topic, included)
    assert agent.outbox.messages([seq]) != []  # kept
    (alarm,) = agent.alarms
    assert "ALARM: an inclusion proof does not verify: block 1 is sealed with header" in alarm
    assert "accepted header" in alarm and "a fork" in alarm
    # and a trade receipt of a block of its own at height 1
    trade = {"kind": "trade", "interval": T0, "seller": agent.meter_id, "buyer": "b" * 32, "energy_wh": 5_000,
             "value": 9_999_999, "grid_fee": 0, "levies": 0, "price": 1, "sell_order": "a" * 64,
             "buy_order": "c" * 64, "trade": "a" * 24 + ":" + "c" * 24}  # fmt: skip
    header = dict(c.ledgers[0].store.header(1), result_root=merkle_root(result_leaves([trade])).hex())
    seal = c.ledgers[0].sign_vote(c.validators[0].key, "seal", 1, 0, header_hash(header).hex(), now=T0 + 1)
    receipt = {"header": header, "index": 0, "tree_size": 1, "result": trade, "proof": [],
               "seals": [loads_strict(seal.to_bytes())]}  # fmt: skip
    validator.publish(topic, dumps_checked(receipt))
    assert agent.totals()["earnings"] == 0 and agent.trades == {}
    assert "a receipt does not verify: block 1 is sealed with header" in agent.alarms[-1]
    for ledger in [*c.ledgers, fork]:
        ledger.close()


def test_a_configuration_step_at_a_height_accepted_with_another_header_stops_the_walk(tmp_path):
    """Of two headers sealed at one height the first one heard is believed: a configuration step
    that conflicts with a header accepted before is not followed, and the history's alarm says
    why (the fork)."""
    c, steps = _grown_from_one_validator(tmp_path)
    agent, validator, seq = _light_agent(c, tmp_path)
    included, fork = _forked_inclusion(c, tmp_path, agent, seq)
    validator.publish(Topics.receipts(c.community, agent.meter_id), included)
    assert not agent.alarms  # the genesis's validator alone sealed it: the agent cannot tell yet
    validator.publish(Topics.config(c.community, c.validators[0].id), _history(steps), retain=True)
    assert agent.config.height == 0
    (alarm,) = agent.alarms
    assert "history from validator" in alarm and "stops at height 0" in alarm and "a fork" in alarm
    for ledger in [*c.ledgers, fork]:
        ledger.close()


def test_the_headers_accepted_are_bounded_and_kept_across_a_restart(market, tmp_path, monkeypatch):  # noqa: F811
    """The header accepted at each height is kept in the state file (the newest MAX_HEADERS_KEPT
    heights): after a restart a header sealed by a quorum at a height accepted before, but not the
    one accepted, is still refused."""
    import meter_agent.agent as agent_module
    from chain.block import header_hash

    c = market
    monkeypatch.setattr(agent_module, "MAX_HEADERS_KEPT", 1)
    agent, node, topic = _agent(c, tmp_path)
    receipts = _receipts(c, c.meters[0].id)
    heights = sorted({r["header"]["height"] for r in receipts})
    assert len(heights) >= 2
    for r in receipts:
        node.publish(topic, json.dumps(r).encode())
    honest = agent.totals()
    newest = {h: header_hash(r["header"]).hex() for r in receipts for h in [r["header"]["height"]]}
    expected = {heights[-1]: newest[heights[-1]]}
    assert agent._headers == expected
    agent.stop()
    again, node, topic = _agent(c, tmp_path)
    assert again._headers == expected
    (last,) = [r for r in receipts if r["header"]["height"] == heights[-1]][-1:]
    # the same block's height, another header, sealed by every validator (a quorum) in one round
    forged_header = dict(last["header"], time=last["header"]["time"] + 1)
    block_hash = header_hash(forged_header).hex()
    seals = [
        json.loads(c.ledgers[0].sign_vote(v.key, "seal", heights[-1], 0, block_hash, now=0).to_bytes())
        for v in c.validators
    ]
    again_receipt = dict(last, header=forged_header, seals=seals)
    node.publish(topic, json.dumps(again_receipt).encode())
    assert "but this agent accepted header" in again.alarms[-1]
    for r in receipts:  # the genuine ones still verify
        node.publish(topic, json.dumps(r).encode())
    assert again.totals() == honest and len(again.alarms) == 1


def test_an_old_receipt_replayed_after_a_revocation_does_not_undo_it(market, tmp_path):  # noqa: F811
    """Found in a QA pass: after 3 of 3 validators' notices said ``revoked`` (enrolled false), the
    same old order outcome's receipt sent again set enrolled back to true. What the ledger says of
    the enrolment is now ordered by block height: a block no newer than the news the agent has (a
    refusal heard in notices counts as newer than every block it accepted) undoes nothing, after a
    restart either; a newer block's does. A settlement (of a trade cleared before, and made after
    a revocation too) says nothing of it."""
    from chain.notice import sign_notice
    from tests.meter_agent.test_agent_receipts_status import _kept_seq

    c = market
    agent, node, topic = _agent(c, tmp_path)
    meter = c.meters[0].id

    def refused(k: int, reason: str) -> None:
        seq = _kept_seq(agent, c, k)
        for v in c.validators:  # as many as two quorums share
            notice = sign_notice(v.key, community=c.community, meter=meter, seqs=[seq], created=0, seq=1,
                                 refused=reason)  # fmt: skip
            node.publish(topic, notice)

    receipts = _receipts(c, meter)
    (outcome,) = [r for r in receipts if r["result"]["kind"] == "order_outcome"]
    later = [r for r in receipts if r["header"]["height"] > outcome["header"]["height"]]
    assert later and {r["result"]["kind"] for r in later} == {"settlement"}
    refused(1, "not_enrolled")  # before the votes passed
    assert agent.status()["enrolled"] is False
    node.publish(topic, json.dumps(outcome).encode())  # then its order was cleared
    assert agent.status()["enrolled"] is True
    refused(2, "revoked")
    assert agent.status()["enrolled"] is False
    for r in [outcome, *receipts]:  # the old receipts once more, and settlements of later blocks
        node.publish(topic, json.dumps(r).encode())
    assert agent.status()["enrolled"] is False
    agent.stop()
    again, node, topic = _agent(c, tmp_path)
    node.publish(topic, json.dumps(outcome).encode())
    assert again.status()["enrolled"] is False
