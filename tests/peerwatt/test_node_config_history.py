"""Every validator publishes the chain's configuration history, retained, on config/<its key id>
(docs/ledger.md "Light clients follow the configuration"): a light client that knows only the
genesis follows it, step by step, to the validators, quorum and parameters votes gave later.

The seal check here is the test's own (chain.block.most_seals_in_one_round over seals verified
with the keys the client trusts), not the node's."""

from __future__ import annotations

import sqlite3
from typing import Any

from chain.block import header_hash, most_seals_in_one_round
from chain.canonical import dumps_checked, loads_strict
from chain.config_proof import ConfigProofError, TrustedConfig, config_step, follow
from chain.envelope import parse_envelope, verify_envelope
from chain.keys import generate_private_key, load_public_key
from peerwatt.bus import MemoryBus, Topics
from peerwatt.node.announce import CONFIG_KEY
from tests.support.localnet import Party
from tests.support.memory_net import T0, Net


def genesis_trusted(net: Net) -> TrustedConfig:
    doc = net.c.genesis.doc
    return TrustedConfig(
        height=0,
        validators={kid: v["key"] for kid, v in doc["validators"].items()},
        quorum=doc["chain"]["quorum"],
        params=dict(net.c.genesis.app_params),
    )


def seal_check(community: str):
    def check(step: dict[str, Any], validators: dict[str, str], quorum: int) -> dict[str, Any]:
        header = step["header"]
        block_hash = header_hash(header).hex()
        valid = []
        for obj in step["seals"]:
            seal = parse_envelope(dumps_checked(obj), community=community, now=None, interval_s=None)
            key = validators.get(seal.signer)
            if key is None or seal.type != "seal" or seal.body["header"] != block_hash:
                continue
            verify_envelope(seal, load_public_key(key), key_id_hex=seal.signer)
            valid.append(seal)
        if most_seals_in_one_round(valid, validators) < quorum:
            raise ConfigProofError(f"block {header['height']}: fewer than {quorum} seals")
        return header

    return check


def listen(net: Net, name: str) -> dict[str, list[bytes]]:
    """What a client subscribed to config/+ receives, by topic (retained messages at once)."""
    got: dict[str, list[bytes]] = {}
    bus = MemoryBus(net.broker, name)
    bus.subscribe(Topics.pattern(net.c.community, "config"), lambda t, p: got.setdefault(t, []).append(p))
    bus.start()
    return got


def vote_in(net: Net, proposer: Party, voters: list[Party], action: str, args: dict[str, Any]) -> int:
    """Propose and vote on the gov topic; the height of the block that passed it."""
    c = net.c.community
    proposal = proposer.sign(c, "propose", {"action": action, "args": args, "deadline": T0 + 86_400}, T0)
    net.publisher.publish(Topics.gov(c), proposal.to_bytes())
    for voter in voters:
        vote = voter.sign(c, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, T0)
        net.publisher.publish(Topics.gov(c), vote.to_bytes())
    net.settle()
    node = net.nodes[0]
    assert node.ledger.chain_state["proposals"].get(proposal.tx_hash.hex()) is None  # closed
    for height in range(node.ledger.height, 0, -1):
        if any(r.get("outcome") == "passed" for r in node.ledger.store.results(height)):
            return height
    raise AssertionError(f"{action} did not pass")


def add_validator(net: Net) -> tuple[int, Party]:
    newcomer = Party(generate_private_key())
    v = net.c.validators
    height = vote_in(net, v[0], [v[1], v[2]], "add_validator", {"key": newcomer.sec1_hex, "name": "new"})
    return height, newcomer


def set_param(net: Net, value: int) -> int:
    m = net.c.members
    return vote_in(net, m[0], [m[1]], "set_param", {"name": "max_writes_per_meter", "value": value})


def config_topic(net: Net, i: int) -> str:
    return Topics.config(net.c.community, net.c.validators[i].id)


