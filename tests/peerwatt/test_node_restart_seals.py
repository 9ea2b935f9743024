"""The consensus wiring of the node (in-process nodes on the in-memory bus): a validator restarted
in the middle of a height keeps its own seal; every validator names the signer it refuses; a
transaction the proposer refused does not stay pending on a validator that took it."""

from __future__ import annotations

import logging

from chain.kvapp import KeyValueApp
from chain.verify import verify_store
from peerwatt.bus import Topics
from tests.support.memory_net import T0, Net


def test_validator_restarted_after_its_precommit_commits_with_its_own_seal(tmp_path):
    net = Net(tmp_path)  # 4 validators, quorum 3
    net.send(2)
    net.nodes[0].step()  # node 0 proposes and prevotes
    net.nodes[1].step()  # prevotes
    net.nodes[3].step()  # prevotes, sees the polka and precommits (its seal)
    assert "precommit:0" in net.nodes[3]._core.sent
    net.crash(3)  # before any other precommit reached it
    for _ in range(3):
        for node in net.nodes[1:3]:
            node.step()  # validators 1 and 2 precommit: with node 3's seal, a quorum
    assert net.nodes[1].ledger.height == 1
    # back, with no peer to catch up from: the seals of 1 and 2 wait for it at the broker, and
    # with its own (in its consensus record) they make the block final there too
    node = net.start(3)
    node.step()
    assert node.status()["quarantined"] == 0
    assert node.ledger.height == 1
    assert node.ledger.head_hash == net.nodes[1].ledger.head_hash
    assert verify_store(node.ledger.store, KeyValueApp()).blocks == 1


def test_a_refused_message_is_logged_with_its_signer_on_every_validator(tmp_path, caplog):
    net = Net(tmp_path)
    env = net.send(1)[0]
    net.settle()
    caplog.set_level(logging.INFO, logger="peerwatt.node")
    net.publisher.publish(Topics.readings(net.c.community, env.signer), env.to_bytes())  # a replay
    net.settle()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected replay")]
    # every validator refuses it, the three that do not propose included: its signature verifies,
    # so none may call the signer "an unauthenticated sender" (docs/operations.md: a forgery)
    assert len(refusals) == 4, refusals
    assert all(f"from {env.signer}:" in message for message in refusals), refusals


def test_a_transaction_only_one_validator_took_in_time_does_not_stay_pending_there(tmp_path):
    net = Net(tmp_path)
    net.clock.pause()
    meter = net.c.meters[0]
    now = int(net.clock.now())
    body = {"interval": T0, "import_wh": 1, "export_wh": 0, "serial": "S", "profile": "p"}
    late = meter.sign(net.c.community, "reading", body, created=now - 10, ttl_s=12)  # expires in 2 s
    net.publisher.publish(Topics.readings(net.c.community, meter.id), late.to_bytes())
    validator = net.nodes[1]
    validator.step()  # takes it in time
    net.clock.advance(5)  # the others only see it expired: the proposer never puts it in a block
    net.settle()
    for first in (100, 200):  # blocks go on
        net.send(1, first=first)
        net.settle()
        net.advance(1)
    assert {n.ledger.height for n in net.nodes} == {2}
    # checked again after a block it could have been in, it is refused there too; kept, it made
    # work due on that validator alone: nil prevotes and a false STALLED while the chain is idle
    assert validator.status()["pending"] == 0
    assert validator.status()["rejected"].get("expired") == 1
    net.advance(validator.stall_after_s + 1)
    assert validator.status()["stalled"] is None
