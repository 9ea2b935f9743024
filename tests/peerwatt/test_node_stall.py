"""A node whose chain cannot finalise says so: a WARNING naming the missing validators (once per
stall, then every minute), `stalled` in its status, and `peerwatt_node_stalled` in its metrics."""

from __future__ import annotations

import logging

from peerwatt.bus import Topics
from peerwatt.metrics import exposition, registry_for
from tests.support.memory_net import Net


def test_a_stalled_chain_names_the_missing_validators(tmp_path, caplog):
    net = Net(tmp_path)  # 4 validators, quorum 3
    ids = [v.id for v in net.c.validators]
    net.crash(2)
    net.crash(3)
    for node in net.nodes:
        if node is not None:
            node.stall_after_s = 0.3
    net.send(1)
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        net.settle()  # the block and the two seals there are
        assert net.nodes[0].status()["stalled"] is None  # not yet stall_after_s
        net.now += 0.4
        net.settle()
        net.settle()
    sequencer = net.nodes[0]
    status = sequencer.status()
    stalled = status["stalled"]
    assert stalled is not None, status
    assert stalled["height"] == sequencer.ledger.height + 1
    assert stalled["missing"] == sorted(ids[2:]) and stalled["votes"] == 2 and stalled["quorum"] == 3
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "STALLED" in r.getMessage()
    ]
    # once per node for this stall (the proposer and validator 1), not on every step
    assert len(warnings) == 2, warnings
    voting = "2 validator(s) voting, the quorum is 3 of 4"
    assert all(ids[2] in w and ids[3] in w and voting in w for w in warnings)
    # by the names the operators gave them too (a QA walk-through: key ids alone named no machine)
    assert all(f"validator-2 ({ids[2]})" in w and f"validator-3 ({ids[3]})" in w for w in warnings), warnings
    text = exposition(registry_for("node", sequencer.status)).decode()
    assert "peerwatt_node_stalled 1.0" in text
    assert f'peerwatt_node_stall_missing_validator{{validator="{ids[2]}"}} 1.0' in text
    net.start(2)
    net.nodes[2].stall_after_s = 0.0
    net.settle()
    assert sequencer.status()["stalled"] is None
    assert "peerwatt_node_stalled 0.0" in exposition(registry_for("node", sequencer.status)).decode()


def test_a_healthy_chain_is_not_stalled(tmp_path):
    net = Net(tmp_path)
    net.send(1)
    net.settle()
    assert all(n.status()["stalled"] is None for n in net.nodes)


def test_a_node_cut_off_from_the_broker_says_so_instead_of_blaming_the_others(tmp_path, caplog):
    """Found in a QA pass: during a broker outage every node warned that the three others were
    silent ('start them'), while its own broker_connected was false."""
    net = Net(tmp_path)
    cut = net.nodes[1]
    cut.stall_after_s = 0.3
    cut.bus.crash()  # its connection drops (the broker went away) ...
    for env in net.send(1):  # ... just after these reached it: work is due
        cut._on_tx(Topics.readings(net.c.community, env.signer), env.to_bytes())
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        net.advance(20)
    stalled = cut.status()["stalled"]
    assert stalled is not None, cut.status()
    assert stalled["cause"].startswith("this node is not connected to the MQTT broker")
    warnings = [r.getMessage() for r in caplog.records if "STALLED" in r.getMessage()]
    assert warnings and all("STALLED here" in w and "silent" not in w for w in warnings), warnings
    assert all(n.status()["stalled"] is None for n in net.nodes if n is not cut)


def test_a_stall_with_every_validator_voting_does_not_ask_to_start_them():
    """Found in a soak: 'silent validator(s): none (start them, or check their broker connection...)'
    while all four voted and the machine was merely slow."""
    from peerwatt.node.runtime import stall_line

    line = stall_line(912, 0, 30.4, 4, 3, 4, [])
    assert "all 4 validators are voting" in line and "start them" not in line and "none" not in line
    line = stall_line(10, 1, 31, 2, 3, 4, ["aa", "bb"])
    assert "2 validator(s) voting, the quorum is 3 of 4; silent validator(s): aa, bb (start them" in line


def test_a_node_without_the_block_a_quorum_sealed_says_so_instead_of_blaming_the_others(tmp_path, caplog):
    """A QA pass: every node lost power when one had block 1 final; restarted without `peers`, a
    validator that held a quorum's seals for that block but not the block itself stayed behind
    and its stall line named the healthy validators as silent."""
    net = Net(tmp_path)
    net.send(1)
    while not any(n.ledger.height == 1 for n in net.nodes):
        for node in net.nodes:
            node.step()
            if node.ledger.height == 1:
                break
    for i in range(4):
        net.crash(i)
    for i in range(4):
        net.start(i)
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        net.advance(60, step_s=5)
    behind = [n for n in net.nodes if n.ledger.height == 0]
    assert behind, "every node finished the height: the scenario no longer reproduces"
    for node in behind:
        assert "configure `peers`" in node.status()["stalled"]["cause"]
    lines = [r.getMessage() for r in caplog.records if "STALLED" in r.getMessage()]
    assert lines and all("does not have that block" in line for line in lines), lines