def test_after_add_validator_and_set_param_every_validator_publishes_a_history_a_client_follows(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3; the newcomer never runs
    community = net.c.community
    got = listen(net, "household")
    added_at, newcomer = add_validator(net)
    assert len(net.nodes[0].ledger.validators()) == 5 and net.nodes[0].ledger.quorum() == 4
    param_at = set_param(net, 7)  # sealed by the 4 running validators of the 5: quorum 4
    assert param_at > added_at

    late = listen(net, "newcomer-household")  # retained: a client that subscribes later
    assert sorted(late) == sorted(config_topic(net, i) for i in range(4))  # one per validator
    start = genesis_trusted(net)
    for i in range(4):
        topic = config_topic(net, i)
        assert len(got[topic]) == 2  # published at each change
        assert late[topic] == [got[topic][-1]]  # the whole history, retained
        history = loads_strict(late[topic][0])
        assert history["type"] == "config_history"
        assert [s["header"]["height"] for s in history["steps"]] == [added_at, param_at]
        reached, why = follow(history, start, seal_check(community))
        assert why is None
        assert reached.height == param_at
        assert reached.validators == {**start.validators, newcomer.id: newcomer.sec1_hex}
        assert reached.quorum == 4
        assert reached.params == {**start.params, "max_writes_per_meter": 7}
        # the first message alone took a client to the new validator set
        first, why = follow(loads_strict(got[topic][0]), start, seal_check(community))
        assert why is None and first.height == added_at and newcomer.id in first.validators
        assert first.params == start.params
    # a step whose entry is not the one under its sealed state_root ends the walk before it
    steps = loads_strict(late[config_topic(net, 1)][0])["steps"]
    forged = dict(steps[1])
    forged["entries"] = [dict(e, value=5) if e["key"] == "quorum" else e for e in forged["entries"]]
    forged_history = {"type": "config_history", "steps": [steps[0], forged]}
    reached, why = follow(forged_history, start, seal_check(community))
    assert reached.height == added_at and why is not None and "proof" in why


def test_a_block_without_a_config_change_publishes_nothing_on_config(tmp_path, monkeypatch):
    from peerwatt.node import announce

    built: list[int] = []  # config_step hashes the whole state: only on a change

    def counted(state, header, seals):
        built.append(header["height"])
        return config_step(state, header, seals)

    monkeypatch.setattr(announce, "config_step", counted)
    net = Net(tmp_path)
    got = listen(net, "household")
    net.send(2)
    net.settle()
    assert net.nodes[0].ledger.height >= 1
    assert got == {} and built == []
    assert all(n.ledger.store.get_local(CONFIG_KEY) is None for n in net.nodes)
    param_at = set_param(net, 3)
    assert built == [param_at] * 4  # once on each validator
    assert {t: len(p) for t, p in got.items()} == {config_topic(net, i): 1 for i in range(4)}
    height = net.nodes[0].ledger.height
    net.send(2, first=10)
    net.settle()
    assert net.nodes[0].ledger.height > height
    assert {t: len(p) for t, p in got.items()} == {config_topic(net, i): 1 for i in range(4)}
    assert built == [param_at] * 4


def test_a_restarted_validator_republishes_the_same_history(tmp_path):
    net = Net(tmp_path)
    add_validator(net)
    set_param(net, 5)
    before = {t: list(p) for t, p in listen(net, "first").items()}
    topic = config_topic(net, 2)
    net.crash(2)
    net.publisher.publish(topic, b"", retain=True)  # a broker that lost its retained messages
    assert listen(net, "empty") == {t: p for t, p in before.items() if t != topic}
    net.start(2)
    net.settle()
    after = listen(net, "second")
    assert after[topic] == before[topic]
    history = loads_strict(after[topic][0])
    assert len(history["steps"]) == 2
    reached, why = follow(history, genesis_trusted(net), seal_check(net.c.community))
    assert why is None and reached.params["max_writes_per_meter"] == 5

    # and after the bus reconnects (a broker restarted without its retained messages)
    node = net.nodes[2]
    node.bus.crash()
    net.publisher.publish(topic, b"", retain=True)
    net.settle()
    node.bus.start()
    net.settle()
    assert listen(net, "third")[topic] == before[topic]


def test_a_change_the_node_stopped_before_recording_is_recorded_at_restart(tmp_path):
    """A node that stopped between a block and its history (or ran without this code at the
    change) records the change at the head block when that verifies, so clients still follow."""
    net = Net(tmp_path)
    added_at, _ = add_validator(net)
    saved_before = net.nodes[3].ledger.store.get_local(CONFIG_KEY)
    param_at = set_param(net, 9)
    assert net.nodes[3].ledger.height == param_at  # the change is the head block
    net.crash(3)
    with sqlite3.connect(tmp_path / "n3" / "ledger.sqlite") as conn:  # as if stopped before saving
        conn.execute("UPDATE local_kv SET value = ? WHERE key = ?", (saved_before, CONFIG_KEY))
    net.crash(1)
    with sqlite3.connect(tmp_path / "n1" / "ledger.sqlite") as conn:  # as if upgraded after the votes
        conn.execute("DELETE FROM local_kv WHERE key = ?", (CONFIG_KEY,))
    for i in (1, 3):
        net.publisher.publish(config_topic(net, i), b"", retain=True)
        net.start(i)
    net.settle()
    got = listen(net, "household")
    start = genesis_trusted(net)
    for i, heights in ((3, [added_at, param_at]), (1, [param_at])):
        history = loads_strict(got[config_topic(net, i)][0])
        assert [s["header"]["height"] for s in history["steps"]] == heights
        reached, why = follow(history, start, seal_check(net.c.community))
        assert why is None and reached.height == param_at
        assert reached.params["max_writes_per_meter"] == 9 and reached.quorum == 4


def test_a_validator_that_catches_up_from_a_peer_records_the_changes_it_fetched(tmp_path):
    from peerwatt.node.http_api import NodeHttpApi

    net = Net(tmp_path)  # quorum 3 of 4: three validators go on without node 3
    net.crash(3)
    param_at = set_param(net, 4)
    added_at, newcomer = add_validator(net)  # from here on the quorum is 4 of 5
    api = NodeHttpApi(tmp_path / "n0", net.nodes[0].status, "127.0.0.1", 0)
    api.start()
    try:
        back = net.start(3, peers=(api.address,))
        back.catch_up_at_start()
        assert back.ledger.height == added_at  # every block from the peer, none by consensus
        net.settle()
    finally:
        api.stop()
    history = loads_strict(listen(net, "household")[config_topic(net, 3)][0])
    assert [s["header"]["height"] for s in history["steps"]] == [param_at, added_at]
    reached, why = follow(history, genesis_trusted(net), seal_check(net.c.community))
    assert why is None and reached.height == added_at and newcomer.id in reached.validators
    assert reached.params["max_writes_per_meter"] == 4


def test_a_validator_voted_out_says_so_once(tmp_path, caplog):
    """Found in a QA run: the two validators voted out kept running with no word that they no
    longer vote, while a node that starts as a non-validator says so."""
    import logging

    net = Net(tmp_path)  # 4 validators, quorum 3
    v = net.c.validators
    with caplog.at_level(logging.INFO, logger="peerwatt.node"):
        vote_in(net, v[0], [v[1], v[2]], "remove_validator", {"validator": v[3].id})
        net.send(1)
        net.settle()
    said = [
        r.getMessage()
        for r in caplog.records
        if "no longer one of the community's validators" in r.getMessage()
    ]
    assert len(said) == 1 and v[3].id in said[0] and "stop this node" in said[0], said
