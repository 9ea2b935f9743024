"""The stall warning says when this node drops a flooding sender's consensus messages, and names
it (found in a QA pass on a real broker: during one validator's flood every node warned '1
validator(s) voting ... silent validator(s): validator-1, validator-2, validator-3 ... start them',
the cause being its own backlog)."""

from __future__ import annotations

import logging
import os

from peerwatt.node.inbox import VOTE_SHARE
from tests.peerwatt.test_node_consensus_flood import HOSTILE, _live, _seals_topic, net

__all__ = ["net"]  # the fixture


def test_a_stall_during_a_flood_names_the_flooding_validator(net, caplog):
    """(QA: while one validator flooded, the stall warning said '1 validator(s) voting ... silent
    validator(s): validator-1, validator-2, validator-3 ... start them', the cause being the node's
    own backlog.)"""
    net.crash(2)  # 0 and 1 are no quorum: the chain stalls
    for node in _live(net):
        node.stall_after_s = 0.3
    net.send(1)
    net.settle()
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        for k in range(VOTE_SHARE[0] + 10):
            net.publisher.publish(
                _seals_topic(net), b'{"type":"seal","n":%d,"r":"%s"}' % (k, os.urandom(4).hex().encode())
            )
        net.now += 0.4
        net.settle()
    hostile = f"validator-3 ({net.c.validators[HOSTILE].id})"
    for node in _live(net):
        cause = node.status()["stalled"]["cause"]
        assert cause is not None and f"flooded by the votes of validator {hostile} (10 dropped)" in cause, (
            cause
        )
    stalls = [r.getMessage() for r in caplog.records if "STALLED" in r.getMessage()]
    assert len(stalls) == 2, stalls
    assert all("STALLED here" in line and hostile in line and "start them" not in line for line in stalls)
    assert all("validator-2" in line for line in stalls)  # the one not heard from is still named
